"""The docs stay true to the code where that is cheap to check (issue 31):

- every package's docstring names each of its modules;
- ARCHITECTURE.md's module map names every module (a row of its own, or its package's row);
- run.json and exit.json are written only where ARCHITECTURE.md's "Who writes" says;
- README.md's contents list every section, and its picture is the snapshot tests' own SVG.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for top in ("traindeck", "training", "tui") for p in (ROOT / top).rglob("__init__.py"))
MODULES = sorted(p for top in ("traindeck", "training", "tui") for p in (ROOT / top).rglob("*.py")
                 if p.name != "__init__.py")


def _named(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text) is not None


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_package_docstring_names_its_modules(package):
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    modules = sorted(p.stem for p in package.glob("*.py") if p.name != "__init__.py")
    assert [m for m in modules if not _named(m, doc)] == []


def test_the_module_map_names_every_module():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([^`]+)` \| (.*) \|$", text, re.M))
    missing = []
    for path in MODULES:
        rel = str(path.relative_to(ROOT))
        package_row = rows.get(str(path.parent.relative_to(ROOT)) + "/", "")
        if rel not in rows and not _named(path.stem, package_row):
            missing.append(rel)
    assert missing == []
    assert [k for k in rows if k.endswith(".py") and not (ROOT / k).exists()] == []  # nothing stale


def _writes_of_records() -> set[str]:
    """'module.function' for every write_json_atomic / write_text on a path named for run.json or exit.json."""
    found = set()
    for path in MODULES + [p / "__init__.py" for p in PACKAGES]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for call in ast.walk(func):
                if not isinstance(call, ast.Call):
                    continue
                name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                if name not in ("write_json_atomic", "write_text", "write_bytes"):
                    continue
                target = ast.unparse(call.args[0] if name == "write_json_atomic" and call.args else call.func)
                if re.search(r"run_json|exit_json|run\.json|exit\.json", target):
                    found.add(f"{path.relative_to(ROOT).with_suffix('').as_posix().replace('/', '.')}.{func.name}")
    return found


def test_run_json_and_exit_json_have_the_writers_the_architecture_names():
    assert _writes_of_records() == {"training.rundir.paths.update_run_json",
                                    "training.rundir.records.create_run_json",
                                    "training.rundir.records.finish_run"}


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_contents_list_every_section():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"^(    |\t).*$", "", text, flags=re.M)  # code blocks hold '#' comments, not headings
    headings = re.findall(r"^## (.+)$", prose, re.M)
    listed = re.findall(r"^- \[(.+?)\]\(#([^)]+)\)$", text, re.M)
    assert [title for title, _ in listed] == [h for h in headings if h != "Contents"]
    assert all(anchor == _anchor(title) for title, anchor in listed)


def test_the_readme_picture_is_the_snapshot_tests_own():
    snapshot = ROOT / "tests/tui/__snapshots__/test_snapshots/test_run_screen_8gpu[160x48].svg"
    picture = ROOT / "docs/run-screen.svg"
    assert picture.read_bytes() == snapshot.read_bytes(), (
        "docs/run-screen.svg is a copy of the 160x48 run-screen snapshot: cp the snapshot there")
    assert "](docs/run-screen.svg)" in (ROOT / "README.md").read_text(encoding="utf-8")
