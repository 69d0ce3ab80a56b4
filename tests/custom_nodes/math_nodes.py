"""Small pure-Python nodes for engine tests. Each run is recorded in CALLS."""
import threading

from graph import Combo, Float, In, Int, Node, Out, String

CALLS: list[str] = []
GATE = threading.Event()  # Slow waits on it so tests can interrupt mid-run


class Number(Node):
    """A constant number."""
    category = "math"
    value = Float(0.0, min=-1000, max=1000)
    outputs = (Out("FLOAT", "value"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        return self.value


class Add(Node):
    category = "math"
    a = In("FLOAT")
    b = In("FLOAT")
    outputs = (Out("FLOAT", "sum"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        return self.a + self.b


class Scale(Node):
    category = "math"
    x = In("FLOAT")
    factor = Int(1, min=0, max=10)
    outputs = (Out("FLOAT", "scaled"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        return self.x * self.factor


class ToText(Node):
    """Formats a number as text."""
    category = "text"
    x = In("FLOAT")
    style = Combo(["plain", "fixed"], default="plain")
    prefix = String("", optional=True)
    outputs = (Out("STRING", "text"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        body = f"{self.x:.2f}" if self.style == "fixed" else str(self.x)
        return (self.prefix or "") + body


class Show(Node):
    """An output node: shows its text."""
    category = "text"
    output_node = True
    text = In("STRING")

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        ctx.show(text=[self.text])


class Slow(Node):
    """Reports 5 steps of progress, waiting on GATE between them."""
    category = "test"
    x = In("FLOAT")
    outputs = (Out("FLOAT", "x"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        for i in range(5):
            GATE.wait(5)
            ctx.progress(i + 1, 5)
        return self.x


class Clock(Node):
    """Not idempotent: runs every time."""
    category = "test"
    idempotent = False
    outputs = (Out("FLOAT", "t"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        return float(len(CALLS))


class Fail(Node):
    category = "test"
    x = In("FLOAT")
    outputs = (Out("FLOAT", "x"),)

    def run(self, ctx):
        CALLS.append(ctx.node_id)
        raise RuntimeError("this node always fails")
