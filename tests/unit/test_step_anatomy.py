"""The step anatomy without processes: the clocks (host and CUDA, the CUDA one with fake events),
the fold across ranks, throughput and MFU against a fake GPU's peak, the input-bound rule, and
report.phase in a user's script."""

from __future__ import annotations

import json

import pytest

from traindeck import report
from traindeck.gpu_peaks import GpuPeaks, mfu, peak_for
from training.engine.step_clock import CudaStepClock, StepClock
from training.monitor.health import HealthMonitor
from training.profile import parse_profile
from training.rundir import RunPaths
from training.rundir.events_file import make_event, read_all
from training.rundir.records import TimingEvent, parse_event
from training.rundir.step_anatomy import RankTime, TimingFold, fold_ranks, throughput


class FakeTime:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


def test_the_host_clock_charges_every_moment_to_one_phase():
    now = FakeTime()
    clock = StepClock(now)
    for _ in range(3):
        now.advance(0.001)
        clock.lap("other")
        now.advance(0.004)
        clock.lap("data")
        now.advance(0.010)
        clock.mark()  # the comm hook: the last bucket is ready
        now.advance(0.002)
        clock.lap_split("compute", "comm")
        now.advance(0.003)
        clock.lap("optimizer")
    now.advance(60)
    clock.skip()  # a pause
    phases = clock.drain()
    assert phases == pytest.approx({"other": 0.003, "data": 0.012, "compute": 0.030, "comm": 0.006,
                                    "optimizer": 0.009})
    assert clock.drain() == {}
    now.advance(0.005)
    clock.lap_split("compute", "comm")  # no mark since the last lap: no_sync, or no DDP
    assert clock.drain() == pytest.approx({"compute": 0.005})


class FakeEvent:
    """torch.cuda.Event's surface: record() takes the (fake) GPU time, elapsed_time is in ms."""

    def __init__(self, now):
        self.now, self.at, self.synced = now, None, False

    def record(self):
        self.at = self.now()

    def synchronize(self):
        self.synced = True

    def elapsed_time(self, end):
        return (end.at - self.at) * 1000.0


def test_the_cuda_clock_reads_its_events_only_when_drained():
    now = FakeTime()
    made = []

    def factory():
        made.append(FakeEvent(now))
        return made[-1]

    clock = CudaStepClock(factory)
    for _ in range(10):
        clock.lap("other")
        now.advance(0.002)
        clock.lap("data")
        now.advance(0.020)
        clock.mark()
        now.advance(0.005)
        clock.lap_split("compute", "comm")
        now.advance(0.004)
        clock.lap("optimizer")
    assert not any(e.synced for e in made)  # never a synchronize per step
    phases = clock.drain()
    assert phases == pytest.approx({"other": 0.0, "data": 0.02, "compute": 0.2, "comm": 0.05, "optimizer": 0.04})
    assert made[-1].synced or any(e.synced for e in made)
    kept = len(made)
    for _ in range(10):  # drained events are reused, not made anew
        clock.lap("data")
    clock.drain()
    assert len(made) <= kept + 1


def rank(r, steps=10, data=0.0, compute=0.1, comm=0.0, other=0.0, samples=160):
    phases = {"data": data, "compute": compute, "comm": comm, "other": other}
    return RankTime(r, steps, sum(phases.values()), samples, phases)


def test_a_slowed_rank_is_the_worst_with_its_skew_though_every_rank_steps_in_lockstep():
    # Rank 2 sleeps 50 ms a step; ranks 0, 1, 3 wait for it in the all-reduce: their steps last as long.
    ranks = [rank(0, comm=0.5), rank(1, comm=0.5), rank(2, other=0.5), rank(3, comm=0.5)]
    anatomy = fold_ranks(ranks)
    assert anatomy.slowest_rank == 2
    assert anatomy.skew_pct == pytest.approx((0.06 - 0.01) / 0.01 * 100)  # busy 60 ms against the median's 10
    assert anatomy.phases["other"].worst_rank == 2 and anatomy.phases["comm"].median_s == pytest.approx(0.05)
    assert anatomy.step_s == pytest.approx(0.06)
    assert anatomy.samples_per_s == pytest.approx(4 * 160 / 0.6)
    assert "slowest rank 2" in anatomy.summary()
    assert fold_ranks([rank(0, steps=0)]) is None


def timing(r, step, data=0.0, compute=0.1, steps=10, t=1000.0):
    phases = {"data": data, "compute": compute}
    seconds = sum(phases.values())
    return make_event("timing", t=t, rank=r, step=step, steps=steps, seconds=seconds, phases=phases,
                      samples=steps * 16, clock="host",
                      total={"steps": step, "seconds": seconds * step / steps, "samples": step * 16,
                             "phases": {k: v * step / steps for k, v in phases.items()}})


def test_timing_events_parse_and_fold_recent_and_whole_run():
    fold = TimingFold()
    for r in (0, 1):
        fold.add(parse_event(timing(r, 20, data=0.05)))
    e = parse_event(timing(0, 20))
    assert isinstance(e, TimingEvent) and e.total_steps == 20 and e.total_phases["compute"] == pytest.approx(0.2)
    assert fold.recent().share("data") == pytest.approx(0.05 / 0.15)
    assert fold.whole_run().ranks[0].steps == 20
    assert parse_event({"kind": "timing", "rank": -1, "steps": 1, "seconds": 1}) is None
    assert parse_event({"kind": "timing", "rank": 0, "steps": 1, "seconds": 1, "phases": {"data": "x"}}).phases == {}


FAKE = (GpuPeaks("Fake 9000", r"Fake 9000", {"bf16": 200.0}, "made up for the test"),)


def test_mfu_from_a_fake_gpu_with_a_known_peak_is_the_hand_computation():
    # 4 GPUs, 10,000 samples/s in all, 6e9 FLOPs a sample: 2,500 x 6e9 = 15 TFLOP/s per GPU of 200.
    t = throughput(10_000.0, 6e9, gpus=4, gpu_model="NVIDIA Fake 9000", dtype="bf16", table=FAKE)
    assert t.per_gpu == pytest.approx(2500.0) and t.tflops_per_gpu == pytest.approx(15.0)
    assert t.mfu == pytest.approx(15.0 / 200.0) and t.why_no_mfu == ""
    # never above 100%: a wrong peak or FLOP count gives no number, and says so
    over = throughput(10_000.0, 6e11, gpus=4, gpu_model="Fake 9000", dtype="bf16", table=FAKE)
    assert over.mfu is None and "above" in over.why_no_mfu
    unknown = throughput(10_000.0, 6e9, gpus=4, gpu_model="Mystery GPU", dtype="bf16", table=FAKE)
    assert unknown.mfu is None and "not in traindeck's peak table" in unknown.why_no_mfu
    assert throughput(10_000.0, 6e9, gpus=4, gpu_model="Fake 9000", dtype="fp32", table=FAKE).why_no_mfu
    cpu = throughput(800.0, 6e9, gpus=0, gpu_model="", dtype="", ranks=2)
    assert cpu.per_gpu == 400.0 and cpu.mfu is None and "no GPU" in cpu.why_no_mfu and cpu.tokens_per_s is None
    # a task that declares its tokens (protein-rcl: residues per sequence) gets tokens/s as well
    assert throughput(800.0, None, gpus=0, gpu_model="", dtype="", tokens_per_sample=256).tokens_per_s == 204_800


@pytest.mark.parametrize("name, dtype, model, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", "H100 SXM", 989.5),
    ("NVIDIA H100 PCIe", "bf16", "H100 PCIe", 756.5),
    ("NVIDIA H200", "bf16", "H200", 989.5),
    ("NVIDIA B200", "bf16", "B200", 2250.0),
    ("NVIDIA A100-SXM4-80GB", "tf32", "A100", 156.0),
    ("NVIDIA L40S", "fp16", "L40S", 362.05),
    ("NVIDIA GeForce RTX 4090", "bf16", "RTX 4090", 165.2),
    ("NVIDIA GeForce RTX 2080 Ti", "fp16", "RTX 2080 Ti", 53.8),
])
def test_the_peak_table_knows_the_guides_gpus(name, dtype, model, tflops):
    peak = peak_for(name, dtype)
    assert (peak.model, peak.tflops) == (model, tflops) and peak.source
    assert mfu(tflops / 2, peak) == (0.5, "")


def test_turing_has_no_bf16_figure_and_says_so():
    peak = peak_for("NVIDIA GeForce RTX 2080 Ti", "bf16")
    assert peak.tflops is None and "no bf16" in peak.why


def monitor(tmp_path, **health):
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in health.items())
    profile = parse_profile(f'[train]\ntask = "tiny"\n[health]\n{lines}\n')
    return HealthMonitor(RunPaths(tmp_path), profile, emit=lambda evs: None, act=lambda a, f: a, from_start=True)


def test_input_bound_fires_once_with_its_fix_after_for_s_and_rearms(tmp_path):
    mon = monitor(tmp_path, input_bound_share=0.3, input_bound_for_s=30)
    status = make_event("status", t=999.0, state="running", num_workers=0)
    out = mon.observe([status] + [timing(r, 10 * i, data=0.2, t=1000.0 + 10 * i) for i in range(1, 3) for r in (0, 1)])
    assert out == []  # high for 10 s only
    out = mon.observe([timing(r, 10 * i, data=0.2, t=1000.0 + 10 * i) for i in range(3, 8) for r in (0, 1)])
    assert [e["rule"] for e in out] == ["input_bound"]
    message = out[0]["message"]
    assert "input-bound" in message and "67%" in message and "num_workers (now 0)" in message
    assert "pin_memory" in message and "persistent_workers" in message and "cores" in message
    healthy = [timing(r, 100 + i, data=0.001, t=1100.0 + i) for i in range(3) for r in (0, 1)]
    assert mon.observe(healthy) == []
    assert mon.observe([timing(r, 200 + 10 * i, data=0.2, t=1200.0 + 10 * i) for i in range(5) for r in (0, 1)])


def test_a_compute_bound_run_is_not_input_bound(tmp_path):
    mon = monitor(tmp_path, input_bound_for_s=0)
    assert mon.observe([timing(r, 10 * i, data=0.01, t=1000.0 + i) for i in range(1, 50) for r in (0, 1)]) == []


def test_report_phase_in_a_users_script_writes_timing_events(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "TIMING_EVERY_S", 0.0)
    now = FakeTime()
    monkeypatch.setattr(report.time, "perf_counter", now)
    reporter = report.configure(tmp_path, rank=0, heartbeat=False)
    try:
        for step in range(1, 4):
            with report.phase("data"):
                now.advance(0.03)
            with report.phase("compute"):
                now.advance(0.06)
            now.advance(0.01)
            report.log(step, loss=1.0)
        reporter.flush()
    finally:
        report.configure(None)
    timings = [e for e in read_all(tmp_path / "events.jsonl") if e["kind"] == "timing"]
    assert len(timings) == 2  # the first log() starts the count
    last = parse_event(timings[-1])
    assert last.steps == 1 and last.seconds == pytest.approx(0.1)
    assert last.phases == pytest.approx({"data": 0.03, "compute": 0.06, "other": 0.01})
    assert last.total_steps == 2


def test_report_phase_outside_traindeck_is_a_no_op():
    report.configure(None)
    with report.phase("data"):
        pass


def test_the_headless_summary_and_runs_table_tell_where_the_time_went(tmp_path):
    from tests.support.fake_runs import make_run_dir
    from training.console.runs import format_runs_table, run_summary
    from training.rundir.events_file import append_events
    from tui.headless.lines import anatomy_lines
    from tui.run_model import RunModel

    events = [make_event("status", t=999.0, state="running", world_size=2, device="cpu", flops_per_sample=4000.0,
                         gpus=0),
              make_event("metric", t=1000.0, step=20, split="train", values={"loss": 1.0, "samples_per_s": 640.0})]
    events += [timing(r, 20, data=0.05 if r else 0.01) for r in (0, 1)]
    model = RunModel()
    model.apply_events(events)
    lines = anatomy_lines(model)
    assert lines[0].startswith("  time: step ") and "input wait" in lines[0] and "slowest rank 1" in lines[0]
    assert lines[1] == "  throughput: 640 samples/s, 320 per rank, no MFU: no GPU: MFU is a GPU measure"
    assert model.header(1000.0).per_gpu is None  # per GPU only where there are GPUs
    model.apply_events([make_event("status", t=1001.0, state="running", gpus=0, tokens_per_sample=128)])
    assert "81,920 tokens/s" in anatomy_lines(model)[1]

    paths = make_run_dir(tmp_path / "runs", "20261201-120000-cpu", profile_name="cpu", mode="ddp", state="finished")
    append_events(paths.events, events)
    summary = run_summary(paths)
    assert summary.anatomy == parse_fold(events).whole_run().summary()
    assert f"  time {summary.anatomy}" in format_runs_table([summary]).splitlines()


def parse_fold(events):
    fold = TimingFold()
    for e in events:
        parsed = parse_event(e)
        if isinstance(parsed, TimingEvent):
            fold.add(parsed)
    return fold


def test_scaling_sizes_and_a_sizes_speed_from_its_ranks_totals():
    from training.console.scaling import ScalingResult, format_scaling, size_speed, sizes

    assert sizes(1) == [1] and sizes(8) == [1, 2, 4, 8] and sizes(6) == [1, 2, 4, 6]
    events = [timing(r, 20, data=0.02) for r in (0, 1)]
    for e in events:  # eval and checkpoint are not the steps' speed
        e["total"]["phases"]["eval"] = 5.0
        e["total"]["seconds"] += 5.0
    size = size_speed(events, 2)
    assert size.step_s == pytest.approx(0.012) and size.samples_per_s == pytest.approx(2 * 320 / 0.24)
    assert size.shares["data"] == pytest.approx(0.02 / 0.12) and "eval" not in size.shares
    one = size_speed([timing(0, 20, data=0.02)], 1)
    one.speedup, one.efficiency, size.speedup, size.efficiency = 1.0, 1.0, 1.6, 0.8
    text = format_scaling(ScalingResult("cpu", 20, 16, "rank", [one, size], 0.0))
    assert "1.60x of 2x" in text and " 80%" in text


def test_the_time_view_shows_the_last_interval_while_training_and_the_whole_run_once_ended():
    from tui.run_model import RunModel

    # The last interval: 4 steps whose time is mostly the final evaluation (the tail of a run).
    tail = make_event("timing", t=1001.0, rank=0, step=24, steps=4, seconds=0.4, phases={"compute": 0.04, "eval": 0.36},
                      samples=64, clock="host",
                      total={"steps": 24, "seconds": 2.4, "samples": 384, "phases": {"compute": 2.04, "eval": 0.36}})
    model = RunModel()
    model.apply_events([make_event("status", t=999.0, state="running", world_size=1), tail])
    assert model.live and model.anatomy().share("eval") == pytest.approx(0.9)  # where the time goes now
    model.apply_events([make_event("status", t=1002.0, state="finished")])
    assert not model.live and model.anatomy().share("eval") == pytest.approx(0.15)  # over the whole run
    assert model.anatomy().step_s == pytest.approx(0.1)
