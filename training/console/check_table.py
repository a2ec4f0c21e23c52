"""A check's result (`Check`) and what starting a run does with it: one table.

    check  the box                              starting a run        the fix it names
    gpus   fewer GPUs than the profile wants    refuse                --rehearse tries it here; --set hardware.gpus=0 trains on CPU
    gpus   another GPU model than named         warn, and go on       -
    select the GPUs it would take are held now  refuse, naming who   --queue waits for them; run.py --gpus shows who
           (or others are queued for GPUs)      (--queue: wait)
    select hardware.select this box cannot meet refuse               change hardware.select or hardware.gpus
    port   the explicit rdzv port is busy       refuse                free the port, or name another
    port   automatic (no rdzv_endpoint)         re-picked at launch   -
    disk   less free than the checkpoints need  refuse                free space, or --runs-dir elsewhere

    locks  the GPU lock directory is unsafe     refuse                a root-owned 1777 directory, or one of your own

training.console.start_checks applies the table at start; `run.py --check` (training.console.
preflight) closes with the same fixes (`closing_hint`), so a busy port is not answered with
"rehearse". It sits below both, so neither imports the other's caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from training.profile import Profile
from training.rundir.gpu_locks import LOCK_DIR_ENV

# The free disk a start needs under the runs directory (the disk check and its fix).
MIN_FREE_DISK_GIB = 2.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    # A warning does not fail the preflight (e.g. a different GPU model than the profile's).
    warning: bool = False
    # A failure no wait can fix (the start table refuses it with another fix).
    never: bool = False

    @property
    def mark(self) -> str:
        return "ok  " if self.ok and not self.warning else ("warn" if self.ok else "FAIL")


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
