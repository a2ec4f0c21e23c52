"""`run.py --gpu-check`: prove on a box with NVIDIA GPUs, in a few minutes, that traindeck's CUDA
paths work -- a checklist on stdout and gpu-check.json in its run directory.

    .venv/bin/python run.py --gpu-check      # or: make gpu-check (no install step, no network)

What it proves (each item PASS, FAIL or SKIP, with its evidence in the JSON report). Its runs are
sized from the GPUs this process may use (the user's CUDA_VISIBLE_DEVICES; MIG instances count one
each), not from every GPU NVML lists:

    cuda          torch's own device count equals NVML's count of those GPUs, and torch's arch list
                  has kernels for each one's compute capability (torch, CUDA, NCCL, driver versions)
    single        a single-process run trains and checkpoints on cuda:0 (the box's amp)
    onnx          that run's model, on CUDA, exports to ONNX (SKIP without onnx/onnxscript)
    dp            nn.DataParallel over min(GPUs, 4): its forward hook counts one replica per GPU (a
                  fallback to one device fails); on one GPU, two replicas through parallel_apply
    ddp-nccl      DDP over nccl, one rank per GPU (up to 8), in fp16 with grad_accum 2, stopped
                  mid-training after its first checkpoint, resumed, finished
    stop          that stop: the run ended "stopped" before its last step, no process of it left
    resume        the resume: started at last.pt's step on CUDA and finished; last.pt held the
                  optimizer, the GradScaler and every rank's RNG (CUDA's too)
    fp16-scaler   fp16 autocast with a GradScaler that scaled, also where bf16 works
    grad-accum    grad_accum with no_sync over 2+ ranks: every rank ended with the same weights
    ddp-gloo      with one GPU: DDP with 2 gloo ranks over CUDA tensors on it, grad_accum 2
    autocast      inside the forward of every DP replica and DDP rank the autocast dtype is its run's
                  (a forward hook in the worker records it); a GradScaler only with fp16
    rank-failure  a rank that raises mid-training (nccl with 2+ GPUs, else gloo) ends the run within
                  RANK_FAILURE_BOUND_S and exit.json names it
    telemetry     real NVML telemetry: each rank's GPU, found by the rank's device UUID, gained memory
                  and utilisation inside that rank's training window against the baseline before
                  the first run (idle samples before or after do not count)
    memory        after the runs and the stop, nothing of them holds GPU memory, by the method NVML
                  allows (pid where it listed the runs' PIDs, else used memory against the baseline),
                  named; where neither can judge (a container and another tenant) it fails saying so
    screen        the run screen renders (Textual run_test) from that real telemetry
    preflight     the profile written for this box (the check's ddp profile over its GPUs) and every
                  shipped profile made for exactly these GPUs pass `--check`; the others are listed

"No GPU" is decided by NVML: without a driver or GPUs the check prints one line and exits 77
(skipped). Where NVML sees GPUs but torch cannot use them (the CPU wheel installed by mistake),
it fails at once and says how to install a CUDA build.

The checker process itself never creates a CUDA context (the parallel_apply probe runs in a child
process), so the memory item compares the GPUs with what they held before the check.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, TextIO

from traindeck.heartbeat import read_heartbeats
from training.console import stop as stopping
from training.console.gpu_check_judge import (  # noqa: F401 - re-exported: tests import them from here
    FAIL,
    MEMORY_TOLERANCE_MIB,
    PASS,
    SKIP,
    TELEMETRY_FIELDS,
    Item,
    autocast_records,
    gpu_snapshot,
    judge_autocast,
    judge_cuda,
    judge_dp,
    judge_dp_probe,
    judge_fp16_scaler,
    judge_grad_accum,
    judge_grad_scaler,
    judge_memory,
    judge_onnx,
    judge_rank_failure,
    judge_resume,
    judge_stop,
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
from training.rundir.events_file import read_all
from training.rundir.records import ExitRecord, RunRecord, create_run_json, finish_run

EXIT_SKIPPED = 77
REPORT_NAME = "gpu-check.json"
RUN_TIMEOUT_S = 150.0
MEMORY_SETTLE_S = 15.0
MAX_DP_GPUS = 4
MAX_DDP_RANKS = 8
# A rank that raises must end the run in seconds: NCCL's own timeout would be 10 minutes.
RANK_FAILURE_BOUND_S = 60.0
FAILING_RANK, FAILING_STEP = 1, 3
GRAD_ACCUM = 2

# The run profiles: the built-in tiny MLP, a few seconds each. On CUDA it is sized so a step's
# kernels, not Python, fill the GPU (the telemetry item needs utilisation to see); on the CPU dry
# run it stays tiny, with a step delay so the stop lands mid-training.
_PROFILE = """name = "{name}"
description = "traindeck --gpu-check: {what}"

[hardware]
gpus = {gpus}

[launch]
mode = "{mode}"
{launch}
stop_grace_s = 5
{env}

[train]
task = "tiny"
epochs = {epochs}
steps_per_epoch = {steps}
batch_size = {batch}
lr = 0.003
amp = "{amp}"
grad_accum = {grad_accum}
log_every = 5

[task]
samples = {samples}
features = {features}
hidden = {hidden}

[checkpoint]
every_epochs = 1
keep_last = 1

[export]
onnx = {onnx}

[telemetry]
interval_s = 0.25
"""
SIZES = {"cuda": {"batch": 512, "samples": 32768, "features": 64, "hidden": 2048, "steps": 60},
         "cpu": {"batch": 64, "samples": 4096, "features": 32, "hidden": 64, "steps": 20}}


def gpu_profile(name: str, mode: str, gpus: int, amp: str, nproc: int = 1, backend: str = "auto",
                epochs: int = 2, *, device_type: str = "cuda", grad_accum: int = 1, onnx: bool = False,
                env: dict[str, str] | None = None, steps: int | None = None) -> Profile:
    launch = f'nproc_per_node = {nproc}\nbackend = "{backend}"' if mode == "ddp" else ""
    env_text = ("env = { " + ", ".join(f'{k} = "{v}"' for k, v in env.items()) + " }") if env else ""
    size = dict(SIZES[device_type])
    if steps is not None:
        size["steps"] = steps
    if device_type == "cuda":  # every rank gets its steps_per_epoch of full batches (the val split aside)
        size["samples"] = max(size["samples"], math.ceil(size["batch"] * max(1, nproc) * grad_accum * size["steps"] * 1.3))
    text = _PROFILE.format(name=name, what=f"{mode} on {gpus} GPU(s)", gpus=gpus, mode=mode, launch=launch,
                           amp=amp, epochs=epochs, grad_accum=grad_accum, onnx=str(onnx).lower(), env=env_text,
                           **size)
    return parse_profile(text, path=f"<gpu-check {name}>")


# ---- the check -------------------------------------------------------------------------------

class GpuCheck:
    def __init__(self, runs_dir: Path, out: TextIO = sys.stdout, backend: Any = None,
                 render: Callable[[RunPaths, Path], dict[str, Any]] | None = None,
                 run_timeout_s: float = RUN_TIMEOUT_S, device_type: str = "cuda",
                 environ: dict[str, str] | None = None):
        """device_type "cpu" is a dry run of the whole flow on a box without CUDA (with the fake
        NVML), for trying the check before a GPU session; it skips the gate. `environ`: where the
        user's CUDA_VISIBLE_DEVICES is read (default os.environ)."""
        import os

        from training.monitor.gpu import get_backend

        self.runs_dir = Path(runs_dir)
        self.out = out
        self.backend = backend if backend is not None else get_backend()
        self.render = render
        self.run_timeout_s = run_timeout_s
        self.device_type = device_type
        self.environ = dict(os.environ if environ is None else environ)
        self.items: list[Item] = []
        self.report: dict[str, Any] = {}
        self.check_dir: RunPaths | None = None
        self.run_pids: set[int] = set()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @property
    def cuda(self) -> bool:
        return self.device_type == "cuda"

    def visible(self):
        """The GPUs this process may use: NVML's, under the user's CUDA_VISIBLE_DEVICES (MIG
        instances one each). NVML itself lists every GPU of the box."""
        from training.supervise.visibility import visible_gpus

        devices = self.backend.devices() if self.backend.available else []
        return visible_gpus(devices, self.environ.get("CUDA_VISIBLE_DEVICES"))

    # -- the gate: NVML, then torch ------------------------------------------------------------
    def gate(self) -> int | None:
        """None to go on; else the exit code (77 no GPU, 1 unusable)."""
        from training.console.preflight import CUDA_INSTALL_HINT

        if not self.backend.available:
            self.say(f"gpu-check skipped: {self.backend.error or 'no NVIDIA driver/GPU found'}")
            return EXIT_SKIPPED
        import torch

        gpus = self.backend.device_count()
        visible = self.visible()
        if visible.count == 0:
            self.say(f"gpu-check FAILED: NVML sees {gpus} GPU(s) but this process may use none of them "
                     f"(CUDA_VISIBLE_DEVICES={self.environ.get('CUDA_VISIBLE_DEVICES')!r})"
                     + (f"; {'; '.join(visible.notes)}" if visible.notes else ""))
            return 1
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
        code = self.gate() if self.cuda else None
        if code is not None:
            return code
        import torch  # noqa: F401 - loaded before the clock starts: the seconds are the check's own

        t0 = time.monotonic()
        runs_dir = self._open_check_dir()
        n, amp, dtype = self._describe_box()
        baseline = self.snapshot()
        self.report["baseline"] = {str(i): {k: v for k, v in g.items() if k != "processes"}
                                   for i, g in baseline.items()}

        done = self._training_runs(n, amp, runs_dir)
        self._dp_item(done, n, amp)
        ddp = done["ddp-nccl"]
        self.items.append(self.autocast_item(done, amp, dtype, n))
        self.items.append(self.telemetry_item(ddp, baseline))
        self.say("  ... a rank that raises mid-training")
        self.items.append(self.rank_failure_item(n, amp, runs_dir))
        self.say("  ... GPU memory after the runs, the run screen, preflight")
        self.items.append(self.memory_item(baseline, list(done.values())))
        self.items.append(self.screen_item(ddp))
        self.items.append(self.preflight_item(runs_dir, n, amp))
        return self._finish(time.monotonic() - t0)

    def _open_check_dir(self) -> Path:
        """The check's run directory, like any other (listed by --runs, live while the check runs);
        its runs are inside it, in runs/ (returned)."""
        from training.rundir.processes import ProcRef, pid_create_time

        self.check_dir = create_run_dir(self.runs_dir, "gpu-check")
        now = round(time.time(), 3)
        create_run_json(self.check_dir, RunRecord(
            id=self.check_dir.id, profile="gpu-check", mode="check", world_size=0, argv=("--gpu-check",),
            host=hostname(), created=now, supervisor=ProcRef.from_json(pid_create_time(), "supervisor"), state="running",
            state_t=now))
        runs_dir = self.check_dir.root / "runs"
        runs_dir.mkdir(mode=0o700)
        return runs_dir

    def _describe_box(self) -> tuple[int, str, str]:
        """The report's header and the `cuda` item; returns (GPUs this process may use, amp, its
        torch dtype name)."""
        import torch

        visible = self.visible()
        box = self.backend.devices()
        # A MIG instance computes with its parent GPU's architecture.
        judged = list(visible.devices) + ([d for d in box if d.mig] if visible.mig_instances else [])
        n = visible.count
        caps = [d.compute_capability for d in judged]
        amp = "bf16" if caps and all(c is not None and c >= (8, 0) for c in caps) else "fp16"
        dtype = {"bf16": "bfloat16", "fp16": "float16"}[amp]
        nccl = None
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:
            pass
        self.report = {
            "host": hostname(), "started": round(time.time(), 3), "torch": torch.__version__,
            "cuda": torch.version.cuda, "nccl": nccl, "driver": self.backend.driver_version(),
            "cuda_visible_devices": self.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpus": [{"index": d.index, "name": d.name, "uuid": d.uuid, "memory_total_mib": d.memory_total_mib,
                      "compute_capability": d.compute_capability, "pci_bus_id": d.pci_bus_id, "mig": d.mig,
                      "visible": d in visible.devices}
                     for d in box],
            "visible_gpus": n, "mig_instances": visible.mig_instances,
            "amp": amp, "runs": {},
        }
        self.say(f"gpu-check: {n} GPU(s) this process may use of {len(box)} on the box "
                 f"({', '.join(sorted({d.name for d in judged}))}), driver "
                 f"{self.report['driver']}, torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {nccl}; "
                 f"amp {amp}; run directory {self.check_dir.root}")
        versions = {"torch": torch.__version__, "cuda": torch.version.cuda, "nccl": nccl,
                    "driver": self.report["driver"]}
        if self.cuda:
            item = judge_cuda(nvml_count=n, torch_count=torch.cuda.device_count(),
                              arch_list=list(torch.cuda.get_arch_list()),
                              gpus=[(f"GPU {d.index} ({d.name})", d.compute_capability) for d in judged],
                              versions=versions)
        else:
            item = Item("cuda", SKIP, f"dry run on the CPU: torch {torch.__version__} is not judged against "
                        f"NVML's {n} GPU(s)", versions)
        self.items.append(item)
        return n, amp, dtype

    def _training_runs(self, n: int, amp: str, runs_dir: Path) -> dict[str, RunPaths]:
        """single (+ onnx), dp, ddp-nccl (stopped, resumed), ddp-gloo as this box allows, each
        judged; {key: run}."""
        dt = self.device_type
        done: dict[str, RunPaths] = {}
        self.say(f"  ... single on 1 GPU (amp {amp}{', then ONNX' if self.cuda else ''})")
        single = self.train(gpu_profile("gpucheck-single", "single", 1, amp, device_type=dt, onnx=self.cuda),
                            runs_dir)
        done["single"] = single
        self._judged("single", judge_training(single, dt), single)
        if self.cuda:
            self.items.append(judge_onnx(single, dt))
        else:
            self.items.append(Item("onnx", SKIP, "dry run: the export on CUDA is what this item proves"))
        if n >= 2:
            dp_gpus = min(n, MAX_DP_GPUS)
            self.say(f"  ... dp on {dp_gpus} GPU(s)")
            dp = self.train(gpu_profile("gpucheck-dp", "dp", dp_gpus, amp, device_type=dt), runs_dir)
            done["dp"] = dp
            self.report["runs"]["dp"] = str(dp.root)
            self.items.append(judge_dp(dp, dp_gpus, dt))
        done["ddp-nccl"] = self._stop_resume_run(n, amp, runs_dir)
        if n == 1 and self.cuda:
            self.say("  ... ddp-gloo: 2 gloo ranks on the one GPU, grad_accum 2")
            gloo = self.train(gpu_profile("gpucheck-gloo", "ddp", 1, amp, nproc=2, backend="gloo", device_type=dt,
                                          grad_accum=GRAD_ACCUM, env=self._dump_env()), runs_dir)
            done["ddp-gloo"] = gloo
            self._judged("ddp-gloo", judge_training(gloo, dt, "gloo"), gloo)
            self.items.append(judge_grad_accum(gloo, gloo.root / "weights", 2, GRAD_ACCUM))
        else:
            why = ("dry run: the ddp run is already two gloo ranks on the CPU" if not self.cuda
                   else "more than one GPU: one nccl rank per GPU covers DDP")
            self.items.append(Item("ddp-gloo", SKIP, why))
        return done

    @staticmethod
    def _dump_env() -> dict[str, str]:
        # Each rank's final weights, for the grad-accum item's comparison.
        return {"TRAINDECK_TEST_DUMP_WEIGHTS": "{run_dir}/weights"}

    def _judged(self, key: str, item: Item, paths: RunPaths) -> None:
        item.name = key
        self.report["runs"][key] = str(paths.root)
        self.items.append(item)

    def _stop_resume_run(self, n: int, amp: str, runs_dir: Path) -> RunPaths:
        """One DDP run that proves four items: started in fp16 with a GradScaler and grad_accum,
        stopped mid-training once its first last.pt is written (stop), resumed onto the device from
        it (resume), finished (ddp-nccl, fp16-scaler, grad-accum). On the CPU dry run: two gloo ranks
        in the box's amp (fp16 needs CUDA), a step delay so the stop lands mid-training."""
        from training.console import runs

        dt = self.device_type
        ranks = min(n, MAX_DDP_RANKS) if self.cuda else 2
        run_amp = "fp16" if self.cuda else amp
        env = self._dump_env()
        if not self.cuda:
            env["TRAINDECK_TEST_STEP_DELAY_S"] = "0.02"
        # Long enough on a GPU (a step takes milliseconds) that the stop lands before the end.
        epochs = 12 if self.cuda else 4
        profile = gpu_profile("gpucheck-ddp", "ddp", ranks if self.cuda else 1, run_amp, nproc=ranks,
                              backend="nccl" if self.cuda else "gloo", epochs=epochs, device_type=dt,
                              grad_accum=GRAD_ACCUM, env=env)
        total = epochs * profile.train.steps_per_epoch
        self.say(f"  ... ddp-nccl: {ranks} rank(s), {run_amp}, grad_accum {GRAD_ACCUM}; stopped after its first "
                 f"checkpoint, then resumed")
        paths = runs.start_run(profile, runs_dir, argv=["--gpu-check"])
        self.report["runs"]["ddp-nccl"] = str(paths.root)
        deadline = time.monotonic() + self.run_timeout_s
        while time.monotonic() < deadline and not paths.exit_json.exists():
            if any(e.get("kind") == "checkpoint" and str(e.get("path", "")).endswith("last.pt")
                   for e in read_all(paths.events)):
                break
            time.sleep(0.1)
        stopping.stop_run(paths, grace_s=5)
        stopped_exit = read_json(paths.exit_json, {}) or {}
        self.report["runs"]["stopped"] = dict(stopped_exit)
        stopped_pids = self._collect_pids(paths)
        survivors = sorted(p for p in stopped_pids if _alive(p))
        self.items.append(judge_stop(stopped_exit, total, survivors))
        stopped_ckpt = _load_checkpoint(paths.checkpoints / "last.pt")
        if stopped_ckpt is not None and stopped_exit.get("state") == "stopped":
            runs.resume_run(paths)
            self._wait(paths)
        self._collect_pids(paths)
        backend = "nccl" if self.cuda else None
        self._judged("ddp-nccl", judge_training(paths, dt, backend), paths)
        self.items.append(judge_resume(paths, stopped_ckpt, dt, ranks, fp16=run_amp == "fp16"))
        if self.cuda:
            self.items.append(judge_fp16_scaler(paths))
        else:
            self.items.append(Item("fp16-scaler", SKIP, "dry run: fp16 autocast and its GradScaler need CUDA"))
        if ranks >= 2:
            self.items.append(judge_grad_accum(paths, paths.root / "weights", ranks, GRAD_ACCUM))
        return paths

    def _collect_pids(self, paths: RunPaths) -> set[int]:
        """The run's processes as run.json lists them now (a resume replaces the list)."""
        pids = {int(p["pid"]) for p in run_processes(paths) if isinstance(p.get("pid"), int)}
        self.run_pids |= pids
        return pids

    def _dp_item(self, done: dict[str, RunPaths], n: int, amp: str) -> None:
        if "dp" in done:
            return
        if not self.cuda:
            self.items.append(Item("dp", SKIP, "dry run: DataParallel's replicas need CUDA devices"))
            return
        self.items.append(judge_dp_probe(replica_probe(amp)))

    def rank_failure_item(self, n: int, amp: str, runs_dir: Path) -> Item:
        backend = "nccl" if self.cuda and n >= 2 else "gloo"
        profile = gpu_profile("gpucheck-fail", "ddp", 2 if self.cuda and n >= 2 else 1, amp, nproc=2,
                              backend=backend, epochs=1, device_type=self.device_type,
                              env={"TRAINDECK_TEST_RAISE_AT": f"{FAILING_RANK}:{FAILING_STEP}"})
        paths = self.train(profile, runs_dir)
        self._collect_pids(paths)
        self.report["runs"]["rank-failure"] = str(paths.root)
        item = judge_rank_failure(paths, FAILING_RANK, RANK_FAILURE_BOUND_S, backend)
        if backend != "nccl" and self.cuda:
            item.detail += " (one GPU: NCCL needs a GPU per rank, so gloo)"
        return item

    def _finish(self, seconds: float) -> int:
        """gpu-check.json, the check directory's final state, the checklist; 0 when nothing failed."""
        failed = [i.name for i in self.items if i.status == FAIL]
        self.report.update(seconds=round(seconds, 1), passed=not failed,
                           items=[asdict(i) for i in self.items])
        write_json_atomic(self.check_dir.root / REPORT_NAME, _json_safe(self.report))
        finish_run(self.check_dir, ExitRecord(state="failed" if failed else "finished"), write_exit=False)
        head = (f"gpu-check passed in {seconds:.0f} s" if not failed
                else f"gpu-check FAILED in {seconds:.0f} s ({', '.join(failed)})")
        self.say(head + f"; report {self.check_dir.root / REPORT_NAME}")
        for item in self.items:
            self.say(item.line())
        return 0 if not failed else 1

    # -- pieces --------------------------------------------------------------------------------
    def snapshot(self) -> dict[int, dict[str, Any]]:
        bus = {d.index: d.pci_bus_id for d in self.backend.devices()} if self.backend.available else {}
        snap = gpu_snapshot(self.backend.sample())
        for i, g in snap.items():
            g["pci_bus_id"] = g.get("pci_bus_id") or bus.get(i)
        return snap

    def used_memory(self) -> dict[int, int]:
        return {s.index: s.mem_used_mib for s in self.backend.sample() if s.mem_used_mib is not None}

    def _wait(self, paths: RunPaths) -> None:
        deadline = time.monotonic() + self.run_timeout_s
        while not paths.exit_json.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not paths.exit_json.exists():
            stopping.stop_run(paths, grace_s=3)

    def train(self, profile: Profile, runs_dir: Path) -> RunPaths:
        from training.console import runs

        paths = runs.start_run(profile, runs_dir, argv=["--gpu-check"])
        self._wait(paths)
        self._collect_pids(paths)
        return paths

    def autocast_item(self, done: dict[str, RunPaths], amp: str, dtype: str, gpus: int) -> Item:
        """Every run's forwards in its own run's dtype (ddp-nccl runs fp16 on CUDA), every DP
        replica and DDP rank reporting; a GradScaler exactly with fp16."""
        notes, ok = [], True
        for key, paths in done.items():
            run_amp = _run_amp(paths) or amp
            run_dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(run_amp, dtype)
            if key == "dp":
                devices, ranks = min(gpus, MAX_DP_GPUS), 1
            else:
                ranks = _world_size(paths)
                devices = ranks if key == "ddp-nccl" and self.cuda else 1
            good, text = judge_autocast(paths, run_dtype, devices=devices, ranks=ranks, device_type=self.device_type)
            ok &= good
            notes.append(text)
            if self.cuda or run_amp != "fp16":
                good, text = judge_grad_scaler(paths, run_amp)
                ok &= good
                if not good:
                    notes.append(text)
        return Item("autocast", PASS if ok else FAIL, "; ".join(notes))

    def telemetry_item(self, ddp: RunPaths, baseline: dict[int, dict[str, Any]]) -> Item:
        from training.monitor.telemetry import read_telemetry

        samples = read_telemetry(ddp.telemetry)
        bus = {d.index: d.pci_bus_id for d in self.backend.devices()} if self.backend.available else {}
        for s in samples:  # MIG ranks are found by their GPU's bus id: the samples carry the index
            for g in s.get("gpus") or []:
                if isinstance(g, dict) and not g.get("pci_bus_id") and g.get("index") in bus:
                    g["pci_bus_id"] = bus[g["index"]]
        return judge_telemetry(samples, _world_size(ddp), read_heartbeats(ddp.root), read_all(ddp.events), baseline)

    def memory_item(self, baseline: dict[int, dict[str, Any]], all_runs: list[RunPaths]) -> Item:
        from training.monitor.telemetry import read_telemetry

        pids_seen = {p.get("pid") for paths in all_runs for s in read_telemetry(paths.telemetry)
                     for g in s.get("gpus") or [] if isinstance(g, dict)
                     for p in g.get("processes") or [] if isinstance(p, dict)} & self.run_pids
        leaks = [leak for paths in all_runs for leak in (read_json(paths.exit_json, {}) or {}).get("gpu_leaks") or []]
        deadline = time.monotonic() + (MEMORY_SETTLE_S if self.cuda else 0)
        while True:
            item = judge_memory(baseline, self.snapshot(), self.run_pids, pids_seen)
            if item.status == PASS or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if leaks and item.status == PASS:
            item = Item("memory", FAIL, f"exit.json of a run reported GPU leaks: {leaks}", item.evidence)
        if not self.cuda:
            item = Item("memory", SKIP, f"dry run: the runs trained on the CPU, nothing to release on a GPU "
                        f"(the judge said: [{item.status}] {item.detail})", item.evidence)
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

    def box_profiles(self, n: int, amp: str) -> list[Profile]:
        """The profiles that must pass preflight here: the one written for this box (the check's
        DDP profile over every GPU this process may use) and each shipped profile made for exactly
        these GPUs (its count and model)."""
        from training.console.preflight import gpu_check

        written = gpu_profile("gpucheck-box", "ddp", n, amp, nproc=min(n, MAX_DDP_RANKS), backend="nccl")
        out = [written]
        for name in list_profile_names():
            try:
                profile = load_profile(name)
            except Exception:
                continue
            check = gpu_check(profile, self.backend, self.environ)
            if profile.hardware.gpus == n and check.ok and not check.warning and profile.hardware.gpu_model:
                out.append(profile)
        return out

    def preflight_item(self, runs_dir: Path, n: int = 0, amp: str = "bf16") -> Item:
        """The box's own profiles (box_profiles) must pass `--check` here; every other shipped
        profile's preflight is run and listed, not judged (a 4x 2080 Ti profile cannot fit a B200)."""
        from training.console.preflight import run_preflight

        must = self.box_profiles(n, amp) if n else []
        must_names = [p.name for p in must]
        results, problems, errors = {}, [], []
        shipped = []
        for name in list_profile_names():
            try:
                shipped.append(load_profile(name))
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        for profile in must + [p for p in shipped if p.name not in must_names]:
            try:
                report = run_preflight(profile, runs_dir, backend=self.backend)
            except Exception as exc:
                errors.append(f"{profile.name}: {type(exc).__name__}: {exc}")
                continue
            failed = [c.name for c in report.checks if not c.ok]
            results[profile.name] = {"ok": report.ok, "judged": profile.name in must_names, "lines": report.lines}
            if failed:
                problems.append(f"{profile.name}: {', '.join(failed)}")
        box_failed = [n_ for n_ in must_names if not (results.get(n_) or {}).get("ok")]
        passed = [n_ for n_, r in results.items() if r["ok"] and not r["judged"]]
        evidence = {"box_profiles": must_names, "profiles": results, "errors": errors}
        others = (f"; other profiles ready here: {', '.join(passed) or 'none'}"
                  + (f"; not ready: {'; '.join(p for p in problems if p.split(':')[0] not in must_names)}"
                     if problems else ""))
        if not must:
            return Item("preflight", FAIL, "no profile written for this box to judge" + others, evidence)
        if box_failed or errors:
            why = "; ".join([p for p in problems if p.split(":")[0] in box_failed] + errors)
            return Item("preflight", FAIL, f"the profile(s) for this box fail preflight: {why}" + others, evidence)
        return Item("preflight", PASS, f"the profile(s) for this box pass preflight: {', '.join(must_names)}" + others,
                    evidence)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        from training.engine.checkpoint import load_checkpoint

        return load_checkpoint(path, map_location="cpu")
    except Exception:
        return None


def _run_amp(paths: RunPaths) -> str | None:
    try:
        return parse_profile(paths.profile.read_text(encoding="utf-8"), path=paths.profile).train.amp
    except Exception:
        return None


def _world_size(paths: RunPaths) -> int:
    running = [e for e in read_all(paths.events) if e.get("kind") == "status" and e.get("state") == "running"
               and isinstance(e.get("world_size"), int)]
    return running[-1]["world_size"] if running else 1


def _json_safe(value: Any) -> Any:
    """The report as JSON: int keys become strings, tuples lists, tensors and the rest their str."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--replica-probe":
        sys.exit(_replica_probe_main(sys.argv[2]))
    print("usage: python -m training.console.gpu_check --replica-probe bf16|fp16 (the check itself: run.py --gpu-check)",
          file=sys.stderr)
    sys.exit(2)
