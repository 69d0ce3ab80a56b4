"""Executor overhead on trivial nodes: a 200-node chain and a 50-wide fan-out.

Baseline in the same run: the same node functions called directly in a plain loop. Prints the
per-node overhead of validation + planning + signatures + execution, and the time of a re-run
served entirely from the cache.

    python bench/executor_overhead.py
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graph import Env, Float, In, Loom, Node, Out, Registry  # noqa: E402


class Const(Node):
    value = Float(1.0)
    outputs = (Out("FLOAT", "value"),)

    def run(self, ctx):
        return self.value


class Inc(Node):
    x = In("FLOAT")
    outputs = (Out("FLOAT", "x"),)

    def run(self, ctx):
        return self.x + 1


class Sum(Node):
    output_node = True
    a = In("FLOAT")
    b = In("FLOAT", optional=True)

    def run(self, ctx):
        ctx.show(total=[self.a + (self.b or 0)])


def chain(n: int, start: float) -> dict:
    prompt = {"0": {"class_type": "Const", "inputs": {"value": start}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "Inc", "inputs": {"x": [str(i - 1), 0]}}
    prompt[str(n - 1)] = {"class_type": "Sum", "inputs": {"a": [str(n - 2), 0]}}
    return prompt


def fan_out(width: int, start: float) -> dict:
    prompt = {"0": {"class_type": "Const", "inputs": {"value": start}}}
    for i in range(1, width + 1):
        prompt[str(i)] = {"class_type": "Inc", "inputs": {"x": ["0", 0]}}
        prompt[f"s{i}"] = {"class_type": "Sum", "inputs": {"a": [str(i), 0]}}
    return prompt


def direct(prompt: dict) -> None:
    """The baseline: the same run() calls with no engine around them."""
    values = {}
    for node_id, node in prompt.items():  # both shapes are listed in a topological order
        cls = {"Const": Const, "Inc": Inc, "Sum": Sum}[node["class_type"]]
        inst = cls()
        for name, v in node["inputs"].items():
            setattr(inst, name, values[v[0]] if isinstance(v, list) else v)
        if cls is Sum:
            inst.b = None
        values[node_id] = inst.run(_Ctx())


class _Ctx:
    def show(self, **ui):
        pass


def median_time(fn, repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    loom = Loom(Env.from_data_dir(tempfile.mkdtemp()), registry=Registry([Const, Inc, Sum]))
    print(f"{'shape':<14}{'nodes':>6}{'direct µs':>12}{'cold µs':>12}{'overhead µs/node':>18}"
          f"{'ratio':>8}{'cache-hit µs':>14}{'hit µs/node':>13}")
    for name, make in (("chain-200", lambda s: chain(200, s)), ("fan-out-50", lambda s: fan_out(50, s))):
        n = len(make(0.0))
        counter = iter(range(10**9))
        base = median_time(lambda: direct(make(0.0)))
        cold = median_time(lambda: loom.run(make(float(next(counter)))))  # a new constant: all nodes run
        warm_prompt = make(-1.0)
        loom.run(warm_prompt)
        hit = median_time(lambda: loom.run(warm_prompt))
        assert loom.run(warm_prompt).executed == []
        print(f"{name:<14}{n:>6}{base * 1e6:>12.0f}{cold * 1e6:>12.0f}{(cold - base) / n * 1e6:>18.1f}"
              f"{cold / base:>8.1f}{hit * 1e6:>14.0f}{hit / n * 1e6:>13.1f}")


if __name__ == "__main__":
    main()
