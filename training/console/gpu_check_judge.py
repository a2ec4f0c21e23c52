"""Judging what one of the GPU check's runs left in its run directory, item by item (pure: what
the tests exercise on CPU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from training.rundir import RunPaths, read_json, read_run_json
from training.rundir.events import read_all

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


def judge_telemetry(samples: list[dict[str, Any]], world_size: int, heartbeats: dict[int, dict]) -> Item:
    """Real NVML samples with every field the panels need on the run's GPUs, ranks by UUID."""
    name = "telemetry"
    gpu_samples = [s for s in samples if s.get("gpus")]
    if not gpu_samples:
        return Item(name, FAIL, "no GPU sample in telemetry.jsonl (source "
                    f"{sorted({s.get('source') for s in samples}) or 'none'})")
    sources = sorted({str(s.get("source")) for s in gpu_samples})
    if sources != ["nvml"]:
        return Item(name, FAIL, f"telemetry source {sources}: not the real NVML")
    ranked = [g for s in gpu_samples for g in s["gpus"] if g.get("ranks")]
    mapped = sorted({r for g in ranked for r in g["ranks"]})
    missing = {f: sum(1 for g in ranked if g.get(f) is None) for f in TELEMETRY_FIELDS}
    no_uuid = sorted(r for r in range(world_size) if not (heartbeats.get(r) or {}).get("devices"))
    evidence = {"samples": len(gpu_samples), "ranks_mapped": mapped, "missing_fields": missing,
                "ranks_without_device_uuid": no_uuid}
    if mapped != list(range(world_size)):
        return Item(name, FAIL, f"ranks mapped to GPUs: {mapped}, expected 0..{world_size - 1}", evidence)
    if no_uuid:
        return Item(name, FAIL, f"rank(s) {no_uuid} wrote no device UUID in their heartbeat", evidence)
    # The mapping must be the UUID's, not the PID fallback's: each rank's heartbeat UUID (torch's
    # view) is the NVML UUID of a GPU that lists the rank.
    from training.monitor.gpu import normalize_uuid

    nvml_uuids = {r: {normalize_uuid(g.get("uuid")) for g in ranked if r in g["ranks"]} for r in mapped}
    unmatched = sorted(r for r in range(world_size)
                       if not {normalize_uuid(d.get("uuid")) for d in heartbeats[r]["devices"]} & nvml_uuids[r])
    evidence["ranks_not_matched_by_uuid"] = unmatched
    if unmatched:
        return Item(name, FAIL, f"rank(s) {unmatched}: the heartbeat's device UUID is not the NVML UUID of their "
                    f"GPU (mapped by PID only)", evidence)
    absent = [f for f, n in missing.items() if n == len(ranked)]
    if absent:
        return Item(name, FAIL, f"never reported on the run's GPUs: {', '.join(absent)}", evidence)
    return Item(name, PASS, f"{len(gpu_samples)} NVML samples; {world_size} rank(s) mapped by device UUID; "
                f"{', '.join(TELEMETRY_FIELDS)} present", evidence)


def judge_memory(baseline: dict[int, int], now: dict[int, int], holders: list[Any],
                 tolerance_mib: int = MEMORY_TOLERANCE_MIB) -> Item:
    """No process of the runs on any GPU, and no GPU holding more than before the check."""
    name = "memory"
    grown = {i: now[i] - baseline.get(i, 0) for i in now if now[i] - baseline.get(i, 0) > tolerance_mib}
    evidence = {"baseline_mib": baseline, "after_mib": now, "holders": [list(h) for h in holders]}
    if holders:
        return Item(name, FAIL, "still holding GPU memory: " + ", ".join(
            f"pid {h[0]} on GPU {h[1]} ({h[2]} MiB)" for h in holders), evidence)
    if grown:
        return Item(name, FAIL, "used memory above the baseline: " + ", ".join(
            f"GPU {i} +{mib} MiB" for i, mib in sorted(grown.items())), evidence)
    return Item(name, PASS, f"no process of the runs on any GPU; used memory within {tolerance_mib} MiB of the "
                f"baseline on {len(now)} GPU(s)", evidence)


def run_processes(paths: RunPaths) -> list[dict[str, Any]]:
    return [p for p in read_run_json(paths).get("processes") or [] if isinstance(p, dict)]
