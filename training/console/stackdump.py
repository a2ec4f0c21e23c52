"""`traindeck --dump RUN`: the Python stacks of every live rank, recorded in the run directory.

    lines = dump_stacks(paths)          # writes RUN/dumps/stacks-<YYYYmmdd-HHMMSS>.txt
                                        # and a `log` event {"dump": "dumps/stacks-....txt"}

For each live worker of the run (run.json "processes", verified by pid + create_time):

1. `py-spy dump --pid PID` when py-spy is installed and allowed to attach (ptrace: root, or
   kernel.yama.ptrace_scope 0, or CAP_SYS_PTRACE in a container). It sees native frames too and
   needs nothing from the process.
2. Otherwise SIGUSR1: the built-in worker registers faulthandler on it and appends every thread's
   stack to dumps/rank-<rank>.txt; we wait for that file to grow. The signal is sent only to a
   process that catches SIGUSR1 (/proc/PID/status SigCgt): its default action is to terminate,
   and a custom script without faulthandler would die of it.

All ranks are signalled (or attached) at the same time, so the stacks show one moment: in a hang,
which rank sits in an all-reduce and which one is somewhere else.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from training.errors import TraindeckError
from training.rundir import RunPaths, hostname, read_run_json
from training.rundir import processes as pg
from training.rundir.events_file import append_events, make_event

PY_SPY_TIMEOUT_S = 8.0
EXCERPT_FRAMES = 4
# faulthandler writes a whole dump from its signal handler in one go; once the file has stopped
# growing for this long the dump is complete.
SETTLE_S = 0.3


@dataclass
class RankStack:
    rank: int
    pid: int
    method: str = ""  # "py-spy" | "faulthandler" | "" (none)
    text: str = ""
    error: str = ""


def _catches_sigusr1(pid: int) -> bool:
    """True if the process has a handler for SIGUSR1 (so the signal cannot kill it)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    mask = int(line.split()[1], 16)
                    return bool(mask & (1 << (signal.SIGUSR1 - 1)))
    except (OSError, ValueError, IndexError):
        pass
    return False  # cannot tell: do not risk killing the rank


def _live_workers(paths: RunPaths) -> list[tuple[int, pg.ProcRef]]:
    from training.console.runs import verified_state

    data = read_run_json(paths)
    state, live, note = verified_state(paths, data)
    if data.get("host") and data.get("host") != hostname():
        raise TraindeckError(f"run {paths.id} runs on {data.get('host')}, not on this machine; run "
                             f"`traindeck --dump {paths.id}` there.")
    if not live or paths.exit_json.exists():
        why = note or state.value
        raise TraindeckError(f"run {paths.id} is not live ({why}): stacks can only be dumped from running "
                             f"processes. Its logs are in {paths.logs}.")
    workers = []
    for record in data.get("processes") or []:
        ref = pg.ProcRef.from_json(record)
        if ref is None or ref.role != "worker" or ref.rank is None:
            continue
        if pg.resolve(ref) is not None:
            workers.append((ref.rank, ref))
    if not workers:
        raise TraindeckError(f"run {paths.id} has no live worker process yet (state {state.value}); "
                             f"try again once it is running.")
    return sorted(workers, key=lambda item: item[0])


def _py_spy(exe: str, pid: int, timeout_s: float) -> tuple[str, str]:
    """(stack text, error)."""
    try:
        done = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "", f"py-spy timed out after {timeout_s:g} s"
    except OSError as exc:
        return "", f"py-spy: {exc}"
    if done.returncode != 0 or not done.stdout.strip():
        detail = (done.stderr or done.stdout).strip().splitlines()
        return "", "py-spy: " + (detail[-1] if detail else f"exit code {done.returncode}")
    return done.stdout, ""


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _faulthandler_dumps(paths: RunPaths, stacks: list[RankStack], refs: dict[int, pg.ProcRef],
                        timeout_s: float) -> None:
    """Signal every rank at once, then collect what each appended to its dumps/rank-N.txt."""
    pending: dict[int, tuple[Path, int]] = {}
    for s in stacks:
        if not _catches_sigusr1(s.pid):
            s.error += ("; " if s.error else "") + ("it does not handle SIGUSR1 (a custom script without "
                                                    "faulthandler.register(signal.SIGUSR1)); install py-spy")
            continue
        dump_file = paths.dumps / f"rank-{s.rank}.txt"
        before = _file_size(dump_file)
        if not pg.signal_procs([refs[s.rank]], signal.SIGUSR1):
            s.error += ("; " if s.error else "") + "it exited"
            continue
        pending[s.rank] = (dump_file, before)
    deadline = time.monotonic() + timeout_s
    sizes: dict[int, tuple[int, float]] = {}
    by_rank = {s.rank: s for s in stacks}
    while pending and time.monotonic() < deadline:
        now = time.monotonic()
        for rank, (dump_file, before) in list(pending.items()):
            size = _file_size(dump_file)
            if size <= before:
                continue
            last = sizes.get(rank)
            if last is None or last[0] != size:
                sizes[rank] = (size, now)
            elif now - last[1] >= SETTLE_S:
                by_rank[rank].text = _read_from(dump_file, before)
                by_rank[rank].method = "faulthandler"
                by_rank[rank].error = ""
                del pending[rank]
        time.sleep(0.05)
    for rank, (dump_file, before) in pending.items():
        s = by_rank[rank]
        text = _read_from(dump_file, before)
        if text:  # still growing at the deadline: keep what is there
            s.text, s.method, s.error = text, "faulthandler", ""
        else:
            s.error += ("; " if s.error else "") + f"no dump in {dump_file.name} within {timeout_s:g} s"


def _excerpt(text: str, frames: int = EXCERPT_FRAMES) -> list[str]:
    """The innermost frames of the main thread: where the rank is right now."""
    lines = text.rstrip().splitlines()
    start = 0
    for i, line in enumerate(lines):
        # faulthandler marks the interrupted thread "Current thread"; py-spy names "MainThread".
        if line.startswith("Current thread") or '"MainThread"' in line:
            start = i
            break
    section = []
    for line in lines[start + 1:]:
        if not line.strip() or (section and not line.startswith((" ", "\t"))):
            break
        section.append(line.strip())
    return section[:frames]


def _dump_name(paths: RunPaths) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = paths.dumps / (f"stacks-{stamp}.txt" if n == 1 else f"stacks-{stamp}-{n}.txt")
        if not path.exists():
            return path
    raise TraindeckError(f"too many stack dumps in {paths.dumps} this second")


def dump_stacks(paths: RunPaths | str | os.PathLike, timeout_s: float = 10.0,
                py_spy: str | None | bool = None) -> list[str]:
    """Record every live rank's stacks; returns printable lines (the file and a short excerpt).

    `py_spy`: None finds py-spy on PATH, False never uses it, a string is its path.
    """
    paths = paths if isinstance(paths, RunPaths) else RunPaths(Path(paths))
    workers = _live_workers(paths)
    paths.dumps.mkdir(parents=True, exist_ok=True, mode=0o700)
    refs = dict(workers)
    stacks = [RankStack(rank, ref.pid) for rank, ref in workers]
    exe = shutil.which("py-spy") if py_spy is None else (py_spy or None)
    if exe:
        with ThreadPoolExecutor(max_workers=len(stacks)) as pool:
            results = list(pool.map(lambda s: _py_spy(exe, s.pid, min(PY_SPY_TIMEOUT_S, timeout_s)), stacks))
        for s, (text, error) in zip(stacks, results, strict=True):
            s.text, s.error, s.method = text, error, "py-spy" if text else ""
    _faulthandler_dumps(paths, [s for s in stacks if not s.text], refs, timeout_s)

    out_path = _dump_name(paths)
    rel = out_path.relative_to(paths.root).as_posix()
    got = [s for s in stacks if s.text]
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    parts = [f"# traindeck stack dump of run {paths.id} at {when}\n",
             "# " + ", ".join(f"rank {s.rank}: pid {s.pid}, {s.method or 'no stack'}" for s in stacks) + "\n"]
    for s in stacks:
        if s.text:
            parts.append(f"\n==== rank {s.rank} (pid {s.pid}, {s.method}) ====\n{s.text.rstrip()}\n")
        else:
            parts.append(f"\n==== rank {s.rank} (pid {s.pid}): no stack: {s.error} ====\n")
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(parts))

    missing = [s for s in stacks if not s.text]
    message = f"stack dump of {len(got)} rank{'s' if len(got) != 1 else ''}: {rel}"
    if missing:
        message += "; no stack from " + "; ".join(f"rank {s.rank} ({s.error})" for s in missing)
    append_events(paths.events, [make_event("log", level="warning" if missing else "info", message=message,
                                            dump=rel, ranks=[s.rank for s in got])])
    if not got:
        raise TraindeckError(f"no stacks from run {paths.id}: "
                             + "; ".join(f"rank {s.rank}: {s.error}" for s in stacks) + f". See {out_path}.")
    lines = [f"{message.split(': ', 1)[0]}: {out_path}"]
    for s in stacks:
        if not s.text:
            lines.append(f"rank {s.rank} (pid {s.pid}): no stack: {s.error}")
            continue
        lines.append(f"rank {s.rank} (pid {s.pid}, {s.method}):")
        lines.extend(f"    {frame}" for frame in _excerpt(s.text))
    return lines
