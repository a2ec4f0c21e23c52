"""Judging what one of the GPU check's runs left in its run directory, item by item (pure: what
the tests exercise on CPU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from traindeck.units import mib
from training.rundir import RunPaths, read_json, read_run_json
from training.rundir.events_file import read_all

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
# The driver's own bookkeeping moves a GPU's used memory by a few MiB; a leaked context is hundreds.
MEMORY_TOLERANCE_MIB = 64


@dataclass
class Item:
    name: str
    status: str
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"  [{self.status}] {self.name}" + (f": {self.detail}" if self.detail else "")



def judge_training(paths: RunPaths, expect_device: str = "cuda", expect_backend: str | None = None) -> Item:
    """Finished, trained on `expect_device` (over `expect_backend`), and left a last.pt that loads
    with weights_only=True."""
    name = paths.id
    exit_data = read_json(paths.exit_json, {}) or {}
    events = read_all(paths.events)
    running = [e for e in events if e.get("kind") == "status" and e.get("state") == "running" and e.get("device")]
    evidence: dict[str, Any] = {"run": str(paths.root), "state": exit_data.get("state"),
                                "device": running[0].get("device") if running else None,
                                "backend": running[0].get("backend") if running else None}
    if exit_data.get("state") != "finished":
        why = exit_data.get("message") or "no exit.json"
        error = " | ".join(exit_data.get("error") or [])[:300]
        return Item(name, FAIL, f"run ended {exit_data.get('state') or 'without exit.json'}: {why}"
                    + (f" ({error})" if error else ""), evidence)
    if not running or not str(running[0]["device"]).startswith(expect_device):
        return Item(name, FAIL, f"trained on {evidence['device']}, not {expect_device}", evidence)
    if expect_backend and evidence["backend"] != expect_backend:
        return Item(name, FAIL, f"process group over {evidence['backend']}, not {expect_backend}", evidence)
    last = paths.checkpoints / "last.pt"
    try:
        from training.engine.checkpoint import load_checkpoint

        ckpt = load_checkpoint(last)
    except Exception as exc:
        return Item(name, FAIL, f"checkpoint: {exc}", evidence)
    steps = [e["step"] for e in events if e.get("kind") == "metric" and isinstance(e.get("step"), int)]
    evidence.update(checkpoint_step=ckpt.get("step"), steps=max(steps) if steps else None)
    return Item(name, PASS, f"finished on {evidence['device']}"
                + (f" ({evidence['backend']})" if evidence["backend"] else "")
                + f", last.pt at step {ckpt.get('step')} loads with weights_only=True", evidence)


def autocast_records(paths: RunPaths) -> list[dict[str, list[str]]]:
    """Every rank's "autocast in forward" record: {device: [dtypes its forwards ran in]}."""
    return [e["autocast"] for e in read_all(paths.events)
            if e.get("kind") == "log" and isinstance(e.get("autocast"), dict)]


def judge_autocast(paths: RunPaths, dtype: str, devices: int, ranks: int = 1,
                   device_type: str = "cuda") -> tuple[bool, str]:
    """`ranks` records, together covering `devices` CUDA devices, each forward in `dtype` only."""
    records = autocast_records(paths)
    seen: dict[str, set[str]] = {}
    for record in records:
        for device, dtypes in record.items():
            seen.setdefault(device, set()).update(dtypes)
    wrong = {d: sorted(t) for d, t in seen.items() if t != {dtype}}
    cuda = [d for d in seen if d.startswith(device_type)]
    if len(records) < ranks:
        return False, f"{paths.id}: {len(records)} of {ranks} rank(s) recorded their forward's autocast dtype"
    if wrong:
        return False, f"{paths.id}: forwards ran in {wrong}, the profile says {dtype}"
    if len(cuda) < devices:
        return False, f"{paths.id}: forwards seen on {sorted(seen)}, expected {devices} CUDA device(s)"
    return True, f"{paths.id}: {dtype} on {', '.join(sorted(cuda))}"


def judge_grad_scaler(paths: RunPaths, amp: str) -> tuple[bool, str]:
    running = [e for e in read_all(paths.events) if e.get("kind") == "status" and e.get("state") == "running"
               and "grad_scaler" in e]
    if not running:
        return False, f"{paths.id}: the worker did not say whether it used a GradScaler"
    used = bool(running[0]["grad_scaler"])
    return used == (amp == "fp16"), f"{paths.id}: amp {amp}, GradScaler {'on' if used else 'off'}"


TELEMETRY_FIELDS = ("util", "mem_used_mib", "temp_c", "power_w")
# A rank's CUDA context alone holds a few hundred MiB; a GPU that gained less while the rank trained
# did not hold the rank's memory.
RANK_MEMORY_GAIN_MIB = 128


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def training_windows(events: list[dict[str, Any]]) -> dict[int, list[tuple[float, float]]]:
    """rank -> the (start, end) unix times it trained, one window per launch of the run (a resumed
    run has two). A launch starts at its "running" status; a rank's window starts at its own
    "autocast in forward" record (written after its first step), else at the launch's start, and
    ends at the launch's last train metric (the ranks step together: DDP all-reduces every step)."""
    launches: list[list[dict[str, Any]]] = []
    for e in events:
        if e.get("kind") == "status" and e.get("state") == "running" and e.get("device"):
            launches.append([e])
        elif launches:
            launches[-1].append(e)
    out: dict[int, list[tuple[float, float]]] = {}
    for launch in launches:
        start = _as_float(launch[0].get("t"))
        world = launch[0].get("world_size") if isinstance(launch[0].get("world_size"), int) else 1
        ends = [_as_float(e.get("t")) for e in launch if e.get("kind") == "metric" and e.get("split", "train") == "train"]
        ends = [t for t in ends if t is not None]
        if start is None or not ends:
            continue
        firsts = {int(e.get("rank") or 0): _as_float(e.get("t")) for e in launch
                  if e.get("kind") == "log" and isinstance(e.get("autocast"), dict)}
        for rank in range(max(1, world)):
            begin = firsts.get(rank) or start
            if begin <= max(ends):
                out.setdefault(rank, []).append((begin, max(ends)))
    return out


def _device_keys(device: dict[str, Any]) -> set[str]:
    """How a rank's device is recognised among NVML's GPUs: its UUID and, for a MIG instance (whose
    MIG-<uuid> is not the parent GPU's), its PCI bus id, which is the parent's."""
    from training.monitor.gpu import normalize_bus_id, normalize_uuid

    keys = set()
    if isinstance(device, dict):
        if device.get("uuid"):
            keys.add("uuid:" + (normalize_uuid(str(device["uuid"])) or ""))
        if device.get("pci_bus_id"):
            keys.add("bus:" + (normalize_bus_id(str(device["pci_bus_id"])) or ""))
    return keys


def _gpu_keys(gpu: dict[str, Any]) -> set[str]:
    return _device_keys({"uuid": gpu.get("uuid"), "pci_bus_id": gpu.get("pci_bus_id")})


def judge_telemetry(samples: list[dict[str, Any]], world_size: int, heartbeats: dict[int, dict],
                    events: list[dict[str, Any]] | None = None,
                    baseline: dict[int, dict[str, Any]] | None = None) -> Item:
    """Each rank's GPU -- found among NVML's GPUs by the rank's own device UUID (or the PCI bus id of
    its MIG instance's GPU), not by the telemetry's rank labels -- gained memory and utilisation
    while that rank trained: samples inside the rank's training window (training_windows) against
    the GPU's baseline before the check's first run. Idle samples before or after the run, and the
    mere agreement of formats, do not count. The panels' fields must be there too."""
    name = "telemetry"
    events = events or []
    baseline = baseline or {}
    gpu_samples = [s for s in samples if s.get("gpus")]
    if not gpu_samples:
        return Item(name, FAIL, "no GPU sample in telemetry.jsonl (source "
                    f"{sorted({str(s.get('source')) for s in samples}) or 'none'})")
    sources = sorted({str(s.get("source")) for s in gpu_samples})
    if sources != ["nvml"]:
        return Item(name, FAIL, f"telemetry source {sources}: not the real NVML")
    windows = training_windows(events)
    base_by_key = {k: b for b in baseline.values() for k in _gpu_keys(b)}
    evidence: dict[str, Any] = {"samples": len(gpu_samples), "windows": {r: w for r, w in windows.items()},
                                "ranks": {}}
    problems: list[str] = []
    for rank in range(world_size):
        devices = (heartbeats.get(rank) or {}).get("devices") or []
        keys = set().union(*(_device_keys(d) for d in devices)) if devices else set()
        if not keys:
            problems.append(f"rank {rank} wrote no device UUID in its heartbeat")
            continue
        spans = windows.get(rank) or []
        if not spans:
            problems.append(f"rank {rank}: no training window in events.jsonl")
            continue
        inside = [(s, g) for s in gpu_samples for g in s["gpus"] if isinstance(g, dict) and keys & _gpu_keys(g)
                  and any(a <= (_as_float(s.get("t")) or 0) <= b for a, b in spans)]
        base = next((base_by_key[k] for k in keys if k in base_by_key), None)
        mems = [g.get("mem_used_mib") for _, g in inside if isinstance(g.get("mem_used_mib"), int)]
        utils = [g.get("util") for _, g in inside if isinstance(g.get("util"), int)]
        base_mem = (base or {}).get("mem_used_mib")
        base_util = (base or {}).get("util") or 0
        record = {"gpu": sorted({g.get("index") for _, g in inside}), "samples_in_window": len(inside),
                  "baseline_mem_mib": base_mem, "baseline_util": base_util,
                  "max_mem_mib": max(mems) if mems else None, "max_util": max(utils) if utils else None,
                  "missing_fields": sorted(f for f in TELEMETRY_FIELDS if all(g.get(f) is None for _, g in inside))}
        evidence["ranks"][rank] = record
        if not inside:
            problems.append(f"rank {rank}: no NVML sample of its GPU ({', '.join(sorted(keys))}) while it trained")
            continue
        if base is None or not isinstance(base_mem, int):
            problems.append(f"rank {rank}: no baseline of its GPU before the runs")
            continue
        if not mems or max(mems) - base_mem < RANK_MEMORY_GAIN_MIB:
            problems.append(f"rank {rank}: GPU {record['gpu']} gained {mib(max(mems) - base_mem) if mems else 'no MiB'} "
                            f"while it trained (< {mib(RANK_MEMORY_GAIN_MIB)}: not the rank's GPU)")
        if not utils or max(utils) <= base_util:
            problems.append(f"rank {rank}: GPU {record['gpu']} utilisation {max(utils) if utils else 'n/a'}% while it "
                            f"trained, not above its baseline {base_util}%")
        if record["missing_fields"]:
            problems.append(f"rank {rank}: never reported {', '.join(record['missing_fields'])}")
    if problems:
        return Item(name, FAIL, "; ".join(problems[:6]), evidence)
    gains = ", ".join(f"rank {r} GPU {v['gpu']} {mib(v['max_mem_mib'] - v['baseline_mem_mib'], sign=True)} "
                      f"{v['max_util']}%" for r, v in evidence["ranks"].items())
    return Item(name, PASS, f"{len(gpu_samples)} NVML samples; while each rank trained its own GPU (by device "
                f"UUID) gained memory and load: {gains}", evidence)


def gpu_snapshot(samples: list[Any]) -> dict[int, dict[str, Any]]:
    """NVML's view of every GPU at one instant, for the memory and telemetry items."""
    return {s.index: {"uuid": s.uuid, "pci_bus_id": getattr(s, "pci_bus_id", None), "mem_used_mib": s.mem_used_mib,
                      "util": s.util, "processes": {int(p.pid): p.used_mib for p in s.processes}}
            for s in samples}


def judge_memory(baseline: dict[int, dict[str, Any]], now: dict[int, dict[str, Any]], run_pids: set[int],
                 pids_seen: set[int], tolerance_mib: int = MEMORY_TOLERANCE_MIB) -> Item:
    """After the runs, nothing of them holds GPU memory, judged by one of two methods, named:

    pid          NVML listed the runs' own PIDs while they trained (no PID namespace between us and
                 the driver), so their absence now is proof: no run PID holds memory on any GPU.
    used-memory  NVML never listed a run PID (a container: NVML reports host PIDs), so each GPU's
                 used memory is compared with its baseline -- only where no process appeared that
                 was not there before and no memory was freed (another tenant's exit can hide a
                 leak of the same size): there the item cannot judge and fails saying so."""
    name = "memory"
    evidence: dict[str, Any] = {"baseline": _jsonable(baseline), "after": _jsonable(now),
                                "run_pids": sorted(run_pids), "run_pids_seen_by_nvml": sorted(pids_seen)}
    if pids_seen:
        evidence["method"] = "pid"
        holders = [(pid, i, m) for i, g in now.items() for pid, m in g["processes"].items() if pid in run_pids]
        if holders:
            return Item(name, FAIL, "[pid] still holding GPU memory: " + ", ".join(
                f"pid {p} on GPU {i} ({mib(m)})" for p, i, m in holders), evidence)
        return Item(name, PASS, f"[pid] NVML listed {len(pids_seen)} run PID(s) while they trained and lists none "
                    f"now, on {len(now)} GPU(s)", evidence)
    evidence["method"] = "used-memory"
    problems, cannot = [], []
    for i, after in sorted(now.items()):
        before = baseline.get(i)
        if before is None or before.get("mem_used_mib") is None or after.get("mem_used_mib") is None:
            cannot.append(f"GPU {i}: no used-memory reading before and after")
            continue
        delta = after["mem_used_mib"] - before["mem_used_mib"]
        new = {p: m for p, m in after["processes"].items() if p not in before["processes"]}
        gone = [p for p in before["processes"] if p not in after["processes"]]
        if new:
            problems.append(f"GPU {i}: process(es) {', '.join(f'{p} ({mib(m)})' for p, m in new.items())} hold memory "
                            f"that were not there before the runs (host PIDs: a leak of the runs, or another tenant)")
        elif delta > tolerance_mib:
            problems.append(f"GPU {i} {mib(delta, sign=True)} above the baseline")
        elif delta < -tolerance_mib or gone:
            cannot.append(f"GPU {i}: {mib(-delta)} freed since the baseline"
                          + (f" (process(es) {', '.join(map(str, gone))} left)" if gone else "")
                          + ": another tenant's memory moved, which can hide a leak of the runs")
    if problems:
        return Item(name, FAIL, "[used-memory] " + "; ".join(problems), evidence)
    if cannot:
        evidence["method"] = "cannot judge"
        return Item(name, FAIL, "cannot judge: NVML never listed a run PID (a container?), and " + "; ".join(cannot)
                    + "; run the check on GPUs nobody else uses", evidence)
    return Item(name, PASS, f"[used-memory] NVML never listed a run PID (host PIDs in a container); every GPU's "
                f"used memory is within {mib(tolerance_mib)} of its baseline and no process appeared, on "
                f"{len(now)} GPU(s)", evidence)


def _jsonable(snapshot: dict[int, dict[str, Any]]) -> dict[str, Any]:
    return {str(i): {**g, "processes": {str(p): m for p, m in g.get("processes", {}).items()}}
            for i, g in snapshot.items()}


def judge_cuda(*, nvml_count: int, torch_count: int, arch_list: list[str],
               gpus: list[tuple[str, tuple[int, int] | None]], versions: dict[str, Any]) -> Item:
    """torch's own view: as many CUDA devices as NVML gives this process (under its
    CUDA_VISIBLE_DEVICES, MIG instances one each), and kernels for every GPU's compute capability."""
    from training.engine.cuda_fit import arch_problem

    evidence = {"nvml_visible": nvml_count, "torch_device_count": torch_count, "arch_list": list(arch_list),
                "compute_capabilities": {n: c for n, c in gpus}, **versions}
    if torch_count != nvml_count:
        return Item("cuda", FAIL, f"torch.cuda.device_count() is {torch_count}, NVML gives this process "
                    f"{nvml_count} GPU(s)", evidence)
    if not arch_list:
        return Item("cuda", FAIL, "torch.cuda.get_arch_list() is empty: no kernels to judge", evidence)
    problem = arch_problem(arch_list, gpus, str(versions.get("torch")))
    if problem:
        return Item("cuda", FAIL, problem, evidence)
    caps = sorted({f"sm_{c[0]}{c[1]}" for _, c in gpus if c})
    return Item("cuda", PASS, f"torch sees {torch_count} CUDA device(s), as NVML does; its arch list "
                f"({', '.join(arch_list)}) covers {', '.join(caps) or 'the GPUs'}", evidence)


def _running(paths: RunPaths) -> list[dict[str, Any]]:
    return [e for e in read_all(paths.events) if e.get("kind") == "status" and e.get("state") == "running"
            and e.get("device")]


def judge_dp(paths: RunPaths, replicas: int, device_type: str = "cuda") -> Item:
    """DataParallel really split the batch: the forward hook saw `replicas` distinct devices (one
    replica thread each). A fallback to one device (too few GPUs visible, a batch that does not
    split) trains and checkpoints fine, and fails here."""
    item = judge_training(paths, device_type)
    item.name = "dp"
    if item.status != PASS:
        return item
    seen = sorted({d for record in autocast_records(paths) for d in record if d.startswith(device_type)})
    running = _running(paths)
    ids = running[0].get("dp_device_ids") if running else None
    item.evidence.update(replica_devices=seen, dp_device_ids=ids)
    if len(seen) < replicas or not isinstance(ids, list) or len(ids) < replicas:
        return Item("dp", FAIL, f"DataParallel ran {len(seen)} replica(s) ({', '.join(seen) or 'none seen'}; "
                    f"device_ids {ids}), expected {replicas}: it fell back to fewer devices", item.evidence)
    return Item("dp", PASS, f"{item.detail}; the forward hook counted {len(seen)} replicas on "
                f"{', '.join(seen)}", item.evidence)


def judge_dp_probe(probe: dict[str, Any]) -> Item:
    """One GPU: DataParallel's replica threads, two replicas through parallel_apply on cuda:0."""
    threads = probe.get("threads") if isinstance(probe.get("threads"), dict) else {}
    evidence = {"probe": probe}
    if not probe.get("ok") or len(threads) < 2:
        return Item("dp", FAIL, f"parallel_apply, 2 replicas on cuda:0: {probe.get('detail') or probe}", evidence)
    return Item("dp", PASS, f"one GPU: parallel_apply ran {len(threads)} replica threads on cuda:0 "
                f"({probe.get('detail')})", evidence)


def _checkpoint(paths: RunPaths) -> dict[str, Any] | None:
    try:
        from training.engine.checkpoint import load_checkpoint

        return load_checkpoint(paths.checkpoints / "last.pt", map_location="cpu")
    except Exception:
        return None


def judge_fp16_scaler(paths: RunPaths) -> Item:
    """fp16 autocast with a GradScaler that scaled: every forward in float16, the scaler on, its
    scale in the checkpoint finite and positive."""
    name = "fp16-scaler"
    ok, text = judge_autocast(paths, "float16", devices=1)
    scaler_ok, scaler_text = judge_grad_scaler(paths, "fp16")
    ckpt = _checkpoint(paths) or {}
    scale = (ckpt.get("scaler") or {}).get("scale") if isinstance(ckpt.get("scaler"), dict) else None
    scale = float(scale) if scale is not None else None
    evidence = {"autocast": text, "grad_scaler": scaler_text, "checkpoint_scale": scale}
    if not ok or not scaler_ok:
        return Item(name, FAIL, f"{text}; {scaler_text}", evidence)
    if scale is None or not scale > 0 or scale != scale or scale == float("inf"):
        return Item(name, FAIL, f"the GradScaler's scale in last.pt is {scale}", evidence)
    return Item(name, PASS, f"{text}; GradScaler on, scale {scale:g} in last.pt", evidence)


def judge_grad_accum(paths: RunPaths, weights_dir, ranks: int, grad_accum: int) -> Item:
    """grad_accum micro-batches with DDP's no_sync on all but the last: the run finished, and every
    rank ended with the same weights (a missed all-reduce lets them drift apart)."""
    import torch

    name = "grad-accum"
    item = judge_training(paths, paths_device(paths))
    evidence = dict(item.evidence, ranks=ranks, grad_accum=grad_accum)
    if item.status != PASS:
        return Item(name, FAIL, item.detail, evidence)
    from pathlib import Path

    files = sorted(Path(weights_dir).glob("rank-*.pt"))
    if len(files) < ranks or ranks < 2:
        return Item(name, FAIL, f"{len(files)} rank weight file(s) of {ranks} (needs 2 or more ranks)", evidence)
    states = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    differ = sorted({k for s in states[1:] for k in states[0] if not torch.equal(states[0][k], s.get(k))})
    evidence["differing_tensors"] = differ
    if differ:
        return Item(name, FAIL, f"ranks ended with different weights ({', '.join(differ[:4])}): gradients were "
                    f"not all-reduced after no_sync", evidence)
    return Item(name, PASS, f"grad_accum {grad_accum} with no_sync over {ranks} ranks: {item.detail}; all ranks "
                f"ended with identical weights", evidence)


def paths_device(paths: RunPaths) -> str:
    running = _running(paths)
    return str(running[0]["device"]).split(":")[0] if running else "cuda"


def judge_stop(stopped_exit: dict[str, Any], total_steps: int, survivors: list[int]) -> Item:
    """A DDP run stopped mid-training: ended "stopped" before its last step, nothing of it alive."""
    name = "stop"
    evidence = {"exit": stopped_exit, "total_steps": total_steps, "survivors": survivors}
    if stopped_exit.get("state") != "stopped":
        return Item(name, FAIL, f"the run ended {stopped_exit.get('state') or 'without exit.json'}, not stopped "
                    f"(it may have finished before the stop)", evidence)
    if survivors:
        return Item(name, FAIL, f"process(es) {survivors} still alive after the stop", evidence)
    return Item(name, PASS, f"stopped mid-training in {stopped_exit.get('seconds')} s of run; no process of it "
                f"left", evidence)


def judge_resume(paths: RunPaths, stopped_ckpt: dict[str, Any] | None, device_type: str, ranks: int,
                 fp16: bool) -> Item:
    """The stopped run resumed onto the device: its second launch started at last.pt's step (not 0)
    on `device_type` and finished; last.pt held the optimizer state, the GradScaler's (fp16) and
    every rank's RNG, CUDA's included."""
    name = "resume"
    launches = _running(paths)
    ckpt = stopped_ckpt or {}
    rng = ckpt.get("rng") or []
    evidence = {"launches": len(launches), "checkpoint_step": ckpt.get("step"),
                "resumed_start_step": launches[-1].get("start_step") if launches else None,
                "optimizer_state": bool((ckpt.get("optimizer") or {}).get("state")),
                "scaler": ckpt.get("scaler") if isinstance(ckpt.get("scaler"), dict) else None,
                "rng_ranks": len(rng), "cuda_rng": all(bool(r.get("cuda")) for r in rng) if rng else False}
    evidence["scaler"] = {k: (float(v) if isinstance(v, (int, float)) else v)
                          for k, v in (evidence["scaler"] or {}).items() if k in ("scale", "_growth_tracker")}
    exit_state = (read_json(paths.exit_json, {}) or {}).get("state")
    problems = []
    if not stopped_ckpt:
        problems.append("no last.pt from before the stop")
    if len(launches) < 2:
        problems.append(f"{len(launches)} launch(es): the run was not resumed")
    elif not ckpt.get("step") or evidence["resumed_start_step"] != ckpt.get("step"):
        problems.append(f"the resumed launch started at step {evidence['resumed_start_step']}, last.pt is at "
                        f"step {ckpt.get('step')}")
    if launches and not str(launches[-1]["device"]).startswith(device_type):
        problems.append(f"resumed on {launches[-1]['device']}, not {device_type}")
    if exit_state != "finished":
        problems.append(f"the resumed run ended {exit_state}")
    if stopped_ckpt and not evidence["optimizer_state"]:
        problems.append("last.pt has no optimizer state")
    if stopped_ckpt and fp16 and not evidence["scaler"].get("scale"):
        problems.append("last.pt has no GradScaler state (fp16)")
    if stopped_ckpt and len(rng) < ranks:
        problems.append(f"last.pt has the RNG of {len(rng)} of {ranks} rank(s)")
    if stopped_ckpt and device_type == "cuda" and not evidence["cuda_rng"]:
        problems.append("last.pt has no CUDA RNG state")
    if problems:
        return Item(name, FAIL, "; ".join(problems), evidence)
    return Item(name, PASS, f"resumed at step {ckpt.get('step')} on {launches[-1]['device']} and finished; last.pt "
                f"held the optimizer, {'the GradScaler (scale ' + str(evidence['scaler'].get('scale')) + '), ' if fp16 else ''}"
                f"{len(rng)} rank RNG state(s){' with CUDA' if evidence['cuda_rng'] else ''}", evidence)


def judge_onnx(paths: RunPaths, device_type: str = "cuda") -> Item:
    """The ONNX export at the end of a run that trained on `device_type`: the file is there."""
    name = "onnx"
    messages = [str(e.get("message")) for e in read_all(paths.events) if e.get("kind") == "log"
                and "ONNX" in str(e.get("message"))]
    device = paths_device(paths)
    evidence = {"messages": messages, "device": device}
    onnx_file = paths.root / "model.onnx"
    if any("not installed" in m for m in messages):
        return Item(name, SKIP, messages[-1], evidence)
    if device != device_type:
        return Item(name, FAIL, f"the run trained on {device}, not {device_type}", evidence)
    if not onnx_file.is_file() or not any(m.startswith("exported ONNX") for m in messages):
        return Item(name, FAIL, messages[-1] if messages else "no export message and no model.onnx", evidence)
    evidence["bytes"] = onnx_file.stat().st_size
    return Item(name, PASS, f"from the model on {device}: {messages[-1]}", evidence)


def judge_rank_failure(paths: RunPaths, rank: int, bound_s: float, backend: str | None) -> Item:
    """A rank that raises mid-training ends the whole run within `bound_s` of its failure (not NCCL's
    10-minute timeout), and exit.json names that rank."""
    from traindeck.heartbeat import read_heartbeats

    name = "rank-failure"
    data = read_json(paths.exit_json, {}) or {}
    beat = read_heartbeats(paths.root).get(rank) or {}
    failed_at, ended = _as_float(beat.get("t")), _as_float(data.get("t"))
    seconds = round(ended - failed_at, 1) if failed_at is not None and ended is not None else None
    evidence = {"state": data.get("state"), "failed_rank": data.get("failed_rank"), "backend": backend,
                "rank_state": beat.get("state"), "seconds_from_failure_to_exit": seconds,
                "error": list(data.get("error") or [])[:4]}
    if data.get("state") != "failed":
        return Item(name, FAIL, f"the run ended {data.get('state') or 'without exit.json'}, not failed", evidence)
    if data.get("failed_rank") != rank:
        return Item(name, FAIL, f"exit.json names rank {data.get('failed_rank')}, the failing rank was {rank}",
                    evidence)
    if beat.get("state") != "failed" or seconds is None or seconds > bound_s:
        return Item(name, FAIL, f"rank {rank} {beat.get('state')}; the run ended {seconds} s after it "
                    f"(bound {bound_s:.0f} s)", evidence)
    return Item(name, PASS, f"rank {rank} raised under {backend or 'the process group'}; the run failed "
                f"{seconds} s later naming rank {rank}", evidence)


def run_processes(paths: RunPaths) -> list[dict[str, Any]]:
    return [p for p in read_run_json(paths).get("processes") or [] if isinstance(p, dict)]
