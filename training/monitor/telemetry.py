"""The telemetry sampler: one JSON line per interval in telemetry.jsonl.

Runs as a daemon thread in the supervisor. With GPUs it samples every device through
training.monitor.gpu (source "nvml", or "fake-nvml" for the test/demo stand-in); without, every worker process of the run through psutil
(source "cpu"). Host CPU and memory are in both. Each line is written with one os.write on
an O_APPEND descriptor, and carries "kind": "telemetry" so training.rundir.events_file.EventReader (which
wants a "kind") tails this file as it tails events.jsonl:

    {"v":1,"t":1764000000.25,"kind":"telemetry","source":"nvml",
     "host":{"cpu_percent":12.0,"mem_used_mib":900,"mem_total_mib":24000},
     "gpus":[{"index":0,"name":"NVIDIA B200","util":97,...,"fan_pct":null,"throttle":["sw_power_cap"],
              "processes":[{"pid":125,"rank":0,"mem_mib":80000}],"error":null}]}
    {"v":1,"t":...,"kind":"telemetry","source":"cpu","host":{...},
     "workers":[{"rank":0,"pid":125,"cpu_percent":98.0,"rss_mib":410.0,"threads":4}]}

Ranks are matched to GPUs by device UUID, else PCI bus id: each rank's heartbeat lists its GPUs
and each GPU entry gets "ranks": [...] from them. A rank on a MIG instance names the instance's
MIG-<uuid> (or, where CUDA gives none, the GPU's PCI bus id): it counts on the GPU that holds it,
which NVML samples. NVML's process PIDs are only the fallback: inside
a container they are host PIDs and match no process of the run. Only the GPUs the run can see (its
CUDA_VISIBLE_DEVICES, MIG) are sampled; a run that sees none (gpus = 0) samples its workers.

The first line also has "sample_cost_ms" (what one sample costs, so a too-short interval can
be spotted) and "interval_s"; the line written by stop() has "final": true.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import psutil

from traindeck.heartbeat import read_heartbeats
from traindeck.untrusted import open_regular
from training.errors import TraindeckError
from training.monitor.gpu import GpuBackend, GpuInfo, GpuSample, get_backend, normalize_bus_id, normalize_uuid
from training.rundir import RunPaths
from training.rundir.events_file import (
    encode,
    make_event,
    open_append,
    parse_lines,
    read_all,
    read_last_lines,
)
from training.rundir.write_failures import WriteTrouble

MIN_INTERVAL_S = 0.25
KIND = "telemetry"
MIB = 1 << 20

log = logging.getLogger("traindeck.telemetry")


class TelemetryIntervalError(TraindeckError):
    """The sampling interval is shorter than NVML can measure."""


def check_interval(interval_s: float) -> float:
    interval_s = float(interval_s)
    if not interval_s >= MIN_INTERVAL_S:  # also refuses NaN
        raise TelemetryIntervalError(
            f"telemetry interval_s = {interval_s:g} s is too short: the minimum is {MIN_INTERVAL_S:g} s. "
            "NVML averages GPU utilization over a sample period of 1/6 s to 1 s (depending on the GPU), "
            "so sampling faster only repeats the same number and costs CPU next to training. "
            f"Set [telemetry] interval_s to {MIN_INTERVAL_S:g} or more (1.0 is the default).")
    return interval_s


class _WorkerCpu:
    """CPU% of one process from its cpu_times deltas.

    The first reading is the average since the process started (cpu time / age), so a worker
    that just appeared shows a meaningful number at once, not psutil's unprimed 0.0.
    """

    def __init__(self, proc: psutil.Process):
        self.proc = proc
        self.last: tuple[float, float] | None = None  # (cpu seconds, monotonic)

    def read(self) -> dict[str, Any]:
        with self.proc.oneshot():
            times = self.proc.cpu_times()
            cpu_s = times.user + times.system
            now = time.monotonic()
            if self.last is None:
                age = max(1e-3, time.time() - self.proc.create_time())
                percent = 100.0 * cpu_s / age
            else:
                dt = now - self.last[1]
                percent = 100.0 * (cpu_s - self.last[0]) / dt if dt > 0 else 0.0
            self.last = (cpu_s, now)
            rss = self.proc.memory_info().rss
            threads = self.proc.num_threads()
        return {"cpu_percent": round(max(0.0, percent), 1), "rss_mib": round(rss / MIB, 1), "threads": threads}


class TelemetrySampler:
    """Samples every interval_s on a monotonic schedule until stop()."""

    def __init__(self, paths: RunPaths, interval_s: float, ranks_by_pid: Callable[[], dict[int, int]],
                 backend: GpuBackend | None = None, gpu_indices: Iterable[int] | None = None,
                 ranks_by_device: Callable[[], dict[str, list[int]]] | None = None,
                 trouble: WriteTrouble | None = None):
        """gpu_indices: NVML indices of the GPUs the run can see (None: all of them).
        ranks_by_device: normalized UUID / PCI bus id -> ranks (default: the run's heartbeats).
        trouble: where failed writes (a full disk) are counted and told; the supervisor's own."""
        self.paths = paths
        self.interval_s = check_interval(interval_s)
        self.ranks_by_pid = ranks_by_pid
        self.ranks_by_device = ranks_by_device or (lambda: device_ranks(read_heartbeats(paths.root)))
        self.gpu_indices = None if gpu_indices is None else frozenset(int(i) for i in gpu_indices)
        self._backend = backend
        self.source: str | None = None  # "nvml", "fake-nvml" or "cpu", decided at start()
        self.samples_written = 0
        self.sample_cost_ms: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._workers: dict[int, _WorkerCpu] = {}
        self._last_ranks: dict[int, int] = {}
        self._write_error_logged = False
        self.trouble = trouble or WriteTrouble(warn=log.warning)
        self.samples_dropped = 0
        # A write that failed part way may have left half a line: the next one starts on a new line,
        # so one sample is lost rather than two run together.
        self._maybe_half_line = False
        self._lock = threading.Lock()  # the thread and stop()'s final sample never overlap
        self._infos: dict[int, GpuInfo] | None = None  # what identifies each GPU (static): read once

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        backend = self._backend if self._backend is not None else get_backend()
        self._backend = backend
        if backend.available and self.gpu_indices != frozenset():
            self.source = backend.source
        else:
            self.source = "cpu"
            log.info("telemetry: %s; sampling worker processes (CPU) instead",
                     backend.error or "the run sees no GPU")
        self._fd = open_append(self.paths.telemetry)
        psutil.cpu_percent(None)  # prime host CPU%: the first sample is then the load since now
        self._thread = threading.Thread(target=self._run, name="traindeck-telemetry", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the thread promptly and write one final sample."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._sample_once(final=True)
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self._thread = None

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        start = time.monotonic()
        tick = 1
        # The first sample is one interval in: host and worker CPU% then cover a real period.
        while not self._stop.wait(max(0.0, start + tick * self.interval_s - time.monotonic())):
            self._sample_once()
            # A fixed grid (start + k * interval), so the rate does not drift by the sample's
            # cost; an overrun skips the missed ticks instead of bursting to catch up.
            tick = max(tick + 1, int((time.monotonic() - start) / self.interval_s) + 1)

    def _sample_once(self, final: bool = False) -> None:
        with self._lock:
            if self._fd is None:
                return
            try:
                t0 = time.perf_counter()
                line = self.sample()
                cost_ms = (time.perf_counter() - t0) * 1000.0
                if self.samples_written == 0:
                    self.sample_cost_ms = round(cost_ms, 2)
                    line["sample_cost_ms"] = self.sample_cost_ms
                    line["interval_s"] = self.interval_s
                    log.info("telemetry: source %s, every %g s, one sample costs %.1f ms",
                             self.source, self.interval_s, cost_ms)
                if final:
                    line["final"] = True
                data = encode(line)
            except Exception as exc:  # a psutil oddity must not end telemetry
                if not self._write_error_logged:
                    log.warning("telemetry: sample failed (%s: %s); will keep trying",
                                type(exc).__name__, exc)
                    self._write_error_logged = True
                return
            if self._maybe_half_line:
                data = b"\n" + data
            try:
                written = os.write(self._fd, data)  # one write on O_APPEND: readers never see half a line
            except OSError as exc:  # a full or read-only disk: the sample is dropped, told, and the next tried
                self.samples_dropped += 1
                self.trouble.failed("telemetry.jsonl", exc, dropped=1)
                return
            self._maybe_half_line = written < len(data)
            if self._maybe_half_line:  # a nearly full disk took part of it
                self.samples_dropped += 1
                return
            self.samples_written += 1
            self.trouble.ok("telemetry.jsonl")

    # ------------------------------------------------------------------ one sample

    def _ranks(self) -> dict[int, int]:
        try:
            ranks = dict(self.ranks_by_pid() or {})
        except Exception:
            return self._last_ranks  # the callback failing once must not blank the ranks
        self._last_ranks = ranks
        return ranks

    def sample(self) -> dict[str, Any]:
        """Build one telemetry line (a dict) without writing it."""
        ranks = self._ranks()
        fields: dict[str, Any] = {"source": self.source, "host": _host()}
        if self.source != "cpu":
            try:
                by_device = self.ranks_by_device() or {}
            except Exception:
                by_device = {}
            if self._infos is None:
                self._infos = {d.index: d for d in self._backend.devices()}
            fields["gpus"] = [_gpu_dict(s, ranks, by_device, self._infos.get(s.index)) for s in self._backend.sample()
                              if self.gpu_indices is None or s.index in self.gpu_indices]
        else:
            fields["workers"] = self._workers_sample(ranks)
        return make_event(KIND, **fields)

    def _workers_sample(self, ranks: dict[int, int]) -> list[dict[str, Any]]:
        out = []
        for pid, rank in sorted(ranks.items(), key=lambda item: (item[1], item[0])):
            entry: dict[str, Any] = {"rank": rank, "pid": pid}
            worker = self._workers.get(pid)
            try:
                if worker is None:
                    worker = self._workers[pid] = _WorkerCpu(psutil.Process(pid))
                entry.update(worker.read())
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                self._workers.pop(pid, None)
                continue  # the worker has exited; exit.json and the events tell that story
            except psutil.AccessDenied:
                entry.update({"cpu_percent": None, "rss_mib": None, "threads": None})
            out.append(entry)
        for pid in set(self._workers) - set(ranks):
            del self._workers[pid]
        return out


def _host() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(None),
        # total - available is what is really taken (page cache can be given back).
        "mem_used_mib": int((vm.total - vm.available) // MIB),
        "mem_total_mib": int(vm.total // MIB),
    }


def device_ranks(heartbeats: dict[int, dict]) -> dict[str, list[int]]:
    """Normalized device UUID and PCI bus id -> the ranks whose heartbeat names that GPU."""
    out: dict[str, set[int]] = {}
    for rank, beat in heartbeats.items():
        devices = beat.get("devices")
        for device in devices if isinstance(devices, list) else []:
            if not isinstance(device, dict):
                continue
            for key in (normalize_uuid(device.get("uuid")), normalize_bus_id(str(device.get("pci_bus_id") or ""))):
                if key:
                    out.setdefault(key, set()).add(int(rank))
    return {key: sorted(ranks) for key, ranks in out.items()}


def gpu_ranks(by_device: dict[str, list[int]], uuid: str | None, info: GpuInfo | None = None) -> list[int]:
    """The ranks whose heartbeat names this GPU (device_ranks' keys): by UUID, the GPU's own or one
    of its MIG instances'; else by its PCI bus id (a MIG instance shares its GPU's)."""
    uuids = [uuid, *(info.uuid, *info.mig_uuids)] if info is not None else [uuid]
    found = {r for u in uuids for r in by_device.get(normalize_uuid(u) or "", ())}
    if not found and info is not None and info.pci_bus_id:
        found = set(by_device.get(normalize_bus_id(info.pci_bus_id) or "", ()))
    return sorted(found)


def _gpu_dict(sample: GpuSample, ranks: dict[int, int], by_device: dict[str, list[int]] | None = None,
              info: GpuInfo | None = None) -> dict[str, Any]:
    data = sample.to_dict()
    data["processes"] = [{"pid": p.pid, "rank": ranks.get(p.pid), "mem_mib": p.used_mib}
                         for p in sample.processes]
    # The GPU's ranks: by device from the heartbeats; by NVML's PIDs only when no heartbeat names it.
    by_uuid = gpu_ranks(by_device or {}, sample.uuid, info)
    data["ranks"] = by_uuid if by_uuid else sorted({p["rank"] for p in data["processes"] if p["rank"] is not None})
    return data


def read_telemetry(path: Path, last_n: int | None = None) -> list[dict[str, Any]]:
    """Telemetry lines of a file, oldest first; with last_n only the newest last_n, read backwards
    from the end in blocks (a day of 8-GPU samples is hundreds of MB, and a panel wants the last
    few): linear in what it reads and bounded in memory, whatever one line's length."""
    if last_n is not None and last_n <= 0:
        return []
    if last_n is None:
        samples = [e for e in read_all(path) if e["kind"] == KIND]
        return samples
    try:
        with open_regular(path) as f:
            # One more than asked: the last line may be half written (skipped as junk).
            raw_lines = read_last_lines(f, last_n + 1)
    except OSError:
        return []
    samples = [e for e in parse_lines(raw_lines)[0] if e["kind"] == KIND]
    return samples[-last_n:]
