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


# ---- the module graph: no circles, no upward arrows (imports inside functions count) --------

# The layers, lowest first; a module may import its own layer and those below, never above.
# training.tasks and the metric presets sit with the profile: it validates against what they declare.
LAYERS = (
    ("traindeck",),
    ("training", "training.errors", "training.profile", "training.placeholders", "training.cpus",
     "training.ssh_policy", "training.report", "training.tasks", "training.monitor.metric_presets"),
    ("training.rundir",),
    ("training.monitor", "training.engine"),
    ("training.worker",),
    ("training.supervise", "training.supervisor"),
    ("training.console",),
    ("tui",),
    ("run",),
)


def _module_files() -> dict[str, Path]:
    files = {"run": ROOT / "run.py"}
    for top in ("traindeck", "training", "tui"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (a `from pkg import mod` names the module)."""
    files = _module_files()
    graph = {}
    for name, path in files.items():
        targets = set()
        for imported in _imports(path):
            while imported and imported not in files:  # `from m import func` -> m
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _layer(module: str) -> int:
    best = (-1, -1)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[1]:
                best = (index, len(prefix))
    assert best[0] >= 0, f"{module} is in no layer of LAYERS: add it"
    return best[0]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles():
    assert _circles(_graph()) == []


def test_no_module_imports_a_layer_above_its_own():
    graph = _graph()
    upward = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
              for a in sorted(graph) for b in sorted(graph[a]) if _layer(b) > _layer(a)]
    assert upward == []


def test_the_graph_checker_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("training.console.stop") > _layer("training.rundir.paths") > _layer("traindeck.events")
