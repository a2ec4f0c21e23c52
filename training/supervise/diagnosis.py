"""Why a run failed, from the files it left behind: which rank failed first, its error lines, a hint.

    diagnose(paths, profile, returncode, first_exit_rank) -> Diagnosis(failed_rank, error, hint)

Sources, most trusted first: torchrun's error.json files, the ranks' logs with a traceback (a real
error before the other ranks' collateral "connection closed by peer"), torchrun's "Root Cause"
summary, the launcher's own last lines. The supervisor calls it once the launcher has exited with
an error; exit.json carries the result.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traindeck.untrusted import finite_float, open_regular
from training.profile import Profile
from training.rundir import RunPaths, read_json, read_run_json
from training.rundir.logs import rank_logs, rank_offset
from training.supervise.visibility import run_gpus

_RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d+\]:\s?")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failure|Warning)?)(?::\s|:$|$)")
# Errors a rank reports because *another* rank died first: never the root cause when a rank
# with a genuine error exists.
_COLLATERAL = re.compile(
    r"Connection closed by peer|Connection reset by peer|remote worker crashing|Broken pipe|"
    r"DistNetworkError|DistBackendError|NCCL communicator was aborted|ProcessGroupNCCL.*(abort|timeout)|"
    r"Socket Timeout|SignalException|Signals\.SIGTERM|KeyboardInterrupt|recvBytes|Timed out waiting",
    re.IGNORECASE)
_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory", re.IGNORECASE)
# Docker and Kubernetes give a container 64 MB of /dev/shm: DataLoader workers pass batches
# through it (they die with "Bus error"), and NCCL's shared-memory transport puts its segments there.
SHM_FIX = ("/dev/shm is too small for the DataLoader workers' batches (and NCCL's segments): run the "
           "container with `docker run --ipc=host` or `--shm-size=16g`; on Kubernetes mount an emptyDir "
           "with medium: Memory at /dev/shm; or lower train.num_workers")
_SHM = re.compile(r"Bus error|shared memory|/dev/shm|shm_open|unable to (open|write to) shared memory",
                  re.IGNORECASE)
# torch has no kernels for this GPU's architecture (a wheel built before the GPU: B200 is sm_100).
ARCH_FIX = ("this torch build has no kernels for the GPU's architecture: install a torch build for it "
            "(B200 is sm_100 and needs CUDA 12.8+ wheels: .venv/bin/pip install torch --index-url "
            "https://download.pytorch.org/whl/cu128); `run.py --check` compares torch's arch list with the GPUs")
_HINTS: list[tuple[re.Pattern, str]] = [
    (_SHM, SHM_FIX),
    (re.compile(r"no kernel image is available|not compatible with the current PyTorch installation",
                re.IGNORECASE), ARCH_FIX),
    (re.compile(r"NCCL (error|WARN)|ncclInternalError|ncclSystemError|ncclUnhandledCudaError"),
     "NCCL failed: rerun with launch.env.NCCL_DEBUG = \"INFO\"; on boxes without InfiniBand set "
     "NCCL_IB_DISABLE = \"1\", and NCCL_P2P_DISABLE = \"1\" if GPUs cannot talk peer-to-peer"),
    # torch 2.13's gloo: a rank that destroys the group (or exits) while a peer still uses it can die
    # in std::terminate with no Python traceback (seen 1 in 4 on a 2-rank CPU run that ends unevenly).
    (re.compile(r"terminate called without an active exception"),
     "a rank left the gloo process group while another still used it (torch's gloo teardown aborts): "
     "call torch.distributed.barrier() before destroy_process_group() at the end of the script"),
    (re.compile(r"Address already in use|EADDRINUSE"),
     "the rendezvous port is taken: leave launch.rdzv_endpoint empty so a free port is picked"),
    (re.compile(r"No module named '([\w.]+)'"),
     "a module is missing in this environment: install it into the Python that runs traindeck"),
    (re.compile(r"CUDA driver|no CUDA GPUs are available|CUDA_VISIBLE_DEVICES"),
     "CUDA is not usable here: check nvidia-smi and launch.env.CUDA_VISIBLE_DEVICES"),
]


def clean_lines(text: str) -> list[str]:
    return [_RANK_PREFIX.sub("", line.rstrip()) for line in text.splitlines()]


def read_tail(path: Path, max_bytes: int = 64 << 10) -> str:
    try:
        with open_regular(path) as f:  # a FIFO or a link in place of a rank log reads as ""
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read(max_bytes).decode("utf-8", "replace")
    except OSError:
        return ""


def traceback_summary(text: str) -> list[str]:
    """The meaningful lines of the last traceback in `text`: the exception line first, then the
    innermost frame and its source line. [] if there is no traceback."""
    lines = clean_lines(text)
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")),
                default=None)
    if start is None:
        return []
    body = lines[start + 1:]
    frames = [i for i, line in enumerate(body) if line.lstrip().startswith('File "')]
    exc = None
    after = frames[-1] + 1 if frames else 0
    for line in body[after:]:
        if line and not line.startswith(" ") and not line.startswith("^") and _EXC_LINE.match(line):
            exc = line
            break
    out = [exc] if exc else []
    if frames:
        i = frames[-1]
        out.append(body[i].strip())
        if i + 1 < len(body) and body[i + 1].startswith(" ") and not body[i + 1].lstrip().startswith("File "):
            out.append(body[i + 1].strip())
    return [line[:500] for line in out if line]


def last_lines(text: str, n: int = 3) -> list[str]:
    meaningful = [line for line in clean_lines(text) if line.strip()]
    return [line[:500] for line in meaningful[-n:]]


def _bf16_capable(profile: Profile) -> bool:
    """Whether every GPU the run sees has bf16 (compute capability >= 8.0), as NVML reports it;
    True when NVML cannot tell."""
    # Lazy: training.engine.amp imports torch, which the supervisor and the console never load otherwise.
    from training.engine.amp import BF16_MIN_CAPABILITY

    try:
        devices = run_gpus(profile).devices
    except Exception:
        return True
    return all(d.compute_capability is None or d.compute_capability >= BF16_MIN_CAPABILITY for d in devices)


def make_hint(error_text: str, rank: int | None, profile: Profile | None) -> str | None:
    if _OOM.search(error_text):
        where = f" on rank {rank}" if rank is not None else ""
        if profile is None:
            return f"CUDA out of memory{where}: lower train.batch_size or enable amp"
        b = profile.train.batch_size
        fix = f"try batch_size {max(1, b // 2)}"
        if profile.train.amp == "off":
            fix += " or enable amp (train.amp = \"bf16\")" if _bf16_capable(profile) else \
                " or enable amp (train.amp = \"fp16\"; these GPUs have no bf16)"
        elif profile.train.grad_accum == 1:
            fix += " with train.grad_accum = 2"
        return f"CUDA out of memory{where} with batch_size {b}: {fix}"
    for pattern, hint in _HINTS:
        if pattern.search(error_text):
            return hint
    return None


@dataclass(frozen=True)
class Diagnosis:
    failed_rank: int | None
    error: list[str]
    hint: str | None


def _torchrun_error_files(paths: RunPaths) -> dict[int, tuple[float, list[str]]]:
    """rank -> (timestamp, lines) from torchrun's per-worker error.json files (written when the
    worker's entry point uses torch.distributed.elastic's @record)."""
    out: dict[int, tuple[float, list[str]]] = {}
    base = paths.logs / "torchrun"
    if not base.is_dir():
        return out
    offset = rank_offset(read_run_json(paths))
    for f in base.glob("*/attempt_*/*/error.json"):
        data = read_json(f, {}) or {}
        msg = data.get("message")
        try:
            local_rank = int(f.parent.name)
        except ValueError:
            continue
        if isinstance(msg, dict):
            text = str(msg.get("message", ""))
            extra = msg.get("extraInfo") if isinstance(msg.get("extraInfo"), dict) else {}
            stamp = finite_float(extra.get("timestamp")) or f.stat().st_mtime
            callstack = str(extra.get("py_callstack") or "")
        else:
            text, stamp, callstack = str(msg or ""), f.stat().st_mtime, ""
        lines = traceback_summary(callstack) or [x for x in text.splitlines() if x.strip()][-2:]
        out[offset + local_rank] = (stamp, lines)
    return out


def _root_cause_rank(launcher_text: str) -> int | None:
    m = re.search(r"Root Cause.*?rank\s*:\s*(\d+)", launcher_text, re.DOTALL)
    return int(m.group(1)) if m else None


def is_collateral(error: list[str] | tuple[str, ...]) -> bool:
    """The error a rank reports because another rank went first (a lost peer, a timeout)."""
    return bool(_COLLATERAL.search(" ".join(error)))


def node_root_cause(error: list[str] | tuple[str, ...], node_exits: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A multi-node run whose head saw only a lost peer: the node (host, its exit.json) where the
    failure started, if one failed with a genuine error and its rank. The single-box rule across
    nodes: a real traceback wins over the survivors' "connection closed by peer", even when the
    survivor's failure reached the head first. The earliest such node's end (its `t`) wins."""
    if error and not is_collateral(error):
        return None  # the head's own rank has a real error: it is the story
    found = []
    for host, data in node_exits.items():
        if not isinstance(data, dict) or data.get("state") != "failed" or data.get("failed_rank") is None:
            continue
        lines = [str(x) for x in data.get("error") or []]
        if lines and not is_collateral(lines):
            t = data.get("t")
            found.append((t if isinstance(t, (int, float)) else float("inf"), host, data))
    if not found:
        return None
    _, host, data = min(found, key=lambda f: (f[0], f[1]))
    return host, data


def diagnose(paths: RunPaths, profile: Profile | None, returncode: int | None,
             first_exit_rank: int | None = None) -> Diagnosis:
    """Which rank failed first and why, from the files the run left behind.

    Sources, most trusted first: torchrun's error.json files (earliest timestamp); the rank
    logs with a traceback, preferring genuine errors over collateral ones ("connection closed by
    peer" is what the *other* ranks say) and then the rank that exited first / wrote last earliest;
    torchrun's "Root Cause" summary (which, with second-resolution timestamps, often names a
    collateral rank); finally the launcher's own last lines.
    """
    error_files = _torchrun_error_files(paths)
    genuine = {r: v for r, v in error_files.items() if not _COLLATERAL.search(" ".join(v[1]))}
    pick = genuine or error_files
    if pick and not genuine:
        silent = _silent_death(paths, first_exit_rank, set(error_files))
        if silent is not None:
            return silent
    if pick:
        rank = min(pick, key=lambda r: pick[r][0])
        lines = pick[rank][1]
        text = "\n".join(lines) + "\n" + rank_text(paths, rank)
        return Diagnosis(rank, lines, make_hint(text, rank, profile))

    candidates: list[tuple[bool, int, float, int, list[str], str]] = []
    for rank, files in rank_logs(paths).items():
        newest_attempt = _latest_attempt(files)
        text = "".join(read_tail(f) for f in newest_attempt)
        summary = traceback_summary(text)
        if not summary:
            if not _OOM.search(text):
                continue
            summary = [line for line in clean_lines(text) if _OOM.search(line)][:1]
        collateral = bool(_COLLATERAL.search(" ".join(summary)))
        mtime = max((f.stat().st_mtime for f in newest_attempt if f.exists()), default=0.0)
        candidates.append((collateral, 0 if rank == first_exit_rank else 1, mtime, rank, summary, text))
    if candidates:
        candidates.sort(key=lambda c: c[:4])
        collateral, _, _, rank, summary, text = candidates[0]
        if collateral:
            # Every traceback is collateral: the root cause may be a rank that died without one
            # (SIGKILL, the OOM killer). torchrun's summary / the first exit name it.
            silent = _silent_death(paths, first_exit_rank, {c[3] for c in candidates})
            if silent is not None:
                return silent
        return Diagnosis(rank, summary, make_hint(text, rank, profile))

    launcher_log = paths.logs / "launcher.log"
    launcher_text = read_tail(launcher_log)
    rank = _root_cause_rank(launcher_text)
    if rank is None and returncode not in (None, 0) and not (paths.logs / "torchrun").exists():
        rank = 0 if (paths.logs / "rank-0.log").exists() else None
    lines = (traceback_summary(launcher_text) or last_lines(launcher_text)) if launcher_text else []
    if not lines and rank is not None:
        lines = last_lines(rank_text(paths, rank))
    if returncode is not None and returncode < 0:
        # Killed by a signal: its last printed lines are context, not the error.
        line, hint = _killed_by(returncode)
        return Diagnosis(rank, [line, *lines], make_hint(launcher_text + "\n".join(lines), rank, profile) or hint)
    return Diagnosis(rank, lines, make_hint(launcher_text + "\n".join(lines), rank, profile))


_EXITCODE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")


def _silent_death(paths: RunPaths, first_exit_rank: int | None, traced: set[int]) -> Diagnosis | None:
    """A rank that was killed by a signal without writing a traceback, if torchrun saw one."""
    launcher_text = read_tail(paths.logs / "launcher.log")
    codes = {int(r): int(c) for r, c in _EXITCODE.findall(launcher_text)}
    # A signal other than the SIGTERM torchrun sends the survivors, on a rank with no traceback:
    # when exactly one rank has that, it is the one, whichever exit was observed first (a rank
    # that errors out on the lost peer can end within the same poll as the killed one).
    signalled = [r for r, c in codes.items() if c < 0 and c != -signal.SIGTERM and r not in traced]
    only_signalled = signalled[0] if len(signalled) == 1 else None
    for rank in (first_exit_rank, only_signalled, _root_cause_rank(launcher_text)):
        code = codes.get(rank) if rank is not None else None
        if rank is None or rank in traced or code is None or code >= 0:
            continue
        line, hint = _killed_by(code)
        return Diagnosis(rank, [line], hint)
    return None


def _killed_by(code: int) -> tuple[str, str | None]:
    """The error line and hint for a process that ended with returncode `code` < 0 (a signal)."""
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = ("SIGKILL from outside the run: the kernel's OOM killer (check `dmesg`) or someone's kill -9"
            if code == -signal.SIGKILL else None)
    return f"killed by {name} (exit code {code}) without a traceback", hint


def _latest_attempt(files: list[Path]) -> list[Path]:
    attempts = [f.parent.parent.name for f in files if f.parent.parent.name.startswith("attempt_")]
    if not attempts:
        return files
    latest = max(attempts, key=lambda a: int(a.split("_")[1]) if a.split("_")[1].isdigit() else -1)
    return [f for f in files if f.parent.parent.name == latest]


def rank_text(paths: RunPaths, rank: int) -> str:
    return "".join(read_tail(f) for f in _latest_attempt(rank_logs(paths).get(rank, [])))
