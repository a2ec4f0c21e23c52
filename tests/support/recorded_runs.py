"""Write the recorded run directories under tests/data/runs/ that the TUI tests and snapshots use.

    python -m tests.support.recorded_runs

Deterministic: fixed timestamps and a seeded generator, so running it again gives the same
bytes. The runs:

    20261124-090000-8xb200-gnn   running, 8 GPUs (DDP/NCCL), epoch 12 of 50; GPU 3 is hot, GPU 5 is
                                 throttling, GPU 6 idles; rank 6 was a straggler in epoch 8; rank 2
                                 hangs after the last logged step (GPU 2 at 0 % while the others spin
                                 in NCCL) and the watchdog has warned about it; run.json names another
                                 host, so every tool treats it as live without a process to check
    20261123-140000-cpu          finished, DDP on gloo with 2 CPU workers, 4 epochs
    20261123-100000-4x2080ti     failed in epoch 2: rank 2 ran out of GPU memory (exit.json)

`SNAPSHOT_NOW` is the instant every test that shows these runs freezes the clock at (a second
after the running run's last sample, 62 s into rank 2's hang): tests/conftest.py's `clock`.
Records come from tests/support/fake_runs.py, the builder the other tests and benchmarks/ use.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

from tests.support.fake_runs import encode_line as _line
from tests.support.fake_runs import event as _event
from tests.support.fake_runs import run_record
from tests.support.locations import RECORDED_RUNS
from training.profile import load_profile

OUT = RECORDED_RUNS
GNN_T0 = 1795856400.0  # the 8-GPU run's start
GNN_EPOCH_S = 95.0
GNN_STEPS = 351
GNN_LAST_STEP = 11 * GNN_STEPS + 200
GNN_RUNNING_T = GNN_T0 + 25.0
GNN_END_T = GNN_RUNNING_T + GNN_LAST_STEP / GNN_STEPS * GNN_EPOCH_S
GNN_HANG_T = GNN_END_T + 61.0  # the watchdog's warning: rank 2 has not stepped for 61 s
GNN_SAMPLES_END_T = GNN_HANG_T  # the last telemetry sample
SNAPSHOT_NOW = round(GNN_SAMPLES_END_T + 1.0, 3)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _loss_curve(step: int, rng: random.Random, scale: float = 2.1, floor: float = 0.35, tau: float = 2500.0):
    base = scale * math.exp(-step / tau) + floor
    return base * (1 + rng.gauss(0, 0.04))


def _run_json(run_id: str, profile, created: float, state: str, state_t: float, host: str) -> dict:
    return run_record(run_id, profile_name=profile.name, mode=profile.launch.mode, world_size=profile.world_size,
                      argv=["--profile", profile.name], host=host, created=created,
                      supervisor={"pid": 4242, "create_time": created}, port=29517, state=state, state_t=state_t)


def _recorded_run(run_id: str, seed: int):
    """A recorded run's random source (seeded: the same files every time), its shipped profile
    (the run id's tail names it) and its directory."""
    return random.Random(seed), load_profile(run_id.split("-", 2)[2]), OUT / run_id


def gnn_running() -> None:
    run_id = "20261124-090000-8xb200-gnn"
    rng, profile, root = _recorded_run(run_id, seed=8)
    t0 = GNN_T0
    events = [_event(t0 + 1, "status", state="starting", message="launching torchrun, 8 ranks, port 29517"),
              _event(GNN_RUNNING_T, "status", state="running", world_size=8, device="cuda", backend="nccl",
                     epochs=50, steps_per_epoch=GNN_STEPS, start_step=0, batch_size=64)]
    best = math.inf
    step_t = GNN_EPOCH_S / GNN_STEPS
    for step in range(20, GNN_LAST_STEP + 1, 20):
        epoch = (step - 1) // GNN_STEPS + 1
        t = GNN_RUNNING_T + step * step_t
        loss = _loss_curve(step, rng)
        conflict, chromatic = loss * 0.55, loss * 0.3
        events.append(_event(t, "metric", step=step, epoch=epoch, split="train", values={
            "loss": round(loss, 5), "loss/conflict": round(conflict, 5), "loss/chromatic": round(chromatic, 5),
            "loss/entropy": round(loss - conflict - chromatic, 5), "lr": 8e-3,
            "samples_per_s": round(GNN_STEPS * 512 / GNN_EPOCH_S * (1 + rng.gauss(0, 0.01)), 1)}))
        if step // GNN_STEPS != (step + 20) // GNN_STEPS and (step + 20) // GNN_STEPS <= 11:
            done = (step + 20) // GNN_STEPS
            t_end = GNN_RUNNING_T + done * GNN_EPOCH_S
            val = _loss_curve(done * GNN_STEPS, rng, 2.0, 0.42) * 1.05
            events.append(_event(t_end + 2, "metric", step=done * GNN_STEPS, epoch=done, split="val",
                                 values={"loss": round(val, 5), "acc": round(0.5 + 0.04 * done, 4)}))
            events.append(_event(t_end + 2.1, "epoch", epoch=done, epochs=50, step=done * GNN_STEPS,
                                 seconds=round(GNN_EPOCH_S, 1), samples_per_s=round(GNN_STEPS * 512 / GNN_EPOCH_S, 1)))
            is_best = val < best
            best = min(best, val)
            events.append(_event(t_end + 3.4, "checkpoint", path="checkpoints/last.pt", epoch=done,
                                 step=done * GNN_STEPS, monitor="val_loss", value=round(val, 5), best=False,
                                 bytes=84_213_456, seconds=0.41))
            if is_best:
                events.append(_event(t_end + 3.9, "checkpoint", path="checkpoints/best.pt", epoch=done,
                                     step=done * GNN_STEPS, monitor="val_loss", value=round(val, 5), best=True,
                                     bytes=84_213_456, seconds=0.38))
            if done == 7:
                events.append(_event(t_end + 30, "log", level="warning", watchdog="straggler", rank=6,
                                     step=done * GNN_STEPS + 111, steps_per_s=2.17, median_steps_per_s=3.69,
                                     ratio=1.7, message=f"rank 6 is a straggler: 2.17 steps/s against 3.69 for "
                                     f"the other ranks (1.7x slower over the last 30 s, step {done * GNN_STEPS + 111})"))
    others = [r for r in range(8) if r != 2]
    events.append(_event(
        GNN_HANG_T, "log", level="warning", watchdog="hang", rank=2, ranks=[2], step=GNN_LAST_STEP, stalled_s=61.0,
        other_steps={str(r): GNN_LAST_STEP for r in others}, threshold_s=60.0,
        gpu_util={"0": 97.0, "1": 96.0, "2": 0.0, "3": 97.0, "4": 95.0, "5": 96.0, "6": 97.0, "7": 96.0},
        message=f"rank 2 has not finished a step for 61 s (stuck at step {GNN_LAST_STEP}); ranks 0, 1, 3, 4, 5, 6, 7 "
                f"at step {GNN_LAST_STEP} waiting (GPU util rank 0 97%, rank 1 96%, rank 2 0%, rank 3 97%, "
                f"rank 4 95%, rank 5 96%, rank 6 97%, rank 7 96%). `traindeck --dump {run_id}` records every "
                f"rank's stack."))
    events.sort(key=lambda e: e["t"])
    _write(root / "events.jsonl", "".join(_line(e) for e in events))

    samples = []
    n = 90
    for k in range(n):
        t = GNN_SAMPLES_END_T - (n - 1 - k)
        gpus = []
        for i in range(8):
            util = 96 + rng.randint(-4, 3)
            if i == 6:
                util = 2 if k > 60 else 93
            if i == 2 and t > GNN_END_T:
                util = 0  # hung in Python: its GPU has nothing to do; the others spin in NCCL
            temp = 62 + i + rng.randint(0, 2)
            throttle: list[str] = []
            if i == 3:
                temp = 87 + rng.randint(0, 1)
            if i == 5:
                throttle = ["sw_thermal_slowdown", "hw_slowdown"]
            clock = 1965 if not throttle else 1410
            jitter = rng.uniform(-5, 5) if i != 6 or k <= 60 else 0.0  # same draws as before the hang
            gpus.append({"index": i, "name": "NVIDIA B200", "util": util, "mem_util": 40,
                         "mem_used_mib": 81_000 + 300 * i, "mem_total_mib": 183_359, "temp_c": temp,
                         "power_w": round(140 + 8.1 * util + jitter, 1) if util > 5 else 152.0,
                         "power_limit_w": 1000.0, "sm_clock_mhz": clock, "sm_clock_max_mhz": 1965, "fan_pct": None,
                         "throttle": throttle, "pcie_rx_kbs": 1200, "pcie_tx_kbs": 800,
                         "processes": [{"pid": 41000 + i, "rank": i, "mem_mib": 81_000}], "error": None})
        sample = {"v": 1, "t": round(t, 3), "kind": "telemetry", "source": "nvml",
                  "host": {"cpu_percent": 35.0, "mem_used_mib": 210_000, "mem_total_mib": 2_000_000}, "gpus": gpus}
        if k == 0:
            sample["sample_cost_ms"] = 3.1
            sample["interval_s"] = 1.0
        samples.append(sample)
    _write(root / "telemetry.jsonl", "".join(_line(s) for s in samples))
    _write(root / "profile.toml", profile.to_toml())
    _write(root / "run.json", json.dumps(_run_json(run_id, profile, t0, "running", GNN_RUNNING_T, "gpu-box-1"),
                                         indent=1) + "\n")
    job = root / "logs" / "torchrun" / f"{run_id}_x1y2z3" / "attempt_0"
    for rank in range(8):
        lines = [f"[rank {rank}] cuda:{rank} NVIDIA B200, nccl, world size 8"]
        if rank == 0:
            lines += [f"epoch {e} step {e * GNN_STEPS} train_loss {_loss_curve(e * GNN_STEPS, rng):.4f}"
                      for e in range(1, 12)]
        _write(job / str(rank) / "stdout.log", "\n".join(lines) + "\n")
        _write(job / str(rank) / "stderr.log", "" if rank != 6 else
               "UserWarning: DataLoader worker 3 is slow to start; consider fewer workers\n")
    _write(root / "logs" / "supervisor.log",
           "supervisor: launching torchrun --nproc-per-node 8 -m training.worker\nsupervisor: state running\n")
    (root / "checkpoints").mkdir(exist_ok=True)
    (root / "heartbeats").mkdir(exist_ok=True)


def cpu_finished() -> None:
    run_id = "20261123-140000-cpu"
    rng, profile, root = _recorded_run(run_id, seed=2)
    t0 = 1795755600.0
    steps, epochs, epoch_s = 29, 4, 9.0
    running_t = t0 + 6
    events = [_event(t0 + 0.5, "status", state="starting", message="launching torchrun, 2 ranks, port 29611"),
              _event(running_t, "status", state="running", world_size=2, device="cpu", backend="gloo",
                     epochs=epochs, steps_per_epoch=steps, start_step=0, batch_size=64)]
    for step in range(5, steps * epochs + 1, 5):
        epoch = (step - 1) // steps + 1
        loss = _loss_curve(step, rng, 1.3, 0.25, 40.0)
        events.append(_event(running_t + step * epoch_s / steps, "metric", step=step, epoch=epoch, split="train",
                             values={"loss": round(loss, 5), "lr": 3e-3, "samples_per_s": 410.0}))
    for e in range(1, epochs + 1):
        t_end = running_t + e * epoch_s
        val = _loss_curve(e * steps, rng, 1.2, 0.3, 40.0)
        events += [
            _event(t_end + 0.2, "metric", step=e * steps, epoch=e, split="val", values={"loss": round(val, 5),
                                                                                      "acc": round(0.55 + 0.09 * e, 3)}),
            _event(t_end + 0.3, "epoch", epoch=e, epochs=epochs, step=e * steps, seconds=epoch_s, samples_per_s=410.0),
            _event(t_end + 0.5, "checkpoint", path="checkpoints/last.pt", epoch=e, step=e * steps, monitor="val_loss",
                   value=round(val, 5), best=False, bytes=53_112, seconds=0.02),
            _event(t_end + 0.6, "checkpoint", path="checkpoints/best.pt", epoch=e, step=e * steps, monitor="val_loss",
                   value=round(val, 5), best=True, bytes=53_112, seconds=0.02),
        ]
    end_t = running_t + epochs * epoch_s + 2
    events.append(_event(end_t, "status", state="finished", message="4 epochs, best val_loss at epoch 4"))
    events.sort(key=lambda e: e["t"])
    _write(root / "events.jsonl", "".join(_line(e) for e in events))
    samples = []
    for k in range(int(end_t - t0)):
        t = t0 + 1 + k
        workers = [{"rank": r, "pid": 51000 + r, "cpu_percent": round(97 + rng.uniform(-6, 2), 1),
                    "rss_mib": round(402.0 + 3 * r + k * 0.1, 1), "threads": 3} for r in range(2)] if k >= 5 else []
        samples.append({"v": 1, "t": round(t, 3), "kind": "telemetry", "source": "cpu",
                        "host": {"cpu_percent": 99.0, "mem_used_mib": 1900, "mem_total_mib": 7900}, "workers": workers})
    _write(root / "telemetry.jsonl", "".join(_line(s) for s in samples))
    _write(root / "profile.toml", profile.to_toml())
    _write(root / "run.json", json.dumps(_run_json(run_id, profile, t0, "finished", end_t, "box"), indent=1) + "\n")
    _write(root / "exit.json", json.dumps({"returncode": 0, "state": "finished", "failed_rank": None, "error": [],
                                           "hint": "", "message": "all ranks exited 0", "t": end_t,
                                           "seconds": end_t - t0}, indent=1) + "\n")
    for rank in range(2):
        _write(root / "logs" / f"rank-{rank}.log",
               "\n".join(f"[rank {rank}] epoch {e} done" for e in range(1, epochs + 1)) + "\n")
    _write(root / "logs" / "supervisor.log", "supervisor: state running\nsupervisor: state finished (rc 0)\n")


def gpu_failed() -> None:
    run_id = "20261123-100000-4x2080ti"
    rng, profile, root = _recorded_run(run_id, seed=4)
    t0 = 1795741200.0
    steps, epoch_s = 781, 610.0
    running_t = t0 + 30
    events = [_event(running_t, "status", state="running", world_size=4, device="cuda", backend="nccl",
                     epochs=90, steps_per_epoch=steps, start_step=0, batch_size=64)]
    for step in range(20, steps + 400, 20):
        events.append(_event(running_t + step * epoch_s / steps, "metric", step=step, epoch=step // steps + 1,
                             split="train", values={"loss": round(_loss_curve(step, rng, 3.5, 1.2, 900.0), 5),
                                                    "samples_per_s": 327.0}))
    events += [_event(running_t + epoch_s + 4, "epoch", epoch=1, epochs=90, step=steps, seconds=epoch_s,
                      samples_per_s=327.0),
               _event(running_t + epoch_s + 6, "checkpoint", path="checkpoints/last.pt", epoch=1, step=steps,
                      monitor="val_loss", value=3.02, best=True, bytes=102_400_000, seconds=1.9)]
    end_t = running_t + (steps + 400) * epoch_s / steps + 3
    events.append(_event(end_t, "status", state="failed", message="rank 2 exited with code 1"))
    events.sort(key=lambda e: e["t"])
    _write(root / "events.jsonl", "".join(_line(e) for e in events))
    error = ["Traceback (most recent call last):",
             '  File "training/worker.py", line 311, in train_epoch',
             "    loss, parts = task.loss(model, batch)",
             "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 2 has a total capacity "
             "of 10.75 GiB of which 1.12 GiB is free."]
    _write(root / "exit.json", json.dumps({"returncode": 1, "state": "failed", "failed_rank": 2, "error": error,
                                           "hint": "lower train.batch_size or turn on train.amp",
                                           "message": "rank 2 exited with code 1", "t": end_t,
                                           "seconds": end_t - t0}, indent=1) + "\n")
    samples = []
    for k in range(40):
        t = end_t - 40 + k
        gpus = [{"index": i, "name": "NVIDIA GeForce RTX 2080 Ti", "util": 99 if k < 38 else 0, "mem_util": 70,
                 "mem_used_mib": 10_900 if i == 2 else 9_800, "mem_total_mib": 11_264, "temp_c": 74 + i,
                 "power_w": 245.0, "power_limit_w": 250.0, "sm_clock_mhz": 1860, "sm_clock_max_mhz": 2100,
                 "fan_pct": 80, "throttle": ["sw_power_cap"], "pcie_rx_kbs": None, "pcie_tx_kbs": None,
                 "processes": [{"pid": 42000 + i, "rank": i, "mem_mib": 9_700}], "error": None} for i in range(4)]
        samples.append({"v": 1, "t": round(t, 3), "kind": "telemetry", "source": "nvml",
                        "host": {"cpu_percent": 60.0}, "gpus": gpus})
    _write(root / "telemetry.jsonl", "".join(_line(s) for s in samples))
    _write(root / "profile.toml", profile.to_toml())
    _write(root / "run.json", json.dumps(_run_json(run_id, profile, t0, "failed", end_t, "lab-box"), indent=1) + "\n")
    for rank in range(4):
        text = f"[rank {rank}] cuda:{rank} NVIDIA GeForce RTX 2080 Ti\n" + ("\n".join(error) + "\n" if rank == 2 else "")
        _write(root / "logs" / f"rank-{rank}.log", text)


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    gnn_running()
    cpu_finished()
    gpu_failed()
    print(f"wrote {', '.join(sorted(p.name for p in OUT.iterdir()))} to {OUT}")


if __name__ == "__main__":
    main()
