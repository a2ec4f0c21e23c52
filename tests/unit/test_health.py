"""The health rules on synthetic event streams: quiet on healthy runs, once per incident on sick ones,
and the actions they ask for."""

from __future__ import annotations

import json
import math
import random

import pytest

from training.monitor.health import HealthMonitor, is_nonfinite
from training.profile import parse_profile
from training.rundir import RunPaths
from training.rundir.events_file import append_events, make_event

T0 = 1_000_000.0


def profile(**health):
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in health.items())
    return parse_profile(f'[train]\ntask = "tiny"\n[health]\n{lines}\n')


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, action, finding):
        self.calls.append((action, finding.rule))
        return action


def monitor(tmp_path, watchdog=None, **health):
    paths = RunPaths(tmp_path)
    act = Recorder()
    mon = HealthMonitor(paths, profile(**health), emit=lambda evs: None, act=act, watchdog=watchdog)
    return mon, act


def train(step, loss, sps=1000.0, t=None, **extra):
    return make_event("metric", t=T0 + step if t is None else t, step=step, epoch=1, split="train",
                      values={"loss": loss, "lr": 1e-3, "samples_per_s": sps, **extra})


def val(step, loss):
    return make_event("metric", t=T0 + step, step=step, epoch=1, split="val", values={"loss": loss, "acc": 0.5})


def healthy_stream(n=400, seed=0):
    """A loss that falls with noise, throughput that wobbles, val loss that falls: a normal run."""
    rng = random.Random(seed)
    events = []
    for i in range(1, n + 1):
        loss = 2.0 * math.exp(-i / 150) + 0.1 + rng.uniform(-0.05, 0.05)
        events.append(train(i * 10, loss, sps=1000 * rng.uniform(0.8, 1.2), grad_norm=rng.uniform(0.5, 3)))
        if i % 40 == 0:
            events.append(val(i * 10, 1.5 * math.exp(-i / 200) + 0.2))
    return events


def test_nonfinite_strings_are_read_as_events_store_them():
    assert all(is_nonfinite(v) for v in ("nan", "inf", "-inf", float("nan"), float("-inf")))
    assert not any(is_nonfinite(v) for v in (1.0, 0, "loss", None, "1.5"))
    # what the writer stores
    assert make_event("metric", values={"loss": float("nan")})["values"]["loss"] == "nan"


def test_a_healthy_run_is_quiet(tmp_path):
    mon, act = monitor(tmp_path, throughput_for_s=30)
    assert mon.observe(healthy_stream()) == []
    assert act.calls == []


@pytest.mark.parametrize("key,value", [("loss", "nan"), ("grad_norm", "inf"), ("loss/ce", "-inf")])
def test_nan_fires_once_per_incident_with_the_stop_action(tmp_path, key, value):
    mon, act = monitor(tmp_path)
    events = [train(s, 1.0) for s in range(10, 60, 10)]
    bad = train(60, 1.0)
    bad["values"][key] = value
    events += [bad] + [train(s, "nan", grad_norm="nan") for s in range(70, 200, 10)]
    out = mon.observe(events)
    assert len(out) == 1, out
    (e,) = out
    assert (e["kind"], e["rule"], e["value"], e["step"], e["metric"]) == ("health", "nan", value, 60, key)
    assert (e["asked"], e["action"]) == ("stop", "stop")
    assert "at step 60" in e["message"]
    assert act.calls == [("stop", "nan")]
    # a finite stretch re-arms it: the next NaN is a new incident (but the run is already stopping)
    out = mon.observe([train(300, 0.5), train(310, "nan")])
    assert [(e["rule"], e["action"]) for e in out] == [("nan", "warn")]


def test_nan_in_a_val_metric_is_named_as_val(tmp_path):
    mon, _ = monitor(tmp_path, nan="warn")
    (e,) = mon.observe([train(10, 1.0), val(10, "nan")])
    assert e["message"].startswith("val loss is nan") and e["action"] == "warn"


def test_divergence_fires_once_when_the_ema_passes_k_times_its_best(tmp_path):
    mon, act = monitor(tmp_path, divergence_factor=3.0, divergence_smoothing=0.5, divergence_warmup=5)
    events = [train(s, 1.0 - s / 1000) for s in range(10, 200, 10)]  # best EMA ~0.81
    assert mon.observe(events) == []
    blowup = [train(s, 1.0 + (s - 200) / 5) for s in range(200, 400, 10)]
    out = mon.observe(blowup)
    assert [e["rule"] for e in out] == ["divergence"]
    e = out[0]
    assert e["value"] > e["threshold"] > 3 * 0.8
    assert e["action"] == "warn" and act.calls == []


def test_divergence_is_quiet_on_a_noisy_falling_loss_and_on_a_spike(tmp_path):
    mon, _ = monitor(tmp_path)
    events = [train(s, 1.0 - s / 1000) for s in range(10, 300, 10)]
    events.append(train(300, 5.0))  # one spike: the EMA absorbs it
    events += [train(s, 0.7) for s in range(310, 400, 10)]
    assert mon.observe(events) == []


def test_overfit_fires_when_val_rises_n_times_while_train_falls(tmp_path):
    mon, _ = monitor(tmp_path, overfit_evals=3)
    events = []
    for i, v in enumerate([1.0, 0.9, 0.95, 1.0, 1.1, 1.2]):
        events += [train(100 * i + 50, 1.0 - 0.1 * i), val(100 * i + 99, v)]
    out = mon.observe(events)
    assert [(e["rule"], e["step"]) for e in out] == [("overfit", 499)]
    assert "rose for 3 evaluations" in out[0]["message"]


def test_overfit_is_quiet_when_train_loss_rises_too(tmp_path):
    mon, _ = monitor(tmp_path, overfit_evals=2)
    events = []
    for i, v in enumerate([1.0, 1.1, 1.2, 1.3]):
        events += [train(100 * i + 50, 1.0 + 0.1 * i), val(100 * i + 99, v)]  # both rise: divergence, not overfit
    assert [e for e in mon.observe(events) if e["rule"] == "overfit"] == []


def test_throughput_drop_fires_after_the_time_and_once(tmp_path):
    mon, _ = monitor(tmp_path, throughput_fraction=0.5, throughput_for_s=60)
    events = [train(s, 1.0, sps=1000, t=T0 + s) for s in range(10, 200, 10)]
    events += [train(s, 1.0, sps=300, t=T0 + s) for s in range(200, 400, 10)]
    out = mon.observe(events)
    assert [(e["rule"], e["step"]) for e in out] == [("throughput", 260)]
    assert out[0]["value"] == 300 and out[0]["threshold"] == 500


def test_a_brief_dip_or_a_pause_is_no_throughput_drop(tmp_path):
    mon, _ = monitor(tmp_path, throughput_fraction=0.5, throughput_for_s=60)
    events = [train(s, 1.0, sps=1000, t=T0 + s) for s in range(10, 200, 10)]
    events += [train(s, 1.0, sps=100, t=T0 + s) for s in range(200, 240, 10)]  # 30 s low
    events += [train(s, 1.0, sps=1000, t=T0 + s) for s in range(240, 300, 10)]
    events += [train(300, 1.0, sps=100, t=T0 + 300),
               make_event("log", t=T0 + 301, message="paused", control="pause"),
               make_event("log", t=T0 + 500, message="resumed", control="resume"),
               train(510, 1.0, sps=1000, t=T0 + 510)]
    assert mon.observe(events) == []


class FakeWatchdog:
    def __init__(self):
        self.due = []

    def check(self, now):
        out, self.due = self.due, []
        return out


def test_the_watchdog_hang_is_the_stall_rule_with_its_action(tmp_path):
    wd = FakeWatchdog()
    mon, act = monitor(tmp_path, watchdog=wd, stall="stop")
    wd.due = [make_event("log", level="warning", message="rank 1 has not finished a step for 61 s",
                         watchdog="hang", rank=1, ranks=[1], step=7, stalled_s=61.0)]
    (e,) = mon.check(T0)
    assert (e["kind"], e["watchdog"], e["rule"], e["action"], e["rank"]) == ("log", "hang", "stall", "stop", 1)
    assert act.calls == [("stop", "stall")]
    assert mon.check(T0 + 1) == []


def test_rules_set_off_are_silent(tmp_path):
    wd = FakeWatchdog()
    mon, _ = monitor(tmp_path, watchdog=wd, nan="off", stall="off")
    wd.due = [make_event("log", level="warning", message="x", watchdog="hang", rank=0, ranks=[0], step=1)]
    assert mon.observe([train(10, "nan")]) == [] and mon.check(T0) == []


def test_a_new_worker_life_resets_the_baselines(tmp_path):
    mon, _ = monitor(tmp_path, divergence_warmup=2, divergence_smoothing=0.0)
    mon.observe([train(10, 0.1), train(20, 0.1)])
    # a resumed run with another loss scale is not a divergence
    mon.observe([make_event("status", state="running", start_step=20)])
    assert mon.observe([train(30, 1.0), train(40, 1.0), train(50, 1.0)]) == []


def test_the_thread_path_reads_new_events_and_emits_health_events(tmp_path):
    paths = RunPaths(tmp_path)
    append_events(paths.events, [train(5, "nan")])  # an earlier life: not read
    emitted = []
    mon = HealthMonitor(paths, profile(nan="warn"), emit=emitted.extend)
    append_events(paths.events, [train(10, 1.0), train(20, "nan")])
    mon.poll(T0)
    assert [(e["rule"], e["step"]) for e in emitted] == [("nan", 20)]
    mon.poll(T0 + 1)
    assert len(emitted) == 1


# ---- rewind -----------------------------------------------------------------------------------

def test_rewind_is_a_nan_action_for_built_in_tasks_only(tmp_path):
    from training.profile import ProfileError

    p = profile(nan="rewind", rewind_max=2, rewind_lr_factor=0.5)
    assert (p.health.nan, p.health.rewind_max, p.health.rewind_lr_factor) == ("rewind", 2, 0.5)
    with pytest.raises(ProfileError, match="only a built-in task"):
        script = tmp_path / "train.py"
        script.write_text("print('hi')\n")
        parse_profile(f'[train]\nscript = "{script}"\n[health]\nnan = "rewind"\n')
    with pytest.raises(ProfileError, match="health.divergence"):
        profile(divergence="rewind")  # the other rules have nothing to rewind to
    with pytest.raises(ProfileError, match="rewind_lr_factor"):
        profile(rewind_lr_factor=0)


def test_the_supervisor_rewinds_at_most_rewind_max_times_then_save_stops(tmp_path):
    from training.monitor.health import Finding
    from training.rundir.control import send  # noqa: F401 - the channel the rewind travels through
    from training.supervise.run_supervisor import Supervisor

    paths = RunPaths(tmp_path)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(paths)
    sup.health.profile = profile(nan="rewind", rewind_max=2)
    finding = Finding("nan", "loss is nan at step 25", value="nan", step=25)
    # No checkpoint yet: nothing to rewind to.
    assert sup.health.act("rewind", finding) == "save-stop"
    assert json.loads(paths.control.read_text())["action"] == "save-stop"
    sup.health.stopped_by = sup.health.save_stop_deadline = None
    (paths.checkpoints / "last.pt").write_bytes(b"x")
    actions = [sup.health.act("rewind", finding) for _ in range(3)]
    assert actions == ["rewind", "rewind", "save-stop"]
    assert json.loads(paths.control.read_text())["action"] == "save-stop"
    assert sup.health.stopped_by and sup.health.stopped_by["rule"] == "nan"


def test_the_rewind_count_survives_a_resume_in_run_json(tmp_path, monkeypatch):
    """rewind_max bounds the run, not one supervisor: the count is in run.json, which --resume keeps,
    and the next supervisor goes on from it."""
    from training.console import runs
    from training.monitor.health import Finding
    from training.rundir import read_run_json, update_run_json, write_json_atomic
    from training.rundir.processes import ProcRef
    from training.supervise.run_supervisor import Supervisor

    paths = RunPaths(tmp_path / "run")
    paths.checkpoints.mkdir(parents=True)
    (paths.checkpoints / "last.pt").write_bytes(b"x")
    p = profile(nan="rewind", rewind_max=2)
    paths.profile.write_text(p.to_toml())
    write_json_atomic(paths.run_json, {"id": paths.id, "state": "running", "supervisor": {"pid": None}})
    finding = Finding("nan", "loss is nan at step 25", value="nan", step=25)
    first = Supervisor(paths)
    first.health.profile = p
    assert first.health.act("rewind", finding) == "rewind"
    assert read_run_json(paths)["health_rewinds"] == 1
    # The run stops (the box rebooted, the user stopped it) and is resumed: a new supervisor.
    update_run_json(paths, state="stopped")
    monkeypatch.setattr(runs, "_spawn_supervisor", lambda paths: ProcRef(pid=1, create_time=0.0))
    runs.resume_run(paths)
    assert read_run_json(paths)["health_rewinds"] == 1 and read_run_json(paths)["resumes"] == 1
    second = Supervisor(paths)
    second.health.profile = p
    assert [second.health.act("rewind", finding) for _ in range(2)] == ["rewind", "save-stop"]
    assert read_run_json(paths)["health_rewinds"] == 2
    # A run recorded before the count was kept reads as none done.
    from training.rundir.records import RunRecord
    assert RunRecord.from_json({"id": "x"}).health_rewinds == 0
    assert RunRecord.from_json({"health_rewinds": "junk"}).health_rewinds == 0


def test_a_rewind_drops_the_superseded_points_from_the_series_and_the_run_model():
    from training.rundir.series import SeriesStore
    from tui.run_model import RunModel

    events = [train(s, 1.0 / s) for s in range(5, 55, 5)] + [val(20, 0.4), val(40, 0.3)]
    rewind = make_event("log", level="warning", message="rewound", control="rewind", from_step=50, to_step=20)
    events += [rewind] + [train(s, 0.5 / s) for s in range(25, 45, 5)]
    store = SeriesStore()
    store.add_events(events)
    xs, ys = store.view(("train", "loss"), width=1000)
    assert xs == [5, 10, 15, 20, 25, 30, 35, 40]
    assert ys[-1] == pytest.approx(0.5 / 40)  # the kept branch's, not the superseded 1/40
    assert store.view(("val", "loss"), width=1000)[0] == [20]
    model = RunModel()
    model.apply_events(events[:-4])  # up to the rewind
    assert (model.rewinds, model.step) == ([(50, 20)], 20)
    model.apply_events(events[-4:])
    assert model.step == 40


def test_a_rewind_truncates_a_series_that_has_merged_into_buckets():
    from training.rundir.series import Series

    s = Series(capacity=4, recent=4)
    for step in range(1, 41):
        s.add(step, 1.0, float(step), 0.0)
    dropped = s.truncate(20)
    assert dropped > 0 and s.last is not None and s.last[0] <= 20
    xs, _ = s.view(1000)
    assert max(xs) <= 20


# ---- the telemetry rules: memory creep and throttling ------------------------------------------

def gpu(index, mem=20_000.0, throttle=(), **extra):
    return {"index": index, "name": "NVIDIA B200", "mem_used_mib": mem, "mem_total_mib": 183_000,
            "sm_clock_mhz": 1980, "sm_clock_max_mhz": 1980, "temp_c": 60,
            "throttle": None if throttle is None else list(throttle), "error": None, "ranks": [index], **extra}


def sample(t, *gpus):
    return make_event("telemetry", t=T0 + t, source="nvml", host={}, gpus=list(gpus))


def epoch_end(t, epoch, step=None):
    return make_event("epoch", t=T0 + t, epoch=epoch, epochs=20, step=step or epoch * 100, seconds=10.0)


def epochs_stream(peaks, seed=0, every_s=1.0, epoch_s=10.0, gpu1=None):
    """(samples, epoch events): GPU 0's memory wobbles under each epoch's peak (`peaks[i]` in epoch
    i+1; the first epoch climbs to it from a quarter, the allocator filling); GPU 1 holds `gpu1`."""
    rng = random.Random(seed)
    samples, ends = [], []
    t = 0.0
    for i, peak in enumerate(peaks):
        n = int(epoch_s / every_s)
        for k in range(n):
            t += every_s
            mem = peak * (0.25 + 0.75 * (k + 1) / n) if i == 0 else peak * rng.uniform(0.97, 1.0)
            if k == n // 2:
                mem = peak
            gpus = [gpu(0, round(mem))] + ([gpu(1, gpu1)] if gpu1 is not None else [])
            samples.append(sample(t, *gpus))
        ends.append(epoch_end(t + 0.1, i + 1))
    return samples, ends


def feed(mon, samples, events):
    """Telemetry and events in time order, as the supervisor's polls interleave them."""
    out = []
    for item in sorted(samples + events, key=lambda e: e["t"]):
        out += mon.observe_telemetry([item]) if item["kind"] == "telemetry" else mon.observe([item])
    return out


def test_memory_creeping_up_across_epochs_fires_once_per_gpu_that_leaks(tmp_path):
    mon, act = monitor(tmp_path, memory_creep="pause")
    # +5% per epoch from epoch 2 on; GPU 1 flat. Epochs 2..5 rise 15.8% in all (limit 10% over 3).
    peaks = [20_000 * 1.05 ** max(0, i - 1) for i in range(1, 9)]
    samples, ends = epochs_stream(peaks, gpu1=30_000)
    fired = feed(mon, samples, ends)
    assert [(e["rule"], e["gpu"], e["rank"], e["step"], e["action"]) for e in fired] == \
        [("memory_creep", 0, 0, 500, "pause")], fired
    assert "GPU 0 (rank 0) memory crept up 16% over 3 epochs" in fired[0]["message"]
    assert fired[0]["value"] == pytest.approx(peaks[4], abs=1)
    assert act.calls == [("pause", "memory_creep")]


def test_memory_that_levels_off_after_the_first_epoch_or_creeps_slowly_is_quiet(tmp_path):
    mon, _ = monitor(tmp_path)
    # The allocator fills during epoch 1 (a quarter to full), then the peak wobbles or grows 1% an epoch.
    assert feed(mon, *epochs_stream([30_000] + [30_000 + (i % 3) * 50 for i in range(12)], seed=1)) == []
    mon, _ = monitor(tmp_path)
    assert feed(mon, *epochs_stream([30_000 * 1.01 ** i for i in range(12)], seed=2)) == []
    # Epoch 2 higher than epoch 1 (the warm-up ran over the boundary) is no creep either.
    mon, _ = monitor(tmp_path)
    assert feed(mon, *epochs_stream([10_000, 16_000, 16_000, 16_100, 16_050, 16_000], seed=3)) == []


def test_memory_creep_rearms_after_an_epoch_that_did_not_rise(tmp_path):
    mon, _ = monitor(tmp_path, memory_creep_epochs=2, memory_creep_fraction=0.05)
    peaks = [10_000, 10_000, 11_000, 12_000, 13_000, 12_500, 13_500, 14_500, 15_500]
    fired = feed(mon, *epochs_stream(peaks))
    # Epochs 2->4 rise 20%: fires at epoch 4; still rising at 5: the same firing; 6 falls: re-armed;
    # 6->8 rise 16%: it fires again, 20 s after the re-arm: an update of the same incident.
    assert [e["step"] for e in fired] == [400, 800]
    assert fired[0]["incident"] == fired[1]["incident"] and "update" not in fired[0]
    assert (fired[1]["update"], fired[1]["firings"]) == (True, 2)


def test_an_epoch_ends_at_its_time_the_samples_after_it_are_the_next_epochs(tmp_path):
    mon, _ = monitor(tmp_path, memory_creep_epochs=2)
    samples, ends = epochs_stream([10_000, 10_000, 10_000, 10_000])
    # A spike just after each epoch's end (the next epoch's start) read before that end's event.
    spikes = [sample(e["t"] - T0 + 0.05, gpu(0, 10_000 * (1.3 + 0.2 * i))) for i, e in enumerate(ends)]
    out, fed = [], 0
    for end, spike in zip(ends, spikes, strict=True):
        upto = sum(1 for s in samples if s["t"] <= end["t"])
        out += mon.observe_telemetry(samples[fed:upto] + [spike]) + mon.observe([end])
        fed = upto
    # Each spike counts in the epoch after it: peaks 10k | 13k | 15k | 17k (epoch 1 not judged), not
    # 13k | 15k | 17k | 19k as it would if the samples read before an end's event all counted in it.
    assert [e["value"] for e in out] == [17_000.0]


def throttle_stream(seconds, reasons_at, index=0, every_s=1.0, start=0.0):
    """A sample per second of one GPU; reasons_at(t) -> its throttle reasons then."""
    return [sample(start + k * every_s, gpu(index, throttle=reasons_at(start + k * every_s)))
            for k in range(int(seconds / every_s))]


def test_sustained_thermal_throttling_fires_once_after_the_time(tmp_path):
    mon, act = monitor(tmp_path, throttle="warn", throttle_for_s=300)
    # Hot for 400 s, with one clean sample in ten (the clocks come back for a moment).
    samples = throttle_stream(400, lambda t: () if int(t) % 10 == 0 else ("sw_thermal_slowdown",))
    mon.observe([train(1200, 1.0)])
    fired = mon.observe_telemetry(samples)
    assert [(e["rule"], e["gpu"], e["step"], e["action"]) for e in fired] == [("throttle", 0, 1200, "warn")]
    assert fired[0]["t"] - T0 < 400  # it fired as soon as 300 s were covered, not at the end
    assert "GPU 0 (rank 0) is throttled (sw_thermal_slowdown) in 90% of its samples" in fired[0]["message"]
    assert act.calls == []


def test_brief_or_intermittent_throttling_idle_and_the_power_cap_are_quiet(tmp_path):
    mon, _ = monitor(tmp_path, throttle_for_s=300)
    healthy = []
    healthy += throttle_stream(200, lambda t: ("gpu_idle",) if t < 20 else ())  # idle at the start
    healthy += throttle_stream(60, lambda t: ("hw_thermal_slowdown",), start=200)  # a minute hot
    healthy += throttle_stream(600, lambda t: ("sw_thermal_slowdown",) if int(t) % 2 else (), start=260)  # half
    healthy += throttle_stream(900, lambda t: ("sw_power_cap",), index=1)  # at its power limit all along
    healthy += throttle_stream(900, lambda t: None, index=2)  # N/A: no throttle reasons on this GPU
    healthy.sort(key=lambda s: s["t"])
    assert mon.observe_telemetry(healthy) == []
    # The power cap counts when the profile says so.
    mon, _ = monitor(tmp_path, throttle_for_s=300, throttle_power_cap=True)
    fired = mon.observe_telemetry(healthy)
    assert [(e["gpu"], e["metric"]) for e in fired] == [(1, "sw_power_cap")]


def test_throttling_rearms_only_when_the_gpu_cooled_down(tmp_path):
    mon, _ = monitor(tmp_path, throttle_for_s=100)
    hot = ("hw_slowdown", "hw_power_brake_slowdown")
    stream = (throttle_stream(200, lambda t: hot)
              + throttle_stream(60, lambda t: hot if int(t) % 3 else (), start=200)  # 67%: not over
              + throttle_stream(100, lambda t: (), start=260)  # cool: re-armed
              + throttle_stream(150, lambda t: hot, start=360))
    fired = mon.observe_telemetry(stream)
    # The first at 100 s; the second once 80% of the 100 s before it are hot again (360..440 of 340..440),
    # an update: the GPU was cool for less than incident_clear_s.
    assert [round(e["t"] - T0) for e in fired] == [100, 440]
    assert [e.get("update", False) for e in fired] == [False, True]
    assert fired[0]["metric"] == "hw_slowdown, hw_power_brake_slowdown"


def test_the_telemetry_rules_set_off_are_silent_and_a_healthy_run_with_telemetry_is_quiet(tmp_path):
    mon, _ = monitor(tmp_path, memory_creep="off", throttle="off")
    samples, ends = epochs_stream([10_000 * 1.2 ** i for i in range(8)])
    assert feed(mon, samples, ends) == []
    assert mon.observe_telemetry(throttle_stream(400, lambda t: ("sw_thermal_slowdown",))) == []
    # Every rule at its defaults over a healthy run's events and telemetry together.
    mon, act = monitor(tmp_path)
    events = healthy_stream()
    t_end = events[-1]["t"] - T0
    ends = [epoch_end(t_end * k / 10, k) for k in range(1, 11)]
    rng = random.Random(4)
    samples = [sample(float(t), gpu(0, 40_000 * rng.uniform(0.97, 1.0), throttle=("sw_power_cap",) if t % 4 else ()),
                      gpu(1, 40_000 * rng.uniform(0.97, 1.0), throttle=()))
               for t in range(1, int(t_end))]
    assert feed(mon, samples, events + ends) == []
    assert act.calls == []


def test_the_thread_path_reads_telemetry_jsonl_too(tmp_path):
    paths = RunPaths(tmp_path)
    append_events(paths.telemetry, throttle_stream(50, lambda t: ("sw_thermal_slowdown",)))  # an earlier life
    emitted = []
    mon = HealthMonitor(paths, profile(throttle_for_s=30), emit=emitted.extend)
    append_events(paths.events, [train(10, 1.0)])
    assert mon.poll(T0 + 100) == []
    append_events(paths.telemetry, throttle_stream(40, lambda t: ("sw_thermal_slowdown",), start=100))
    mon.poll(T0 + 200)
    assert [(e["rule"], e["gpu"], e["step"]) for e in emitted] == [("throttle", 0, 10)]
    mon.poll(T0 + 201)
    assert len(emitted) == 1


def fake_nvml_samples(tmp_path, fake, seconds, every_s=1.0):
    """Telemetry lines as the supervisor's sampler builds them from the fake NVML, one every every_s
    of a made-up clock (the sampler stamps the wall time; the rules read the samples' t)."""
    from training.monitor.gpu import GpuBackend
    from training.monitor.telemetry import TelemetrySampler

    sampler = TelemetrySampler(RunPaths(tmp_path), 1.0, dict, backend=GpuBackend(nvml=fake))
    sampler.source = "fake-nvml"  # what start() decides for this backend, without the thread
    return [dict(sampler.sample(), t=T0 + k * every_s) for k in range(1, int(seconds / every_s) + 1)]


def test_the_fake_nvml_box_is_quiet_and_its_hot_gpu_and_leak_trip_the_rules(tmp_path):
    """The same rules over what training.monitor.gpu and the telemetry sampler make of NVML (the
    test suite's fake): a normal busy B200 (at times at its power cap or 66 C) stays quiet; a GPU
    whose cooling fails and a run that leaks memory are told."""
    from tests.fixtures import fake_nvml

    mon, _ = monitor(tmp_path)
    samples = fake_nvml_samples(tmp_path, fake_nvml.eight_b200(pids=range(8)), 400)
    assert any("sw_power_cap" in g["throttle"] or "sw_thermal_slowdown" in g["throttle"]
               for s in samples for g in s["gpus"])  # the fake throttles now and then, as real GPUs do
    ends = [epoch_end(k * 40.5, k) for k in range(1, 10)]
    assert feed(mon, samples, ends) == []

    mon, _ = monitor(tmp_path)
    fired = mon.observe_telemetry(fake_nvml_samples(tmp_path, fake_nvml.hot_box(), 400))
    assert [(e["rule"], e["gpu"], e["metric"]) for e in fired] == [("throttle", 1, "sw_thermal_slowdown")]

    mon, _ = monitor(tmp_path)
    samples = fake_nvml_samples(tmp_path, fake_nvml.leaky(), 250)  # +40 MiB a second, epochs of 40 s
    fired = feed(mon, samples, [epoch_end(k * 40.5, k) for k in range(1, 7)])
    # Epoch 1 is the warm-up; the peaks of epochs 2..5 rise 20%: told at the end of epoch 5.
    assert [(e["rule"], e["gpu"], e["step"]) for e in fired] == [("memory_creep", 0, 500)]


def test_the_no_false_alarm_check_of_the_suites_healthy_runs_sees_every_firing(tmp_path):
    from tests.support.live_runs import assert_no_health_alarms, health_firings

    paths = RunPaths(tmp_path)
    append_events(paths.events, healthy_stream(20) + [
        make_event("log", level="info", message="rank 1 is moving again", watchdog="recovered", rank=1)])
    assert_no_health_alarms(tmp_path)
    append_events(paths.events, [make_event("log", level="warning", message="rank 1 is slow", watchdog="straggler",
                                            rule="straggler", action="warn", rank=1)])
    with pytest.raises(AssertionError, match="straggler at step None: rank 1 is slow"):
        assert_no_health_alarms(paths)
    append_events(paths.events, [make_event("health", rule="throttle", step=7, message="GPU 0 is throttled")])
    assert [e["rule"] for e in health_firings(paths)] == ["straggler", "throttle"]


# ---- a multi-node run: the head's monitor reads every node's files ------------------------------

def two_nodes(tmp_path, **health):
    """The head (gpu-a) and gpu-b's copy in nodes/gpu-b/, the monitor over both."""
    from training.rundir.node_views import node_dirs

    paths = RunPaths(tmp_path)
    nodes = node_dirs(paths, ["gpu-a", "gpu-b"])
    nodes[1].paths.root.mkdir(parents=True)
    emitted = []
    mon = HealthMonitor(paths, profile(**health), emit=emitted.extend, nodes=nodes)
    return mon, nodes[0].paths, nodes[1].paths, emitted


def test_gpu_0_of_each_node_is_its_own_gpu_and_a_finding_names_the_host(tmp_path):
    mon, head, node_b, emitted = two_nodes(tmp_path, memory_creep="warn")
    peaks = [20_000 * 1.05 ** max(0, i - 1) for i in range(1, 9)]
    creeping, ends = epochs_stream(peaks)
    flat, _ = epochs_stream([20_000] * 8)
    # Both nodes' GPU 0 (rank 0 on gpu-a, rank 2 on gpu-b); only gpu-b's creeps. Rank 0 writes the epochs.
    for s in flat:
        s["gpus"][0]["ranks"] = [0]
    for s in creeping:
        s["gpus"][0]["ranks"] = [2]
    append_events(head.telemetry, flat)
    append_events(node_b.telemetry, creeping)
    append_events(head.events, ends)
    mon.poll(T0 + 1000)
    [fired] = emitted
    assert (fired["rule"], fired["gpu"], fired["rank"], fired["node"]) == ("memory_creep", 0, 2, "gpu-b")
    assert fired["message"].startswith("GPU 0 (rank 2) on gpu-b memory crept up")


def test_rank_0s_metrics_on_another_node_are_judged_by_the_head(tmp_path):
    mon, head, node_b, emitted = two_nodes(tmp_path, nan="warn")
    append_events(node_b.events, [train(10, 1.0), train(20, "nan")])
    mon.poll(T0)
    assert [(e["rule"], e["step"]) for e in emitted] == [("nan", 20)]


def test_a_watchdog_finding_on_another_node_keeps_its_host(tmp_path):
    wd = FakeWatchdog()
    mon, act = monitor(tmp_path, watchdog=wd, stall="warn")
    wd.due = [make_event("log", level="warning", message="rank 2 on gpu-b has not finished a step for 61 s",
                         watchdog="hang", rank=2, ranks=[2], step=7, stalled_s=61.0, node="gpu-b")]
    (e,) = mon.check(T0)
    assert (e["rule"], e["rank"], e["node"]) == ("stall", 2, "gpu-b")


# ---- what a person would call divergence and overfitting; incidents --------------------------

def converging_to(floor, steps, seed, start=4.0):
    """A train loss that falls from `start` to `floor` with multiplicative noise (x0.4 to x2.7), and
    near the floor one batch in fifty is a hard one, 30x the rest: late, its EMA wanders several
    times its best, as a loss near zero does."""
    rng = random.Random(seed)
    return [train(s, (start * math.exp(-s / 300) + floor * (30 if rng.random() < 0.02 else 1))
                  * math.exp(rng.uniform(-1, 1))) for s in range(1, steps + 1)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_loss_converging_to_1e_6_with_noise_never_fires_divergence(tmp_path, seed):
    events = converging_to(1e-6, 6000, seed)
    mon, act = monitor(tmp_path, divergence="stop")
    assert mon.observe(events) == [] and act.calls == []
    # The ratio alone (what the rule was) calls that noise divergence: the stream does test the bar.
    mon, _ = monitor(tmp_path, divergence_early_fraction=0)
    assert [e["rule"] for e in mon.observe(events)][:1] == ["divergence"]


def test_a_loss_exploding_from_4_to_1e5_fires_within_the_first_steps_after_the_warm_up(tmp_path):
    mon, act = monitor(tmp_path, divergence="stop")  # warm-up 10 points, EMA 0.9 (the defaults)
    events = [train(s, 4.0 * 1e5 ** ((s - 1) / 40)) for s in range(1, 41)]  # 4 -> 4e5 in 40 steps
    out = mon.observe(events)
    assert [e["rule"] for e in out] == ["divergence"]
    assert out[0]["step"] <= 10 + 5, out[0]
    assert out[0]["action"] == "stop" and act.calls == [("stop", "divergence")]
    assert "above 0.5x the run's early loss" in out[0]["message"]


def test_a_stated_floor_replaces_the_early_loss_bar(tmp_path):
    # A run that starts near its floor (fine-tuning at 0.02): the early-loss bar would be 0.01;
    # the profile says a loss under 0.5 is no divergence.
    events = [train(s, 0.02) for s in range(1, 30)] + [train(s, 0.2) for s in range(30, 80)]
    mon, _ = monitor(tmp_path, divergence_smoothing=0.0)
    assert [e["rule"] for e in mon.observe(events)] == ["divergence"]
    mon, _ = monitor(tmp_path, divergence_smoothing=0.0, divergence_floor=0.5)
    assert mon.observe(events) == []
    assert mon.observe([train(80, 0.9)])[0]["message"].count("above divergence_floor 0.5") == 1


def test_a_resumed_run_measures_large_against_the_runs_early_loss_in_events_jsonl(tmp_path):
    paths = RunPaths(tmp_path)
    append_events(paths.events, [train(s, 4.0 - s / 100) for s in range(1, 50)])  # the first life
    late = converging_to(1e-5, 600, seed=3, start=0.0)  # the resumed life: noise around 1e-5
    mon = HealthMonitor(paths, profile(), emit=lambda evs: None)
    assert mon.observe([make_event("status", state="running")] + late) == []


def test_a_slowly_overfitting_run_raises_one_overfit_incident_not_one_per_dip(tmp_path):
    # The run: val 0.41 -> 6.6 over 400 evaluations, one every 2 s, with noise; train falls.
    rng = random.Random(5)
    mon, act = monitor(tmp_path, overfit="pause")
    events, vals = [], []
    for epoch in range(400):
        vals.append(0.41 * (6.6 / 0.41) ** (epoch / 399) * (1 + rng.uniform(-0.04, 0.04)))
        events.append(train(epoch, 1.0 / (1 + epoch), t=T0 + 2 * epoch))
        events.append(dict(val(epoch, vals[-1]), t=T0 + 2 * epoch + 1))
    assert sum(b < a for a, b in zip(vals, vals[1:], strict=False)) > 100  # dips: each re-armed the rule before
    out = mon.observe(events)
    incidents = [e for e in out if not e.get("update")]
    assert [e["rule"] for e in incidents] == ["overfit"], [e["message"] for e in out]
    assert {e["incident"] for e in out} == {incidents[0]["incident"]}
    assert act.calls == [("pause", "overfit")]


def test_an_overfit_that_recovered_and_stayed_healthy_then_comes_back_is_a_new_incident(tmp_path):
    mon, _ = monitor(tmp_path, overfit_evals=2, incident_clear_s=300)
    vals = [1.0, 1.1, 1.2, 1.15, 1.3,  # fires at 1.2; the dip to 1.15 is no recovery
            0.9, 0.8, 0.7, 0.6, 0.5, 0.45,  # back under 1.0, where the rise began, for 500 s
            0.5, 0.6]  # rises again: a new incident
    events = []
    for i, v in enumerate(vals):
        events += [train(100 * i + 50, 1.0 - 0.05 * i), val(100 * i + 99, v)]
    out = mon.observe(events)
    assert [(e["step"], e.get("update", False)) for e in out] == [(299, False), (1299, False)]
    assert out[0]["incident"] != out[1]["incident"]


def test_a_rule_firing_again_within_the_healthy_stretch_updates_its_incident(tmp_path):
    """One incident: the re-firing is an update (same id, no action); after incident_clear_s healthy
    it is over, and the next firing is a new incident with its action."""
    mon, act = monitor(tmp_path, divergence="pause", divergence_warmup=5, divergence_smoothing=0.0,
                       incident_clear_s=600)
    ok = [train(s, 1.0) for s in range(10, 110, 10)]
    first = mon.observe(ok + [train(110, 5.0)])
    again = mon.observe([train(120, 1.0), train(130, 1.0), train(140, 6.0)])  # healthy for 20 s only
    late = mon.observe([train(s, 1.0) for s in range(150, 900, 10)] + [train(900, 7.0)])  # healthy 750 s
    assert [(e["step"], e.get("update", False), e["action"]) for e in first + again + late] == \
        [(110, False, "pause"), (140, True, "warn"), (900, False, "pause")]
    assert again[0]["incident"] == first[0]["incident"] != late[0]["incident"]
    assert again[0]["firings"] == 2 and "again: firing 2 of the incident since step 110" in again[0]["message"]
    assert act.calls == [("pause", "divergence"), ("pause", "divergence")]


def test_each_non_finite_value_is_an_incident_of_its_own(tmp_path):
    mon, act = monitor(tmp_path, nan="pause")
    out = mon.observe([train(10, 1.0), train(20, "nan"), train(30, 1.0), train(40, "nan")])
    assert [e.get("update", False) for e in out] == [False, False] and out[0]["incident"] != out[1]["incident"]
    assert act.calls == [("pause", "nan"), ("pause", "nan")]


def test_the_viewers_show_one_alarm_per_incident_with_its_updates():
    from tui.describe import describe, plain_text
    from tui.run_model import RunModel

    opened = make_event("health", t=T0, rule="divergence", value=9.0, step=110, rank=None, action="pause",
                        asked="pause", message="the train loss is diverging", incident="divergence-1")
    update = dict(opened, t=T0 + 30, step=140, action="warn", update=True, firings=2,
                  message="the train loss is diverging (again: firing 2 of the incident since step 110)")
    model = RunModel()
    model.apply_events([opened, update])
    assert model.header(T0 + 30).health == "divergence step 140 → pause ×2"
    assert model.warnings == 1 and len(model.health) == 2  # both marked on the plot, one warning
    assert plain_text(describe(update)).startswith("health divergence update: the train loss is diverging (again")
    model.apply_event(dict(opened, rule="overfit", step=500, action="warn", incident="overfit-2"))
    assert model.header(T0 + 40).health == "overfit step 500 (+1)" and model.warnings == 2
