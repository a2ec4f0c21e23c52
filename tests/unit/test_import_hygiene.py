"""The layers keep their direction (harlequin's import-hygiene test, by reading the imports with ast):

- nothing under training/ imports tui or textual (the training side never needs a UI);
- training/engine (the ranks) never imports training.supervise or training.console;
- training/rundir (the contract) imports nothing else of traindeck but training.profile/errors;
- the viewers' feed, run model, formatters and describer stay plain Python (no textual).
Every import counts, also those inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module name `path` imports (absolute; relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _offending(folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in _modules(folder):
        for name in sorted(_imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden) \
                    and not any(name == a or name.startswith(a + ".") for a in allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_training_never_imports_tui_or_textual():
    assert _offending("training", ("tui", "textual", "textual_plotext")) == []


def test_engine_never_imports_the_supervisor_or_console_side():
    assert _offending("training/engine", ("training.supervise", "training.console")) == []


def test_rundir_imports_nothing_else_of_traindeck():
    allowed = ("training.rundir", "training.profile", "training.errors")
    assert _offending("training/rundir", ("training", "tui"), allowed) == []


@pytest.mark.parametrize("module", ["tui/feed.py", "tui/run_model.py", "tui/formats.py", "tui/describe.py",
                                    "tui/headless/__init__.py", "tui/headless/lines.py",
                                    "tui/headless/follower.py"])
def test_the_viewers_core_is_plain_python(module):
    names = _imports(ROOT / module)
    assert not [n for n in names if n == "textual" or n.startswith("textual.") or n.startswith("tui.screens")
                or n.startswith("tui.widgets") or n == "tui.app"]


def test_the_checker_sees_imports_inside_functions(tmp_path):
    probe = ROOT / "training" / "rundir" / "paths.py"
    assert "traindeck" in _imports(probe)  # a top-level from-import
    assert "training.monitor.telemetry" in _imports(ROOT / "tui" / "feed.py")  # one inside a method
