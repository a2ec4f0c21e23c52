"""The run screen's Time view and the header's MFU, on a recorded 8x B200 run given timing events:
rank 3 slowed, the others waiting for it in the all-reduce."""

from __future__ import annotations

import json

from textual.widgets import TabbedContent

from tests.support.waiting import await_for
from tests.tui.test_app import GNN, SIZE, header_text, wait_run_loaded
from tui.widgets import TimeView

# 8 ranks of 10 steps: 8 ms of compute each, rank 3 sleeps 12 ms more a step, the others wait 12 ms.
FLOPS = 3.0e10  # per sample: 1,000 samples/s per GPU x 3e10 = 30 TFLOP/s of the B200's bf16 2,250


def timing(t: float, rank: int) -> dict:
    slow = rank == 3
    phases = {"data": 0.01, "compute": 0.08, "comm": 0.0 if slow else 0.12, "optimizer": 0.01,
              "other": 0.12 if slow else 0.0}
    seconds = sum(phases.values())
    return {"v": 1, "t": t, "kind": "timing", "rank": rank, "step": 9000, "steps": 10, "seconds": seconds,
            "phases": phases, "samples": 220, "clock": "cuda",
            "total": {"steps": 9000, "seconds": seconds * 900, "samples": 198000,
                      "phases": {k: v * 900 for k, v in phases.items()}}}


def add_anatomy(run_dir) -> None:
    last_t = max(json.loads(line)["t"] for line in (run_dir / "events.jsonl").read_text().splitlines() if line)
    events = [{"v": 1, "t": last_t, "kind": "status", "state": "running", "message": "", "world_size": 8,
               "device": "cuda:0", "flops_per_sample": FLOPS, "gpu_model": "NVIDIA B200", "compute_dtype": "bf16",
               "gpus": 8},
              {"v": 1, "t": last_t, "kind": "metric", "step": 9000, "split": "train",
               "values": {"loss": 0.5, "samples_per_s": 8000.0}}]
    events += [timing(last_t, r) for r in range(8)]
    with open(run_dir / "events.jsonl", "a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in events))


async def test_time_view_marks_the_slowest_rank_and_the_header_shows_mfu(recorded_app, recorded_runs_dir):
    add_anatomy(recorded_runs_dir / GNN)
    app = recorded_app(GNN)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await wait_run_loaded(pilot)
        view = screen.query_one(TimeView)
        await await_for(pilot, lambda: view.anatomy is not None)
        assert view.anatomy.slowest_rank == 3
        await pilot.press("4")
        assert screen.query_one(TabbedContent).active == "time"
        await pilot.pause(0.2)
        text = view.render().plain
        lines = text.splitlines()
        assert "slowest rank 3" in lines[0]
        rank3 = next(line for line in lines if line.startswith("rank 3"))
        assert "◀ slowest" in rank3 and "22.0 ms" in rank3
        assert sum("◀ slowest" in line for line in lines) == 1
        assert any(line.startswith("all-reduce wait") for line in lines)
        # 8,000 samples/s over 8 GPUs, 3e10 FLOPs each: 30 TFLOP/s of the B200's 2,250 bf16 = 1.3%.
        assert "1,000 per GPU" in text and "MFU 1%" in text
        header = header_text(screen)
        assert "1,000/GPU" in header and "MFU 1%" in header


async def test_time_view_without_timing_says_how_to_get_one(recorded_app):
    app = recorded_app(GNN)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        await pilot.press("4")
        await pilot.pause(0.1)
        assert "report.phase" in screen.query_one(TimeView).render().plain


def test_time_view_snapshot(snap_compare, recorded_runs_dir):
    from tests.fixtures.fake_nvml import eight_b200
    from tests.support.recorded_runs import SNAPSHOT_NOW
    from tests.tui.test_snapshots import run_ready
    from training.monitor.gpu import GpuBackend
    from training.rundir import RunPaths
    from tui.app import make_app

    add_anatomy(recorded_runs_dir / GNN)
    app = make_app(runs_dir=recorded_runs_dir, attach=RunPaths(recorded_runs_dir / GNN),
                   gpu_backend=GpuBackend(nvml=eight_b200()), clock=lambda: SNAPSHOT_NOW)

    async def time_tab(pilot):
        await run_ready(pilot)
        await pilot.press("4")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(120, 40), run_before=time_tab)


async def test_the_pickers_scaling_key_measures_the_profile_and_tells_the_speed_ups(tmp_path, backend, monkeypatch):
    from training.console import scaling
    from tui.app import make_app
    from tui.screens.picker import PickerScreen

    calls = []

    def fake_measure(profile, runs_dir, argv=None, on_start=None, **kwargs):
        calls.append((profile.name, runs_dir, argv))
        sizes = [scaling.SizeResult(1, "a", "finished", 100.0, speedup=1.0, efficiency=1.0),
                 scaling.SizeResult(2, "b", "finished", 180.0, speedup=1.8, efficiency=0.9)]
        return scaling.ScalingResult(profile.name, 60, 64, "rank", sizes, 0.0, path="runs/scaling-x-cpu.json")

    monkeypatch.setattr(scaling, "measure_scaling", fake_measure)
    app = make_app(runs_dir=tmp_path / "runs", gpu_backend=backend)
    notes = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: notes.append(str(message)))
    async with app.run_test(size=(100, 30)) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.entries)
        await pilot.press("g")
        await await_for(pilot, lambda: any("scaling of cpu" in n for n in notes))
    assert calls == [("cpu", tmp_path / "runs", ["--scaling", "cpu"])]
    assert "2 ranks 1.80x (90%)" in notes[-1] and "runs/scaling-x-cpu.json" in notes[-1]
