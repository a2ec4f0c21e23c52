"""Process accounting for the tests: never trust one source.

`recorded()` reads run.json (pid + create_time, the way traindeck itself identifies its
processes); `processes_of()` scans the whole process table for anything whose command line or
environment mentions a directory, so a process traindeck forgot to record is found too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import psutil

from training.rundir import RunPaths, read_run_json
from training.rundir import processes as pg
from training.supervise.launch import free_port  # noqa: F401 - re-exported: the one free-port helper


def recorded(paths: RunPaths) -> list[pg.ProcRef]:
    """Every process run.json names: supervisor, launcher, workers and their children."""
    data = read_run_json(paths)
    refs = [pg.ProcRef.from_json(data.get("supervisor"), "supervisor"),
            pg.ProcRef.from_json(data.get("launcher"), "launcher")]
    refs += [pg.ProcRef.from_json(p) for p in data.get("processes") or []]
    return list(dict.fromkeys(r for r in refs if r is not None and r.create_time))


def assert_gone(refs: list[pg.ProcRef], timeout: float = 10.0) -> None:
    assert refs, "no processes recorded"
    left = pg.wait_gone(refs, timeout)
    assert not left, f"processes left behind: {left}"


def assert_nothing_left(paths: RunPaths, extra_pids: list[int] = (), timeout: float = 5.0) -> None:
    """Every process run.json recorded is gone (the supervisor may still be writing its last lines
    for a moment after the state changes), and so are `extra_pids` (grandchildren it never recorded)."""
    refs = recorded(paths)
    assert refs, "run.json recorded no processes"
    assert_gone(refs, timeout)
    for pid in extra_pids:
        assert not pid_alive(pid), f"grandchild {pid} left behind"


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_of(root: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line or environment mentions `root`."""
    needle = str(Path(root).resolve())
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline", "environ", "status"]):
        if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        env = p.info["environ"] or {}
        if needle in cmd or needle in env.get("TRAINDECK_RUN_DIR", "") or needle in env.get("TRAINDECK_RUNS_DIR", ""):
            found.append(p)
    return found


def assert_no_processes_of(root: Path, timeout: float = 10.0) -> None:
    """Nothing anywhere in the process table belongs to `root` (waits out exits in progress)."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_of(root)
        if not left:
            return
        if time.monotonic() >= deadline:
            desc = []
            for p in left:
                try:
                    desc.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
                except psutil.Error:
                    pass
            if desc:
                raise AssertionError("processes left behind:\n" + "\n".join(desc))
            return
        time.sleep(0.2)


def kill_everything_of(root: Path) -> None:
    for p in processes_of(root):
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def sigkill(ref: pg.ProcRef) -> None:
    """SIGKILL a recorded process, only if it is still the same process (pid + create_time)."""
    p = pg.resolve(ref)
    assert p is not None, f"{ref} is not alive"
    p.send_signal(signal.SIGKILL)


def kill_tree(proc, timeout: float = 20.0) -> None:
    """SIGKILL a launcher (a Popen) and every descendant: torchrun's workers sit in sessions of their own."""
    try:
        parent = psutil.Process(proc.pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=timeout)
    proc.wait(timeout=timeout)


def listeners(port: int) -> list:
    """Sockets in LISTEN state on `port` (any address, any process)."""
    return [c for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]


def bound(port: int, pids: set[int]) -> list:
    """Any socket of `pids` (LISTEN or connected) on local `port`."""
    return [c for c in psutil.net_connections(kind="inet") if c.laddr and c.laddr.port == port
            and c.pid in pids]


def read_until(proc: subprocess.Popen, done: Callable[[str], bool], timeout: float) -> list[str]:
    """`proc`'s stdout (text), line by line, until a line for which `done(line)` holds, its end, or
    `timeout` seconds; returns the lines read, newlines off."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if done(line):
            break
    return lines
