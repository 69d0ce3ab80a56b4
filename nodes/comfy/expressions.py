"""A safe evaluator of arithmetic expressions typed by users (ComfyMathExpression): the text is
parsed with Python's `ast` and only a whitelist of node kinds, operators and functions is walked.
Nothing is ever passed to eval; names resolve only to the given variables.

Accepted: numbers and True/False/None, the variables, + - * / // % ** (exponent at most 4000), the
bitwise operators on integers (shifts at most 10000 places), comparisons (chained too), and/or/not,
`x if c else y`, indexing a list variable (`values[0]`), and the functions of FUNCTIONS.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Any

MAX_EXPONENT = 4000  # as ComfyUI's: 10 ** 4000 is big enough, 10 ** 10 ** 9 would hang the server
MAX_SHIFT = 10_000
MAX_LENGTH = 10_000  # characters of an expression
MAX_BITS = 100_000  # integers beyond this many bits (about 30000 digits) are refused, not computed


class ExpressionError(ValueError):
    """An expression that is not allowed or cannot be computed."""


def _power(base, exp):
    if isinstance(exp, (int, float)) and abs(exp) > MAX_EXPONENT:
        raise ExpressionError(f"the exponent {exp} is larger than {MAX_EXPONENT}")
    if isinstance(base, int) and isinstance(exp, int) and base.bit_length() * abs(exp) > MAX_BITS:
        raise ExpressionError("the power is too large a number")
    return operator.pow(base, exp)


def _shift(op):
    def shifted(a, b):
        if isinstance(b, int) and abs(b) > MAX_SHIFT:
            raise ExpressionError(f"a shift by {b} places is larger than {MAX_SHIFT}")
        return op(a, b)
    return shifted


def _sum(*args):
    """sum(values) and sum(a, b, c) both work."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return sum(args[0])
    return sum(args)


FUNCTIONS = {
    "sum": _sum, "min": min, "max": max, "abs": abs, "round": round, "pow": _power, "sqrt": math.sqrt,
    "ceil": math.ceil, "floor": math.floor, "log": math.log, "log2": math.log2, "log10": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "int": int, "float": float,
}
BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
    ast.LShift: _shift(operator.lshift), ast.RShift: _shift(operator.rshift),
}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_, ast.Invert: operator.invert}
COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
CONSTANTS = {"True": True, "False": False, "None": None}


def evaluate(expression: str, names: dict[str, Any]) -> Any:
    """The value of `expression` with `names` as its variables; ExpressionError if not allowed."""
    if len(expression) > MAX_LENGTH:
        raise ExpressionError(f"the expression is {len(expression)} characters long, the limit is {MAX_LENGTH}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression: {exc.msg}") from None
    try:
        return _Walker(names).visit(tree.body)
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply") from None


class _Walker:
    def __init__(self, names: dict[str, Any]):
        self.names = names

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")
        return method(node)

    def visit_Constant(self, node):
        if node.value is None or isinstance(node.value, (bool, int, float)):
            return node.value
        raise ExpressionError(f"only numbers are allowed, not {node.value!r}")

    def visit_Name(self, node):
        if node.id in self.names:
            return self.names[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        known = ", ".join(sorted(self.names)) or "none"
        raise ExpressionError(f"'{node.id}' is not defined (connected inputs: {known})")

    def visit_BinOp(self, node):
        op = BINARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"the operator {type(node.op).__name__} is not allowed")
        value = op(self.visit(node.left), self.visit(node.right))
        if isinstance(value, int) and value.bit_length() > MAX_BITS:
            raise ExpressionError("the result is too large a number")
        return value

    def visit_UnaryOp(self, node):
        return UNARY[type(node.op)](self.visit(node.operand))

    def visit_BoolOp(self, node):
        value = None
        for operand in node.values:  # short-circuits like Python
            value = self.visit(operand)
            if isinstance(node.op, ast.And) != bool(value):
                return value
        return value

    def visit_Compare(self, node):
        left = self.visit(node.left)
        for op, comparator in zip(node.ops, node.comparators):
            fn = COMPARE.get(type(op))
            if fn is None:
                raise ExpressionError(f"the comparison {type(op).__name__} is not allowed")
            right = self.visit(comparator)
            if not fn(left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node):
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_Subscript(self, node):
        container, index = self.visit(node.value), self.visit(node.slice)
        if not isinstance(container, (list, tuple)) or not isinstance(index, int) or isinstance(index, bool):
            raise ExpressionError("only a list can be indexed, by an integer")
        return container[index]

    def visit_Call(self, node):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            name = node.func.id if isinstance(node.func, ast.Name) else "this call"
            raise ExpressionError(f"{name} is not an allowed function; allowed: {', '.join(FUNCTIONS)}")
        return FUNCTIONS[node.func.id](*(self.visit(arg) for arg in node.args))
