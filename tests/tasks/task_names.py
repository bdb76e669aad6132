"""Finds code that tells tasks apart by name: ``cfg.task == "ctc"``, ``task in ("translation", ...)``,
``config.get("task") == CTC``. Only ``transduce/tasks/`` may do that. Checking that two configs are of the same
task (``source.task != cfg.task``: a checkpoint or fine-tuning source of another task) is not dispatch and is
allowed."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path


def _is_task_value(node: ast.expr) -> bool:
    """``x.task``, ``task``, ``x["task"]``, ``x.get("task", ...)``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "task"
    if isinstance(node, ast.Name):
        return node.id == "task"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "task"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "task"
    return False


def _names(node: ast.expr) -> set[str]:
    """String constants in ``node`` (a constant, or a tuple/list/set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {name for elt in node.elts for name in _names(elt)}
    return set()


def task_comparisons(path: Path, task_names: Iterable[str]) -> list[int]:
    """Line numbers in ``path`` where a task value is compared with a task name (a literal, or any name or
    expression that is not itself a task value, since it may hold one)."""
    known = set(task_names)
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        tasks = [op for op in operands if _is_task_value(op)]
        others = [op for op in operands if not _is_task_value(op)]
        literal = (ast.Constant, ast.Tuple, ast.List, ast.Set)
        if tasks and any(_names(op) & known or not isinstance(op, literal) for op in others):
            lines.append(node.lineno)
    return lines
