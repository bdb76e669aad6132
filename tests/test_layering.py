"""Packages form layers (nn -> models -> decoding / train -> the Python APIs -> cli): no package-level import
cycles, and the package and its command-line help do not import torch.

An import counts when it runs at import time: module level, including ``try``/``if`` blocks and class bodies;
imports inside functions and under ``if TYPE_CHECKING:`` do not. A package is ``transduce.X`` (a sub-package
or a top-level module such as ``transduce/translate.py``); the root ``transduce/__init__.py`` is left out.
Run as a script to print the package graph's strongly connected components and mutually reachable pairs.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "transduce"


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run when the module is imported (function bodies and TYPE_CHECKING blocks skipped)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_nodes(node.body)
            yield from _import_time_nodes(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _import_time_nodes(block)
        elif isinstance(node, (ast.With, ast.ClassDef, ast.For, ast.While)):
            yield from _import_time_nodes(node.body)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of the modules ``path`` (a file under ``root``) imports at import time."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_time_nodes(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def package_of(module: str) -> str | None:
    """``transduce.train.loss`` -> ``train``; ``transduce.translate`` -> ``translate``; others -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "transduce" and len(parts) > 1 else None


def package_graph() -> dict[str, set[str]]:
    """Package -> the other packages its modules import at import time."""
    known = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.stem not in ("__init__", "__main__")}
    graph: dict[str, set[str]] = {name: set() for name in known}
    for path in PACKAGE.rglob("*.py"):
        source = package_of(_module_name(path))
        if source is None or source == "__main__":
            continue
        for target in map(package_of, imported_modules(path)):
            if target in known and target != source:
                graph[source].add(target)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def mutual_pairs(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Package pairs that reach each other (both sit on a cycle)."""
    reach = {name: reachable(graph, name) for name in graph}
    return [(a, b) for a, b in itertools.combinations(sorted(graph), 2) if b in reach[a] and a in reach[b]]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    for start in sorted(graph):
        paths = {start: [start]}
        todo = [start]
        while todo:
            node = todo.pop(0)
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    todo.append(nxt)
    return None


def test_no_package_import_cycles() -> None:
    graph = package_graph()
    cycle = find_cycle(graph)
    assert cycle is None, f"package import cycle: {' -> '.join(cycle)} (mutually reachable: {mutual_pairs(graph)})"


def test_cycle_finder_sees_a_cycle() -> None:
    """The checker itself: a hand-built graph with a cycle is caught, a layered one is not."""
    layered = {"nn": set(), "models": {"nn"}, "train": {"models", "nn"}, "cli": {"train"}}
    assert find_cycle(layered) is None and mutual_pairs(layered) == []
    looped = {**layered, "models": {"nn", "train"}}
    assert find_cycle(looped) in (["models", "train", "models"], ["train", "models", "train"])
    assert mutual_pairs(looped) == [("models", "train")]


def test_import_time_imports_skip_functions_and_type_checking(tmp_path: Path) -> None:
    source = PACKAGE / "translate.py"  # any real file parses; then a synthetic one checks the rules
    assert imported_modules(source)
    fake = tmp_path / "transduce" / "demo.py"
    fake.parent.mkdir()
    fake.write_text("from typing import TYPE_CHECKING\nimport transduce.models.ctc\n"
                    "if TYPE_CHECKING:\n    from transduce.train import trainer\n"
                    "try:\n    from transduce.data import audio\nexcept ImportError:\n    pass\n"
                    "def f():\n    from transduce.cli import main\n")
    found = {package_of(m) for m in imported_modules(fake, tmp_path)} - {None}
    assert found == {"models", "data"}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_import_transduce_does_not_import_torch() -> None:
    done = _run("import sys, transduce; assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_cli_help_does_not_import_torch() -> None:
    code = ("import contextlib, io, sys\nfrom transduce.cli.main import main\n"
            "for argv in (['--help'], ['translate', '--help'], ['transcribe', '--help'], ['train', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "        try:\n            main(argv)\n        except SystemExit as stop:\n"
            "            assert stop.code == 0, stop.code\n"
            "    assert 'usage: transduce' in out.getvalue()\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')")
    done = _run(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


if __name__ == "__main__":
    graph = package_graph()
    pairs = mutual_pairs(graph)
    print(f"{sum(map(len, graph.values()))} package edges; cycle: {find_cycle(graph)}")
    print(f"{len(pairs)} mutually reachable package pairs: {pairs}")
