"""The layout of the code (DESIGN §9): rooms without import cycles, and a real-time server that
never pulls in the offline corpus generator or the training code."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "realtime", "benchmarks", "talker")
OFFLINE = ("models.corpus", "models.data", "models.training")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> project modules it imports anywhere in its body (function-level too)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack, path, on_path, done = [(start, iter(sorted(graph[start])))], [start], {start}, set()
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            path.pop()
            on_path.discard(node)
            done.add(node)
        elif child in on_path:
            return path[path.index(child):] + [child]
        elif child not in done:
            stack.append((child, iter(sorted(graph[child]))))
            path.append(child)
            on_path.add(child)
    return None


def test_no_import_cycles() -> None:
    mods = _modules()
    graph = _imports(mods)
    for name in sorted(mods):
        cycle = _cycle_from(name, graph)
        assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_sees_a_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set, {"a": {"b"}, "b": {"c"}, "c": {"a"}})
    assert _cycle_from("a", graph) == ["a", "b", "c", "a"]


def test_realtime_never_imports_offline_code() -> None:
    mods = _modules()
    graph = _imports(mods)
    for name in (m for m in mods if m.startswith("realtime")):
        seen, todo = set(), [name]
        while todo:  # everything realtime reaches, directly or through models.*
            for dep in graph[todo.pop()]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        offline = sorted(d for d in seen if d.startswith(OFFLINE))
        assert not offline, f"{name} reaches offline code: {offline}"


def test_models_is_in_rooms() -> None:
    top = [p for p in (REPO / "models").glob("*.py")]
    rooms = [p.name for p in (REPO / "models").iterdir() if (p / "__init__.py").is_file()]
    assert len(top) <= 10, sorted(p.name for p in top)
    assert {"face", "corpus", "data", "net", "training"} <= set(rooms)
