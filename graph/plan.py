"""Planning with networkx: which nodes a run needs, and in what order."""
from __future__ import annotations

import networkx as nx

from .links import is_link


def sort_key(node_id: str):
    """Numeric ids in numeric order, then the rest by name, so plans are deterministic."""
    return (0, int(node_id), "") if node_id.isdecimal() else (1, 0, node_id)  # ("²".isdigit(), but no int)


def dependency_graph(prompt: dict) -> nx.DiGraph:
    """Edge src -> dst for each link whose source node exists in the prompt."""
    g = nx.DiGraph()
    g.add_nodes_from(prompt)
    for node_id, node in prompt.items():
        for value in node.get("inputs", {}).values():
            if is_link(value) and str(value[0]) in prompt:
                g.add_edge(str(value[0]), node_id)
    return g


def needed_nodes(g: nx.DiGraph, outputs: list[str]) -> set[str]:
    """The outputs and all their ancestors: nothing else runs."""
    needed = set(outputs)
    for out in outputs:
        needed |= nx.ancestors(g, out)
    return needed


def find_cycles(g: nx.DiGraph, limit: int = 20) -> list[list[str]]:
    if nx.is_directed_acyclic_graph(g):
        return []
    cycles = []
    for cycle in nx.simple_cycles(g):
        cycles.append(sorted(cycle, key=sort_key) if len(cycle) == 1 else cycle)
        if len(cycles) >= limit:
            break
    return cycles


def needed_subgraph(g: nx.DiGraph, outputs: list[str]) -> nx.DiGraph:
    """The outputs and their ancestors as a graph of its own (a copy: views are slow to walk)."""
    return g.subgraph(needed_nodes(g, outputs)).copy()


def plan(prompt: dict, outputs: list[str]) -> list[str]:
    """Node ids to execute, ancestors of `outputs` only, in a topological order; ties follow the
    prompt's order."""
    return list(nx.topological_sort(needed_subgraph(dependency_graph(prompt), outputs)))
