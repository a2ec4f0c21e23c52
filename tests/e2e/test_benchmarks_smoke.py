"""Smoke tests for benchmarks/: each benchmark's run() works at a tiny size and returns
well-formed figures. No timing assertions: the figures themselves are for `python -m benchmarks`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks._common import ANSI, Result, make_run_dir, percentile
from tests.support.fake_runs import write_metric_lines
from tests.support.locations import ROOT


def check(results: list[Result], min_count: int = 1) -> None:
    assert len(results) >= min_count
    for r in results:
        assert isinstance(r, Result)
        assert isinstance(r.name, str) and r.name
        assert isinstance(r.value, (int, float)) and not math.isnan(r.value), r
        assert isinstance(r.unit, str)
        assert r.ok in (None, True, False)
        assert r.verdict in ("", "PASS", "MISS")
        assert r.name in r.line()
        if r.ok is not None:
            assert r.target, f"{r.name}: a PASS/MISS figure needs a target"


def test_result_line_and_percentile():
    r = Result("x", 1.5, "ms", "< 2 ms", True)
    assert "PASS" in r.line() and "target < 2 ms" in r.line()
    assert Result("y", 3, "x", "<= 1.1x", False).verdict == "MISS"
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5


def test_synthetic_run_dir(tmp_path):
    root = make_run_dir(tmp_path, "20260101-000000-s", gpus=8, finished=True)
    write_metric_lines(root / "events.jsonl", 1000, chunk=300)
    lines = (root / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1000
    events = [json.loads(x) for x in lines]
    assert [e["step"] for e in events] == list(range(1, 1001))
    assert all(e["kind"] == "metric" and "loss" in e["values"] for e in events)
    assert json.loads((root / "exit.json").read_text())["state"] == "finished"
    from training.console.runs import run_summary
    from training.rundir import RunPaths

    summary = run_summary(RunPaths(root))
    assert summary.state.value == "finished" and summary.step == 1000


def test_ansi_strip():
    assert ANSI.sub(b"", b"\x1b[1;30;47m step \x1b[0m\x1b]22;default\x07 10,000") == b" step  10,000"


def test_plot():
    from benchmarks import bench_plot

    check(bench_plot.run(quick=True), 3)


def test_report():
    from benchmarks import bench_report

    check(bench_report.run(quick=True), 2)


@pytest.mark.slow  # starts DataLoader worker processes
def test_input():
    from benchmarks import bench_input

    check(bench_input.run(quick=True), 4)


def test_anatomy():
    from benchmarks import bench_anatomy

    check(bench_anatomy.run(quick=True), 4)


def test_heartbeat_control_micro():
    from benchmarks import bench_overhead

    results = bench_overhead.bench_heartbeat_control(0.05)
    check(results, 4)
    assert all(r.value > 0 for r in results)


def test_steps_per_s_from_events(tmp_path):
    from benchmarks import bench_overhead

    lines = [{"v": 1, "t": 100.0 + i, "kind": "metric", "step": 5 * (i + 1), "split": "train",
              "values": {"loss": 1.0}} for i in range(5)]
    lines.insert(2, {"v": 1, "t": 101.5, "kind": "metric", "step": 10, "split": "val", "values": {"loss": 1}})
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "junk\n")
    assert bench_overhead.steps_per_s(tmp_path) == pytest.approx(5.0)
    assert bench_overhead.first_metric_t(tmp_path) == 100.0
    assert "train.steps_per_epoch=40" in bench_overhead.overrides(40)


def test_latency():
    from benchmarks import bench_latency

    check(bench_latency.run(quick=True), 2)


def test_ui_cost():
    from benchmarks import bench_ui_cost

    check(bench_ui_cost.run(quick=True), 5)


def test_ssh_bytes_by_widget_attribution():
    from benchmarks.bench_ssh import attribute

    grid = [["header"] * 4, ["gpus"] * 2 + ["plot"] * 2]
    raw = b"\x1b[?2026h\x1b[1;1Hab\x1b[2;3H\x1b[31mxy\x1b[0m\x1b[?2026l"
    got = attribute(raw, grid)
    assert got["header"] == len(b"\x1b[1;1Hab") and got["plot"] == len(b"\x1b[2;3H\x1b[31mxy\x1b[0m")
    assert sum(got.values()) == len(raw)


def test_ssh():
    from benchmarks import bench_ssh

    check(bench_ssh.run(quick=True, variants=("after", "low-bw"), sizes=((80, 24),)), 2)


def test_memory():
    from benchmarks import bench_memory

    check(bench_memory.run(quick=True), 3)


def test_attach():
    from benchmarks import bench_attach

    check(bench_attach.run(quick=True), 6)


def test_metrics():
    from benchmarks import bench_metrics

    results = bench_metrics.run(quick=True)
    assert len(results) >= 8
    for name, value, unit in results:
        assert isinstance(name, str) and isinstance(value, float) and isinstance(unit, str)


@pytest.mark.slow
def test_overhead_quick():
    """Three short DDP runs (bare torchrun, headless, TUI in a pty)."""
    from benchmarks import bench_overhead

    results = bench_overhead.run(quick=True)
    check(results, 8)
    assert all(r.value > 0 for r in results if r.unit in ("steps/s", "s", "x"))


def test_main_runs_one(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "plot", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout or "MISS" in proc.stdout
    data = json.loads(out.read_text())
    assert data["results"] and not data["failed"]


def test_paint_latency_is_read_off_the_drawn_screen():
    """bench_paint's measurement: the terminal's bytes, drawn by a terminal emulator, against the
    times report.log() was called (no pty here: the arithmetic on a known stream)."""
    from benchmarks.bench_paint import header_latencies, plot_latencies, replay

    def at(row: int, text: str) -> bytes:
        return f"\x1b[{row};1H{text}".encode()

    chunks = [
        (10.0, at(1, " running  step 1,000  ") + at(5, "   └┬──────┬┘") + at(6, "    0     2k ")),
        (10.4, at(1, " running  step 1,004  ")),
        (10.9, at(1, " running  step 3,015  ")),  # the jump is in the header first...
        (11.6, at(6, "    0     5k ")),  # ...and on the plot's x axis later
    ]
    frames = replay(chunks, 40, 8)
    assert [f[1] for f in frames] == [1000, 1004, 3015, 3015]
    logged = [(1003, 10.1), (1004, 10.2), (3012, 10.5), (3013, 10.6), (3014, 11.5)]
    assert header_latencies(frames, logged, 10.0, 12.0) == pytest.approx([0.3, 0.2, 0.4, 0.3, 0.1])
    # the jump (1004 -> 3012) was logged at 10.5; the tick labels changed at 11.6
    assert plot_latencies(frames, logged, 10.0, 12.0) == pytest.approx([1.1])
    # a step never shown is left out, not counted as zero
    assert header_latencies(frames, logged + [(3016, 11.7)], 10.0, 12.0) == pytest.approx([0.3, 0.2, 0.4, 0.3, 0.1])
