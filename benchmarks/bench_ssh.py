"""Light over SSH (issue 17): terminal bytes and CPU of the run screen following a live 8-GPU run,
side by side with htop (`htop -d 10`, 1 Hz) in a pseudo-terminal of the same size, in one run.

Each variant runs in its own pty (bench_ui_cost's harness: psutil for the CPU, a thread that
drains the master side and counts bytes) while benchmarks._writer plays the run (8 fake B200s of
telemetry at 1 Hz, 10 metric events/s). Variants are measured in turn at each size, rotated
each round, so the machine's load hits them alike:

    after         run.py --attach RUN from this tree
    before        the same from another tree (--before DIR, e.g. `git archive main`)
    low-bw        run.py --attach RUN --low-bandwidth from this tree
    htop          htop -d 10 (skipped with a note when htop is not installed)

Bytes by widget (--breakdown): the raw output of the measured window is kept; Textual writes
every fragment of a line after a cursor move (CSI row;col H), so each fragment is charged to the
widget at that cell. The widget map comes from the same run screen laid out in-process
(App.run_test at the same size on the same live run). Bytes outside a fragment (synchronised
output brackets, cursor show/hide) are "frame".

    python -m benchmarks.bench_ssh --before /tmp/before --seconds 20 --breakdown
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks._common import PROJECT_ROOT, PYTHON, Result, base_env, console_on_live_run, load_note

SETTLE_S = 4.0
MOVE = re.compile(rb"\x1b\[(\d+);(\d+)H")
GROUPS = ("run-header", "gpus", "loss-plot", "side-log", "series", "tabs")


def _argv(variant: str, root: Path, tree: Path) -> list[str]:
    if variant == "htop":
        return ["htop", "-d", "10"]
    argv = [PYTHON, str(tree / "run.py"), "--runs-dir", str(root.parent), "--attach", str(root)]
    if variant == "low-bw":
        argv.append("--low-bandwidth")
    return argv


def measure(variant: str, cols: int, rows: int, seconds: float, before: Path | None, settle_s: float = SETTLE_S,
            breakdown: bool = False) -> dict:
    tree = before if variant == "before" and before is not None else PROJECT_ROOT
    with tempfile.TemporaryDirectory(prefix="td-bench-ssh-") as d:
        with console_on_live_run(Path(d), lambda root: _argv(variant, root, tree), cols=cols, rows=rows,
                                 env=base_env(PYTHONPATH=str(tree)), cwd=tree, what=variant,
                                 min_bytes=500 if variant == "htop" else 2000) as (root, pty):
            time.sleep(settle_s)
            pty.recording = bytearray() if breakdown else None
            c0, b0, t0 = pty.cpu_seconds(), pty.bytes, time.monotonic()
            time.sleep(seconds)
            dt = time.monotonic() - t0
            c1, b1 = pty.cpu_seconds(), pty.bytes
            raw = bytes(pty.recording or b"")
            pty.recording = None
            out = {"variant": variant, "size": f"{cols}x{rows}", "cpu_frac": (c1 - c0) / dt,
                   "kib_min": (b1 - b0) / dt * 60 / 1024, "load": load_note()}
            if breakdown and variant != "htop":
                out["by_widget"] = {k: v / dt * 60 / 1024 for k, v in
                                    attribute(raw, asyncio.run(widget_map(root, cols, rows))).items()}
            return out


async def widget_map(root: Path, cols: int, rows: int) -> list[list[str]]:
    """[row][col] -> the name of the widget drawn there (the run screen of this tree at this size)."""
    from training.rundir import RunPaths
    from tui.app import make_app
    from tui.screens.run_screen import RunScreen

    app = make_app(runs_dir=root.parent, attach=RunPaths(root))
    grid = [["?"] * cols for _ in range(rows)]
    async with app.run_test(size=(cols, rows)) as pilot:
        for _ in range(100):
            await pilot.pause(0.1)
            screen = app.screen
            if isinstance(screen, RunScreen) and screen.loaded and screen.telemetry_seen:
                break
        await pilot.pause(1.5)
        for y in range(rows):
            for x in range(cols):
                try:
                    widget, _ = app.screen.get_widget_at(x, y)
                except Exception:  # noqa: BLE001 - nothing there
                    continue
                grid[y][x] = _group(widget)
    return grid


def _group(widget) -> str:
    node = widget
    while node is not None:
        if getattr(node, "id", None) in GROUPS:
            return node.id
        if type(node).__name__ in ("Footer", "Tabs", "ContentTabs"):
            return "footer" if type(node).__name__ == "Footer" else "tabs"
        node = node.parent
    return type(widget).__name__


def attribute(raw: bytes, grid: list[list[str]]) -> Counter:
    """Bytes per widget: each fragment after a cursor move is charged to the widget at that cell."""
    out: Counter = Counter()
    moves = list(MOVE.finditer(raw))
    out["frame"] += moves[0].start() if moves else len(raw)
    for i, m in enumerate(moves):
        end = moves[i + 1].start() if i + 1 < len(moves) else len(raw)
        y, x = int(m.group(1)) - 1, int(m.group(2)) - 1
        name = grid[y][x] if 0 <= y < len(grid) and 0 <= x < len(grid[0]) else "?"
        tail = raw[m.start():end]
        # The end of a frame (synchronised output off, cursor) is the frame's, not the widget's.
        cut = tail.find(b"\x1b[?2026l")
        if cut >= 0:
            out["frame"] += len(tail) - cut
            tail = tail[:cut]
        out[name] += len(tail)
    return out


def run(quick: bool = False, seconds: float = 20.0, before: Path | None = None, rounds: int = 1,
        variants: tuple[str, ...] = ("before", "after", "htop"), breakdown: bool = False,
        sizes: tuple[tuple[int, int], ...] = ((80, 24), (160, 48))) -> list[Result]:
    settle_s = SETTLE_S
    if quick:
        seconds, settle_s, rounds = 1.5, 1.0, 1
    variants = tuple(v for v in variants if v != "before" or before is not None)
    if "htop" in variants and shutil.which("htop") is None:
        print("htop is not installed (apt-get install htop): its column is skipped", flush=True)
        variants = tuple(v for v in variants if v != "htop")
    rows_out: list[dict] = []
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for cols, rows in sizes:
            for v in order:
                got = measure(v, cols, rows, seconds, before, settle_s, breakdown)
                rows_out.append(got)
                print(_line(got), flush=True)
    results: list[Result] = []
    for cols, rows in sizes:
        size = f"{cols}x{rows}"
        htop = [g for g in rows_out if g["size"] == size and g["variant"] == "htop"]
        hb = sum(g["kib_min"] for g in htop) / len(htop) if htop else None
        for v in variants:
            got = [g for g in rows_out if g["size"] == size and g["variant"] == v]
            kib = sum(g["kib_min"] for g in got) / len(got)
            cpu = sum(g["cpu_frac"] for g in got) / len(got)
            note = f"{cpu * 100:.1f}% of a core" + (f"; {kib / hb:.2f}x htop's bytes" if hb else "")
            results.append(Result(f"terminal bytes, {v}, {size}", kib, "KiB/min", "info", note=note))
    return results


def _line(g: dict) -> str:
    s = f"{g['variant']:>7} {g['size']:>7}: {g['kib_min']:8.1f} KiB/min  {g['cpu_frac'] * 100:5.1f}% CPU  ({g['load']})"
    if "by_widget" in g:
        s += "\n" + "\n".join(f"{'':>17}{k:<12} {v:8.1f} KiB/min" for k, v in
                              sorted(g["by_widget"].items(), key=lambda kv: -kv[1]))
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--before", type=Path, default=None, help="another tree's root (the 'before')")
    ap.add_argument("--variants", default="before,after,htop")
    ap.add_argument("--sizes", default="80x24,160x48")
    ap.add_argument("--breakdown", action="store_true", help="bytes by widget")
    args = ap.parse_args()
    sizes = tuple(tuple(int(n) for n in s.split("x")) for s in args.sizes.split(","))
    print(load_note(), flush=True)
    for r in run(seconds=args.seconds, before=args.before, rounds=args.rounds,
                 variants=tuple(args.variants.split(",")), breakdown=args.breakdown, sizes=sizes):
        print(r.line(), flush=True)
    print(load_note(), flush=True)


if __name__ == "__main__":
    main()
