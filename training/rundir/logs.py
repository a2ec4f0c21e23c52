"""The per-rank log files of a run, in every launch layout:

    logs/rank-0.log                                             direct launches (single, dp)
    logs/torchrun/<rdzv_id>_<random>/attempt_K/<local_rank>/{stdout,stderr}.log     torchrun (ddp)

torchrun owns its layout (a resumed run adds a job directory, a restart an attempt), so viewers
and the supervisor ask `rank_logs` for the rank -> files map instead of guessing names.
"""

from __future__ import annotations

import re
from pathlib import Path

from traindeck.untrusted import bounded_int
from training.rundir.paths import RunPaths, read_run_json

_RANK_LOG = re.compile(r"rank-(\d+)\.log$")
MAX_RANK_OFFSET = 1 << 20


def rank_offset(run_json: dict) -> int:
    """run.json's rank_offset (node_rank * nproc_per_node): 0 unless it is a plausible int."""
    return bounded_int(run_json.get("rank_offset"), 0, MAX_RANK_OFFSET) or 0


def rank_logs(paths: RunPaths) -> dict[int, list[Path]]:
    """rank -> its log files, oldest launch/attempt first, stdout before stderr.

    Direct launches (single, dp) write logs/rank-0.log; torchrun writes
    logs/torchrun/<rdzv_id>_<random>/attempt_K/<local_rank>/{stdout,stderr}.log, one job
    directory per launch (a resumed run has several) and one attempt per restart. Global rank =
    run.json's rank_offset (node_rank * nproc_per_node) + local rank.
    """
    out: dict[int, list[Path]] = {}
    logs = paths.logs
    try:
        entries = list(logs.iterdir())
    except OSError:
        return out
    for f in sorted(entries):
        m = _RANK_LOG.fullmatch(f.name)
        if m and f.is_file():
            out.setdefault(int(m.group(1)), []).append(f)
    base = logs / "torchrun"
    if base.is_dir():
        offset = rank_offset(read_run_json(paths))

        def mtime(p: Path) -> float:
            try:
                return p.stat().st_mtime
            except OSError:
                return 0.0

        for job in sorted((d for d in base.iterdir() if d.is_dir()), key=lambda d: (mtime(d), d.name)):
            attempts = [d for d in job.iterdir() if d.is_dir() and d.name.startswith("attempt_")]
            attempts.sort(key=lambda d: int(d.name.split("_", 1)[1]) if d.name.split("_", 1)[1].isdigit() else -1)
            for attempt in attempts:
                for rank_dir in sorted((d for d in attempt.iterdir() if d.is_dir() and d.name.isdigit()),
                                       key=lambda d: int(d.name)):
                    for name in ("stdout.log", "stderr.log"):
                        f = rank_dir / name
                        if f.exists():
                            out.setdefault(offset + int(rank_dir.name), []).append(f)
    return dict(sorted(out.items()))


def rank0_stdout(paths: RunPaths) -> Path | None:
    """Rank 0's newest stdout file (what a custom script prints; the [metrics] regexes read it)."""
    stdout = [f for f in rank_logs(paths).get(0, []) if f.name in ("stdout.log", "rank-0.log")]
    return stdout[-1] if stdout else None


def rank0_stderr(paths: RunPaths) -> Path | None:
    """Rank 0's newest stderr file where torchrun keeps it apart (ddp): a plain tqdm bar draws
    there. A direct launch has none: its rank-0.log holds stdout and stderr together."""
    stderr = [f for f in rank_logs(paths).get(0, []) if f.name == "stderr.log"]
    return stderr[-1] if stderr else None


def log_label(rank: int, path: Path) -> str:
    """How a viewer names a rank's log file: 'rank 1 stderr', 'rank 0 stdout attempt_1'."""
    name = path.stem if path.stem in ("stdout", "stderr") else ""
    attempt = path.parent.parent.name if path.parent.parent.name.startswith("attempt_") else ""
    return " ".join(x for x in (f"rank {rank}", name, attempt if attempt != "attempt_0" else "") if x)
