"""What starting a run does: the fast checks, judged by the table in check_table.

Only the fast checks run at start (NVML, a statvfs, a bind): well under a second, so a start
that cannot work ends at once with `run.py --check`'s own line, not minutes later in a torch
stack trace. The slow ones (torch, NCCL, bf16) stay in `--check` and the picker's pane.

    warnings = check_start(profile, runs_dir)   # raises StartRefused (exit 2) with the message
"""

from __future__ import annotations

from pathlib import Path

from training.console.check_table import START_RULES, Check, closing_hint, rule_for
from training.console.preflight import _disk_check, _port_check, gpu_check, head_check, select_check
from training.errors import TraindeckError
from training.profile import Profile


class StartRefused(TraindeckError):
    """The box cannot run the profile as written; the message names the check and the fix."""


def fast_checks(profile: Profile, runs_dir: Path, backend=None) -> list[Check]:
    """The checks a start runs: GPUs (count and model; free ones to take), disk, port."""
    gpus = gpu_check(profile, backend)
    select = select_check(profile, backend, gpus)
    return [gpus, *([select] if select else []), _disk_check(Path(runs_dir)), _port_check(profile)[0]]


def check_start(profile: Profile, runs_dir: Path, backend=None, queue: bool = False) -> list[str]:
    """Apply the table: raise StartRefused for a refusing row, return the warnings to show.
    `queue` (run.py --queue): busy GPUs are waited for by the supervisor instead of refused; what
    the box can never give (too few GPUs, a select it cannot meet) is refused all the same."""
    head = head_check(profile)
    if head is not None and not head.ok:
        raise StartRefused(f"not starting profile {profile.name}: {head.detail}. Nothing was started.")
    checks = fast_checks(profile, runs_dir, backend)
    busy = START_RULES[2]
    refused = [c for c in checks if (r := rule_for(c)) is not None and r.on_start == "refuse"
               and not (queue and r is busy)]
    if refused:
        lines = " ".join(f"[{c.mark}] {c.name}: {c.detail.rstrip('. ')}." for c in refused)
        fixes = closing_hint(profile, refused, runs_dir)
        never = queue and any(c.name in ("gpus", "select", "locks") for c in refused)
        wait = " Waiting in the queue (--queue) cannot help: this box will never have what it asks for." \
            if never else ""
        raise StartRefused(f"not starting profile {profile.name}: {lines}{wait} {fixes} Nothing was started "
                           f"('run.py --check --profile {profile.name}' shows every check).")
    return [f"warning: profile {profile.name}: [{c.mark}] {c.name}: {c.detail}" for c in checks
            if (r := rule_for(c)) is not None and r.on_start == "warn"]
