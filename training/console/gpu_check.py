"""`run.py --gpu-check`: prove on a box with NVIDIA GPUs, in a few minutes, that traindeck's CUDA
paths work -- a checklist on stdout and gpu-check.json in its run directory.

    .venv/bin/python run.py --gpu-check      # or: make gpu-check (no install step, no network)

What it proves (each item PASS, FAIL or SKIP, with the evidence in the JSON report):

    cuda          NVML sees the GPUs and this torch can use them (torch, CUDA, NCCL, driver versions)
    single        a single-process run trains and checkpoints on cuda:0
    dp            nn.DataParallel over min(GPUs, 4) trains and checkpoints (SKIP with one GPU)
    ddp-nccl      DDP over nccl, one rank per GPU (up to 8), trains and checkpoints
    ddp-gloo      with one GPU: DDP with 2 gloo ranks over CUDA tensors on it (SKIP otherwise)
    autocast      inside the forward of every DP replica and DDP rank the autocast dtype is the
                  profile's (a forward hook in the worker records it); with one GPU DP's replica
                  threads are exercised by parallel_apply with two replicas on the same device;
                  a GradScaler only with fp16
    telemetry     real NVML telemetry ("source": "nvml") of the ddp run with util, memory,
                  temperature and power, every rank mapped to its GPU by device UUID
    memory        after the runs and a stopped run, no process of them holds GPU memory: by NVML
                  process and by used memory against the baseline taken before the first run
    screen        the run screen renders (Textual run_test) from that real telemetry
    preflight     `--check` of every shipped profile ran; what this box lacks is listed as found

"No GPU" is decided by NVML: without a driver or GPUs the check prints one line and exits 77
(skipped). Where NVML sees GPUs but torch cannot use them (the CPU wheel installed by mistake),
it fails at once and says how to install a CUDA build.

The checker process itself never creates a CUDA context (the parallel_apply probe runs in a child
process), so the memory item compares the GPUs with what they held before the check.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, TextIO

from training.console.gpu_check_judge import (  # noqa: F401 - re-exported: tests import them from here
    FAIL,
    MEMORY_TOLERANCE_MIB,
    PASS,
    SKIP,
    TELEMETRY_FIELDS,
    Item,
    autocast_records,
    judge_autocast,
    judge_grad_scaler,
    judge_memory,
    judge_telemetry,
    judge_training,
    run_processes,
)
from training.console.gpu_check_probe import _replica_probe_main, replica_probe
from training.profile import Profile, list_profile_names, load_profile, parse_profile
from training.rundir import (
    RunPaths,
    create_run_dir,
    hostname,
    read_json,
    write_json_atomic,
)
from training.rundir.events import read_all
from training.rundir.heartbeat import read_heartbeats
from training.rundir.records import ExitRecord, finish_run

EXIT_SKIPPED = 77
REPORT_NAME = "gpu-check.json"
RUN_TIMEOUT_S = 150.0
MEMORY_SETTLE_S = 15.0
MAX_DP_GPUS = 4
MAX_DDP_RANKS = 8

# The run profiles: the built-in tiny MLP, a few seconds each on any GPU.
_PROFILE = """name = "{name}"
description = "traindeck --gpu-check: {what}"

[hardware]
gpus = {gpus}

[launch]
mode = "{mode}"
{launch}
stop_grace_s = 5

[train]
task = "tiny"
epochs = {epochs}
steps_per_epoch = 20
batch_size = 64
lr = 0.003
amp = "{amp}"
log_every = 5

[task]
samples = 8192
features = 32
hidden = 256

[checkpoint]
every_epochs = 1
keep_last = 1

[telemetry]
interval_s = 0.5
"""


def gpu_profile(name: str, mode: str, gpus: int, amp: str, nproc: int = 1, backend: str = "auto",
                epochs: int = 2) -> Profile:
    launch = f'nproc_per_node = {nproc}\nbackend = "{backend}"' if mode == "ddp" else ""
    text = _PROFILE.format(name=name, what=f"{mode} on {gpus} GPU(s)", gpus=gpus, mode=mode, launch=launch,
                           amp=amp, epochs=epochs)
    return parse_profile(text, path=f"<gpu-check {name}>")


# ---- the check -------------------------------------------------------------------------------

class GpuCheck:
    def __init__(self, runs_dir: Path, out: TextIO = sys.stdout, backend: Any = None,
                 render: Callable[[RunPaths, Path], dict[str, Any]] | None = None,
                 run_timeout_s: float = RUN_TIMEOUT_S, device_type: str = "cuda"):
        """device_type "cpu" is a dry run of the whole flow on a box without CUDA (with the fake
        NVML), for trying the check before a GPU session; it skips the gate."""
        from training.monitor.gpu import get_backend

        self.runs_dir = Path(runs_dir)
        self.out = out
        self.backend = backend if backend is not None else get_backend()
        self.render = render
        self.run_timeout_s = run_timeout_s
        self.device_type = device_type
        self.items: list[Item] = []
        self.report: dict[str, Any] = {}
        self.check_dir: RunPaths | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- the gate: NVML, then torch ------------------------------------------------------------
    def gate(self) -> int | None:
        """None to go on; else the exit code (77 no GPU, 1 unusable)."""
        from training.console.preflight import CUDA_INSTALL_HINT

        if not self.backend.available:
            self.say(f"gpu-check skipped: {self.backend.error or 'no NVIDIA driver/GPU found'}")
            return EXIT_SKIPPED
        import torch

        gpus = self.backend.device_count()
        if torch.version.cuda is None:
            self.say(f"gpu-check FAILED: NVML sees {gpus} GPU(s) but torch {torch.__version__} is a CPU build; "
                     + CUDA_INSTALL_HINT)
            return 1
        if not torch.cuda.is_available():
            self.say(f"gpu-check FAILED: NVML sees {gpus} GPU(s) but torch {torch.__version__} (CUDA "
                     f"{torch.version.cuda}) cannot use them: is the driver ({self.backend.driver_version()}) "
                     f"older than this CUDA build needs, or CUDA_VISIBLE_DEVICES empty? Otherwise "
                     + CUDA_INSTALL_HINT)
            return 1
        return None

    def run(self) -> int:
        code = self.gate() if self.device_type == "cuda" else None
        if code is not None:
            return code
        import torch  # noqa: F401 - loaded before the clock starts: the seconds are the check's own

        t0 = time.monotonic()
        runs_dir = self._open_check_dir()
        n, amp, dtype = self._describe_box()
        baseline = self.used_memory()
        self.report["baseline_mib"] = baseline

        done, ranks = self._training_runs(n, amp, runs_dir)
        self.items.append(self.autocast_item(done, amp, dtype, n))
        ddp = done["ddp-nccl"]
        from training.monitor.telemetry import read_telemetry

        telemetry = judge_telemetry(read_telemetry(ddp.telemetry), ranks, read_heartbeats(ddp.root))
        self.items.append(telemetry)

        self.say("  ... a run stopped mid-training, then GPU memory against the baseline")
        stopped = self.stopped_run(amp, runs_dir)
        self.report["runs"]["stopped"] = str(stopped.root)
        all_runs = [*done.values(), stopped]
        memory = self.memory_item(baseline, all_runs)
        self.items.append(memory)
        self.say("  ... the run screen, then --check of every shipped profile")
        self.items.append(self.screen_item(ddp))
        self.items.append(self.preflight_item(runs_dir))
        return self._finish(time.monotonic() - t0)

    def _open_check_dir(self) -> Path:
        """The check's run directory, like any other (listed by --runs, live while the check runs);
        its runs are inside it, in runs/ (returned)."""
        from training.rundir.processes import pid_create_time

        self.check_dir = create_run_dir(self.runs_dir, "gpu-check")
        write_json_atomic(self.check_dir.run_json, {
            "id": self.check_dir.id, "profile": "gpu-check", "mode": "check", "world_size": 0,
            "argv": ["--gpu-check"], "host": hostname(), "created": round(time.time(), 3),
            "rehearsal": False, "supervisor": pid_create_time(), "launcher": None, "processes": [],
            "port": None, "env": {}, "state": "running", "state_t": round(time.time(), 3)})
        runs_dir = self.check_dir.root / "runs"
        runs_dir.mkdir(mode=0o700)
        return runs_dir

    def _describe_box(self) -> tuple[int, str, str]:
        """The report's header and the `cuda` item; returns (GPUs, amp, its torch dtype name)."""
        import torch

        devices = self.backend.devices()
        n = len(devices)
        caps = [d.compute_capability for d in devices]
        amp = "bf16" if all(c is not None and c >= (8, 0) for c in caps) else "fp16"
        dtype = {"bf16": "bfloat16", "fp16": "float16"}[amp]
        nccl = None
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:
            pass
        self.report = {
            "host": hostname(), "started": round(time.time(), 3), "torch": torch.__version__,
            "cuda": torch.version.cuda, "nccl": nccl, "driver": self.backend.driver_version(),
            "gpus": [{"index": d.index, "name": d.name, "uuid": d.uuid, "memory_total_mib": d.memory_total_mib,
                      "compute_capability": d.compute_capability, "pci_bus_id": d.pci_bus_id, "mig": d.mig}
                     for d in devices],
            "amp": amp, "runs": {},
        }
        self.say(f"gpu-check: {n} GPU(s) ({', '.join(sorted({d.name for d in devices}))}), driver "
                 f"{self.report['driver']}, torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {nccl}; "
                 f"amp {amp}; run directory {self.check_dir.root}")
        self.items.append(Item("cuda", PASS, f"NVML and torch see {n} GPU(s); torch {torch.__version__}, "
                               f"CUDA {torch.version.cuda}, NCCL {nccl}, driver {self.report['driver']}"))
        return n, amp, dtype

    def _training_runs(self, n: int, amp: str, runs_dir: Path) -> tuple[dict[str, RunPaths], int]:
        """single, dp, ddp-nccl, ddp-gloo as this box allows, each judged; ({key: run}, ddp ranks)."""
        plans: list[tuple[str, Profile]] = [("single", gpu_profile("gpucheck-single", "single", 1, amp))]
        if n >= 2:
            dp_gpus = min(n, MAX_DP_GPUS)
            plans.append(("dp", gpu_profile("gpucheck-dp", "dp", dp_gpus, amp)))
        ranks = min(n, MAX_DDP_RANKS)
        plans.append(("ddp-nccl", gpu_profile("gpucheck-ddp", "ddp", ranks, amp, nproc=ranks, backend="nccl")))
        if n == 1:
            plans.append(("ddp-gloo", gpu_profile("gpucheck-gloo", "ddp", 1, amp, nproc=2, backend="gloo")))
        done: dict[str, RunPaths] = {}
        for key, profile in plans:
            self.say(f"  ... {key}: {profile.launch.mode} on {profile.hardware.gpus} GPU(s)")
            paths = self.train(profile, runs_dir)
            done[key] = paths
            backend = profile.launch.backend if key.startswith("ddp") and self.device_type == "cuda" else None
            item = judge_training(paths, self.device_type, backend)
            item.name = key
            self.report["runs"][key] = str(paths.root)
            self.items.append(item)
        if "dp" not in done:
            self.items.append(Item("dp", SKIP, "one GPU: DataParallel needs two; its replica threads are "
                                   "exercised by the parallel_apply probe below"))
        if "ddp-gloo" not in done:
            self.items.append(Item("ddp-gloo", SKIP, "more than one GPU: one nccl rank per GPU covers DDP"))
        return done, ranks

    def _finish(self, seconds: float) -> int:
        """gpu-check.json, the check directory's final state, the checklist; 0 when nothing failed."""
        failed = [i.name for i in self.items if i.status == FAIL]
        self.report.update(seconds=round(seconds, 1), passed=not failed,
                           items=[asdict(i) for i in self.items])
        write_json_atomic(self.check_dir.root / REPORT_NAME, self.report)
        finish_run(self.check_dir, ExitRecord(state="failed" if failed else "finished"), write_exit=False)
        head = (f"gpu-check passed in {seconds:.0f} s" if not failed
                else f"gpu-check FAILED in {seconds:.0f} s ({', '.join(failed)})")
        self.say(head + f"; report {self.check_dir.root / REPORT_NAME}")
        for item in self.items:
            self.say(item.line())
        return 0 if not failed else 1

    # -- pieces --------------------------------------------------------------------------------
    def used_memory(self) -> dict[int, int]:
        return {s.index: s.mem_used_mib for s in self.backend.sample() if s.mem_used_mib is not None}

    def train(self, profile: Profile, runs_dir: Path) -> RunPaths:
        from training.console import runs

        paths = runs.start_run(profile, runs_dir, argv=["--gpu-check"])
        deadline = time.monotonic() + self.run_timeout_s
        while not paths.exit_json.exists() and time.monotonic() < deadline:
            time.sleep(0.25)
        if not paths.exit_json.exists():
            runs.stop_run(paths, grace_s=3)
        return paths

    def stopped_run(self, amp: str, runs_dir: Path) -> RunPaths:
        """A run stopped mid-training: what 'after stop' means for the memory item."""
        from training.console import runs

        paths = runs.start_run(gpu_profile("gpucheck-stop", "single", 1, amp, epochs=100000), runs_dir,
                               argv=["--gpu-check"])
        deadline = time.monotonic() + self.run_timeout_s
        while time.monotonic() < deadline and not paths.exit_json.exists():
            if any(e.get("kind") == "metric" for e in read_all(paths.events)):
                break
            time.sleep(0.25)
        runs.stop_run(paths, grace_s=5)
        return paths

    def autocast_item(self, done: dict[str, RunPaths], amp: str, dtype: str, gpus: int) -> Item:
        notes, ok = [], True
        if "dp" in done:
            good, text = judge_autocast(done["dp"], dtype, devices=min(gpus, MAX_DP_GPUS),
                                        device_type=self.device_type)
            ok &= good
            notes.append(text)
        elif self.device_type == "cuda":
            probe = replica_probe(amp)
            good = probe.get("ok", False)
            ok &= good
            notes.append(f"parallel_apply, 2 replicas on cuda:0: {probe.get('detail') or probe}")
        for key in ("single", "ddp-nccl", "ddp-gloo"):
            if key in done:
                ranks = 2 if key == "ddp-gloo" else (min(gpus, MAX_DDP_RANKS) if key == "ddp-nccl" else 1)
                devices = ranks if key == "ddp-nccl" and self.device_type == "cuda" else 1
                good, text = judge_autocast(done[key], dtype, devices=devices, ranks=ranks,
                                            device_type=self.device_type)
                ok &= good
                notes.append(text)
        for paths in done.values():
            good, text = judge_grad_scaler(paths, amp)
            ok &= good
            if not good:
                notes.append(text)
        notes.append(f"GradScaler {'on' if amp == 'fp16' else 'off'} with {amp}")
        return Item("autocast", PASS if ok else FAIL, "; ".join(notes))

    def memory_item(self, baseline: dict[int, int], all_runs: list[RunPaths]) -> Item:
        pids = sorted({int(p["pid"]) for paths in all_runs for p in run_processes(paths) if p.get("pid")})
        leaks = [leak for paths in all_runs for leak in (read_json(paths.exit_json, {}) or {}).get("gpu_leaks") or []]
        deadline = time.monotonic() + MEMORY_SETTLE_S
        while True:
            holders = list(self.backend.processes_of(pids))
            item = judge_memory(baseline, self.used_memory(), holders)
            if item.status == PASS or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if leaks and item.status == PASS:
            item = Item("memory", FAIL, f"exit.json of a run reported GPU leaks: {leaks}", item.evidence)
        return item

    def screen_item(self, paths: RunPaths) -> Item:
        if self.render is None:
            return Item("screen", SKIP, "no renderer given (run it through run.py --gpu-check)")
        try:
            result = self.render(paths, self.check_dir.root / "run-screen.svg")
        except Exception as exc:
            return Item("screen", FAIL, f"the run screen did not render: {type(exc).__name__}: {exc}")
        panels = result.get("panels") or []
        if result.get("simulated") or not panels or not all(p.startswith("GPU") for p in panels):
            return Item("screen", FAIL, f"rendered {panels or 'no panels'}"
                        + (" marked simulated" if result.get("simulated") else ""), result)
        return Item("screen", PASS, f"{len(panels)} GPU panel(s) from real telemetry: "
                    + ", ".join(panels[:8]) + f"; screenshot {result.get('svg')}", result)

    def preflight_item(self, runs_dir: Path) -> Item:
        from training.console.preflight import run_preflight

        results, problems = {}, []
        for name in list_profile_names():
            try:
                report = run_preflight(load_profile(name), runs_dir, backend=self.backend)
            except Exception as exc:
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            failed = [c.name for c in report.checks if not c.ok]
            results[name] = {"ok": report.ok, "lines": report.lines}
            if failed:
                problems.append(f"{name}: {', '.join(failed)}")
        ran = [n for n in results]
        status = PASS if len(ran) == len(list_profile_names()) else FAIL
        passed = [n for n, r in results.items() if r["ok"]]
        detail = (f"{len(ran)} profile(s) checked; ready here: {', '.join(passed) or 'none'}"
                  + (f"; not ready: {'; '.join(problems)} (the full preflight of each is in the report)"
                     if problems else ""))
        return Item("preflight", status, detail, {"profiles": results})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--replica-probe":
        sys.exit(_replica_probe_main(sys.argv[2]))
    print("usage: python -m training.console.gpu_check --replica-probe bf16|fp16 (the check itself: run.py --gpu-check)",
          file=sys.stderr)
    sys.exit(2)
