"""What starting a run does with what preflight already knows: one table.

    check  the box                              starting a run        the fix it names
    gpus   fewer GPUs than the profile wants    refuse                --rehearse tries it here; --set hardware.gpus=0 trains on CPU
    gpus   another GPU model than named         warn, and go on       -
    select the GPUs it would take are held now  refuse, naming who   --queue waits for them; run.py --gpus shows who
           (or others are queued for GPUs)      (--queue: wait)
    select hardware.select this box cannot meet refuse               change hardware.select or hardware.gpus
    port   the explicit rdzv port is busy       refuse                free the port, or name another
    port   automatic (no rdzv_endpoint)         re-picked at launch   -
    disk   less free than the checkpoints need  refuse                free space, or --runs-dir elsewhere

Only the fast checks run at start (NVML, a statvfs, a bind): well under a second, so a start
that cannot work ends at once with `run.py --check`'s own line, not minutes later in a torch
stack trace. The slow ones (torch, NCCL, bf16) stay in `--check` and the picker's pane.
`run.py --check` closes with the same fixes (`closing_hint`), so a busy port is not answered
with "rehearse".

    warnings = check_start(profile, runs_dir)   # raises StartRefused (exit 2) with the message
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from training.console.preflight import (  # noqa: F401 - select_check: start's name for it too
    MIN_FREE_DISK_GIB,
    Check,
    _disk_check,
    _port_check,
    gpu_check,
    select_check,
)
from training.errors import TraindeckError
from training.profile import Profile


class StartRefused(TraindeckError):
    """The box cannot run the profile as written; the message names the check and the fix."""


@dataclass(frozen=True)
class Rule:
    check: str
    when: str
    on_start: str  # refuse | warn | re-pick
    fix: Callable[[Profile, Path], str]


def _gpus_fix(p: Profile, _runs_dir: Path) -> str:
    return (f"'run.py --profile {p.name} --rehearse' tries this profile on this box, scaled down; "
            f"'--set hardware.gpus=0' really trains it here on CPU")


def _select_busy_fix(p: Profile, _runs_dir: Path) -> str:
    return (f"'run.py --profile {p.name} --queue' waits for them in line (first come, first served); "
            f"'run.py --gpus' shows who holds which GPU; or ask for fewer with --set hardware.gpus=N")


def _select_never_fix(_p: Profile, _runs_dir: Path) -> str:
    return "change hardware.select (\"free\", \"all\" or indices this box has) or hardware.gpus"


def _port_fix(p: Profile, _runs_dir: Path) -> str:
    port = p.launch.rdzv_endpoint.rpartition(":")[2]
    return (f"free port {port} (ss -ltnp 'sport = :{port}' names the process holding it), or name "
            f"another port in launch.rdzv_endpoint")


def _disk_fix(_p: Profile, runs_dir: Path) -> str:
    return (f"free at least {MIN_FREE_DISK_GIB:.0f} GiB under {runs_dir}, or keep runs on another disk "
            f"with --runs-dir DIR")


def _lock_dir_fix(_p: Profile, _runs_dir: Path) -> str:
    from training.rundir.gpu_locks import LOCK_DIR_ENV

    return (f"have the box's admin create the lock directory root-owned with mode 1777 "
            f"(install -d -m 1777 -o root DIR), or point ${LOCK_DIR_ENV} (or [hardware] lock_dir) at a "
            f"directory of your own")


START_RULES = (
    Rule("gpus", "fewer GPUs than the profile wants", "refuse", _gpus_fix),
    Rule("gpus", "another GPU model than named", "warn", lambda p, d: ""),
    Rule("select", "the GPUs it would take are held by others (with --queue: wait in line)", "refuse",
         _select_busy_fix),
    Rule("select", "hardware.select this box can never meet", "refuse", _select_never_fix),
    Rule("port", "the explicit rendezvous port is busy", "refuse", _port_fix),
    Rule("port", "automatic rendezvous port", "re-pick", lambda p, d: ""),
    Rule("disk", "too little free disk", "refuse", _disk_fix),
    Rule("locks", "the GPU lock directory is not safe to use (a link, another user's, not sticky)", "refuse",
         _lock_dir_fix),
)

# --check's closing hint for the checks that start does not run (they are slower).
_OTHER_FIXES: dict[str, Callable[[Profile, Path], str]] = {
    "torch": lambda p, d: "install the CUDA build of torch (the torch line above says how)",
    "nccl": lambda p, d: "install the CUDA build of torch (the nccl line above says how)",
    "amp": lambda p, d: "change train.amp as the amp line above says",
    "cpu": lambda p, d: "lower launch.nproc_per_node",
}


def rule_for(check: Check) -> Rule | None:
    """The row of the table a check's result falls in (None: a check start does not run)."""
    if check.name == "gpus":
        if not check.ok:
            return START_RULES[0]
        return START_RULES[1] if check.warning else None
    if check.name == "select":
        if check.ok:
            return None
        return START_RULES[3] if check.never else START_RULES[2]
    if check.name == "port":
        return START_RULES[4] if not check.ok else None
    if check.name == "disk":
        return START_RULES[6] if not check.ok else None
    if check.name == "locks":
        return START_RULES[7] if not check.ok else None
    return None


def fix_for(check: Check, profile: Profile, runs_dir: Path) -> str:
    rule = rule_for(check)
    if rule is not None and rule.on_start == "refuse":
        return rule.fix(profile, Path(runs_dir))
    if check.name.startswith("node "):
        host = check.name[5:]
        return (f"make `ssh -o BatchMode=yes {host} true` work from this box (a key or an agent; [launch] "
                f"ssh_options for another config) with the same traindeck at [launch] remote_root there")
    if check.name == "head":
        return f"start the run on {profile.launch.hosts[0]}, the first of launch.hosts"
    other = _OTHER_FIXES.get(check.name)
    return other(profile, Path(runs_dir)) if other else _gpus_fix(profile, Path(runs_dir))


def closing_hint(profile: Profile, failed: list[Check], runs_dir: Path) -> str:
    """`--check`'s last line after a failure: the fix of each failed check, once each."""
    fixes = list(dict.fromkeys(fix_for(c, profile, runs_dir) for c in failed))
    return "Fix: " + "; ".join(fixes) + "."


def fast_checks(profile: Profile, runs_dir: Path, backend=None) -> list[Check]:
    """The checks a start runs: GPUs (count and model; free ones to take), disk, port."""
    gpus = gpu_check(profile, backend)
    select = select_check(profile, backend, gpus)
    return [gpus, *([select] if select else []), _disk_check(Path(runs_dir)), _port_check(profile)[0]]


def check_start(profile: Profile, runs_dir: Path, backend=None, queue: bool = False) -> list[str]:
    """Apply the table: raise StartRefused for a refusing row, return the warnings to show.
    `queue` (run.py --queue): busy GPUs are waited for by the supervisor instead of refused; what
    the box can never give (too few GPUs, a select it cannot meet) is refused all the same."""
    from training.console.preflight import head_check

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
