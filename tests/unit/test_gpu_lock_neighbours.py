"""The GPU lock directory as hostile ground (issue 29): another local user of the box plants
symlinks, FIFOs, files of their own, garbage records, or holds the mutex; the victim (a second
non-root user, where root would be too strong: root may write anything) keeps its files as they
were and gets a clear answer within the deadline, naming the kernel's holder, never a forged one.
All in-process or forked children, no training processes: a few seconds in all."""

from __future__ import annotations

import fcntl
import json
import os
import select
import stat
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.neighbour import (
    NEIGHBOUR_GID,
    NEIGHBOUR_UID,
    VICTIM_GID,
    VICTIM_UID,
    as_neighbour,
    as_victim,
    needs_root,
    shared_dir,
)
from training.rundir import gpu_locks
from training.rundir.gpu_locks import GpuLocks, LockBusy, UnsafeLockDir, clean_record, parse_record, printable

GPU = "GPU-0000aaaa-bbbb-cccc-dddd-eeeeffff0000"
DEADLINE_S = 0.3


def _take(keys):
    return lambda held: (None, f"held: {sorted(held)}") if set(keys) & set(held) else (list(keys), "taken")


def _victims_private_files(root: Path) -> dict[str, tuple[int, bytes]]:
    """A victim's home with a private key and another file (as root, then handed to the victim)."""
    home = root / "victim-home"
    home.mkdir(mode=0o700)
    (home / "id_rsa").write_bytes(b"PRIVATE KEY")
    (home / "notes").write_bytes(b"keep me")
    for path in (home, home / "id_rsa", home / "notes"):
        os.chown(path, VICTIM_UID, VICTIM_GID)
    os.chmod(home / "id_rsa", 0o600)
    os.chmod(home / "notes", 0o600)
    return _snapshot(home)


def _snapshot(home: Path) -> dict[str, tuple[int, bytes]]:
    out = {".": (os.lstat(home).st_mode, b"")}
    for path in sorted(home.iterdir()):
        out[path.name] = (os.lstat(path).st_mode, path.read_bytes())
    return out


def _admin_lock_dir(shared: Path) -> Path:
    """The lock directory as the box's admin makes it: root-owned, 1777."""
    locks = shared / "locks"
    locks.mkdir()
    os.chmod(locks, 0o1777)
    return locks


def _gpus_view(backend, locks_dir: Path) -> str:
    """`run.py --gpus` over this lock directory (the environment's setting wins over an argument)."""
    from training.console.gpu_holders import format_gpu_holders

    os.environ[gpu_locks.LOCK_DIR_ENV] = str(locks_dir)
    return format_gpu_holders(backend)


def _answer(fn):
    """(what fn raised or returned, seconds): the victim's side of a test, run in its child."""
    t0 = time.monotonic()
    try:
        result = ["ok", fn()]
    except (UnsafeLockDir, LockBusy) as exc:
        result = [type(exc).__name__, str(exc)]
    return result + [time.monotonic() - t0]


@contextmanager
def neighbour_holding(directory: Path, files: dict[str, bytes | None]):
    """A neighbour process that makes (or opens) each file in `directory`, writes its content
    ("{pid}" becomes its own pid) and holds an exclusive flock on all of them until the block ends.
    Yields its pid: the one /proc/locks names."""
    go_read, go_write = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_write)
            os.close(ready_read)
            os.setgroups([])
            os.setgid(NEIGHBOUR_GID)
            os.setuid(NEIGHBOUR_UID)
            fds = []
            for name, content in files.items():
                fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o644)
                if content is not None:
                    os.ftruncate(fd, 0)
                    os.write(fd, content.replace(b"{pid}", str(os.getpid()).encode()))
                fcntl.flock(fd, fcntl.LOCK_EX)
                fds.append(fd)
            os.write(ready_write, b"ready")
            os.read(go_read, 1)  # until the parent closes its end
        finally:
            os._exit(0)
    os.close(go_read)
    os.close(ready_write)
    try:
        ready, _, _ = select.select([ready_read], [], [], 10)
        assert ready and os.read(ready_read, 5) == b"ready", "the neighbour did not take its locks"
        yield pid
    finally:
        os.close(go_write)
        os.close(ready_read)
        os.waitpid(pid, 0)


# ---------------------------------------------------------------- symlinks and FIFOs

@needs_root
def test_symlinks_planted_in_the_lock_directory_change_none_of_the_victims_files():
    with shared_dir() as shared:
        before = _victims_private_files(shared)
        home = shared / "victim-home"
        locks_dir = _admin_lock_dir(shared)

        def plant(links):
            for name, target in links.items():
                os.symlink(target, locks_dir / name)

        as_neighbour(plant, {"tickets": str(home), "queue.lock": str(home / "id_rsa"),
                             f"gpu-{GPU}.lock": str(home / "notes"), "ticket-00000000000000000001.json": str(home)})

        def victim():
            locks = GpuLocks(locks_dir, deadline_s=DEADLINE_S)
            return [_answer(locks.held), _answer(lambda: locks.acquire(_take([GPU]), {"run_id": "v"}, wait=False)),
                    _answer(lambda: locks.acquire(_take([GPU]), {"run_id": "v"}, wait=True, sleep=lambda s: None,
                                                  should_stop=lambda: True))]

        answers = as_victim(victim, timeout_s=20)
        for kind, text, seconds in answers:
            assert kind == "UnsafeLockDir" and "'queue.lock' in the GPU lock directory is a symbolic link" in text
            assert "TRAINDECK_GPU_LOCK_DIR" in text and "\n" not in text and seconds < 2
        as_neighbour(os.unlink, str(locks_dir / "queue.lock"))  # only the GPU's lock is a link now

        def victim_takes_the_gpu():
            locks = GpuLocks(locks_dir, deadline_s=DEADLINE_S)
            return [_answer(locks.held), _answer(lambda: locks.acquire(_take([GPU]), {"run_id": "v"}, wait=False))]

        (kind, held, _), (kind2, text, _) = as_victim(victim_takes_the_gpu, timeout_s=20)
        assert kind == "ok" and held == {}  # a link is nobody's lock
        assert kind2 == "UnsafeLockDir" and f"'gpu-{GPU}.lock' in the GPU lock directory is a symbolic link" in text
        assert _snapshot(home) == before  # mode and content: home 0700, key 0600, nothing truncated


@needs_root
def test_a_fifo_named_like_a_lock_file_never_hangs_anyone():
    with shared_dir() as shared:
        locks_dir = _admin_lock_dir(shared)
        as_neighbour(lambda: [os.mkfifo(locks_dir / name) for name in
                              ("queue.lock", f"gpu-{GPU}.lock", "ticket-00000000000000000001.json")] and None)

        def victim():
            locks = GpuLocks(locks_dir, deadline_s=DEADLINE_S)
            first = [_answer(locks.held), _answer(locks.queue),
                     _answer(lambda: locks.acquire(_take([GPU]), {"run_id": "v"}, wait=False))]
            return first

        for kind, text, seconds in as_victim(victim, timeout_s=20):
            assert kind == "UnsafeLockDir" and "'queue.lock' in the GPU lock directory is not a regular file" in text
            assert seconds < 2
        as_neighbour(os.unlink, str(locks_dir / "queue.lock"))

        def victim_again():
            locks = GpuLocks(locks_dir, deadline_s=DEADLINE_S)
            return [_answer(locks.held), _answer(locks.queue),
                    _answer(lambda: locks.acquire(_take([GPU]), {"run_id": "v"}, wait=False))]

        (k1, held, _), (k2, queue, _), (k3, text, seconds) = as_victim(victim_again, timeout_s=20)
        assert (k1, held, k2, queue) == ("ok", {}, "ok", [])  # a FIFO is nobody's lock and nobody's ticket
        assert k3 == "UnsafeLockDir" and "not a regular file" in text and seconds < 2


# ---------------------------------------------------------------- a held mutex, forged records

@needs_root
def test_a_neighbour_holding_the_mutex_is_named_by_the_kernel_within_the_deadline_not_by_its_record():
    from tests.fixtures.fake_nvml import four_2080ti
    from training.monitor.gpu import GpuBackend
    from training.supervise.gpu_select import lock_key

    backend = GpuBackend(nvml=four_2080ti(pids=[]))
    key = lock_key(1, backend.devices()[1].uuid)
    forged = json.dumps({"run_id": "\x1b]0;pwned\x07\x1b[2Jrun", "user": "alice", "pid": 1}).encode()
    with shared_dir() as shared:
        locks_dir = _admin_lock_dir(shared)
        with neighbour_holding(locks_dir, {"queue.lock": b'{"user": "alice", "pid": 1}',
                                           f"gpu-{key}.lock": forged}) as neighbour_pid:
            def victim():
                gpu_locks.MUTEX_DEADLINE_S = DEADLINE_S
                locks = GpuLocks(locks_dir)
                seen = []
                return {"refused": _answer(lambda: locks.acquire(_take(["x"]), {"run_id": "v"}, wait=False)),
                        "held": _answer(locks.held), "warnings": locks.warnings,
                        "queued": _answer(lambda: locks.acquire(_take(["x"]), {"run_id": "v"}, wait=True,
                                                                on_wait=lambda p, why: seen.append(why),
                                                                should_stop=lambda: True, sleep=lambda s: None)),
                        "seen": seen,
                        "gpus": _answer(lambda: _gpus_view(backend, locks_dir))}

            got = as_victim(victim, timeout_s=20)
        who = f"pid {neighbour_pid}, user {NEIGHBOUR_UID}"
        kind, text, seconds = got["refused"]
        assert kind == "LockBusy" and who in text and "alice" not in text and seconds < DEADLINE_S + 1.5
        assert "queue.lock has been held for 0.3 s" in text and "TRAINDECK_GPU_LOCK_DIR" in text
        kind, held, seconds = got["held"]
        assert kind == "ok" and seconds < DEADLINE_S + 1.5 and who in got["warnings"][0]
        # The GPU's holder is the kernel's: its record's run id is not believed (pid 1 did not write it).
        assert held[key]["pid"] == neighbour_pid and held[key]["user"] == str(NEIGHBOUR_UID)
        assert "run_id" not in held[key] and "alice" not in json.dumps(held)
        assert got["queued"][:2] == ["ok", [None, "stopped"]] and who in got["seen"][0]
        kind, table, seconds = got["gpus"]
        assert kind == "ok" and seconds < 2 * DEADLINE_S + 1.5
        row = next(line for line in table.splitlines() if line.startswith("1 "))
        assert f"pid {neighbour_pid}, user {NEIGHBOUR_UID}" in row and "alice" not in table
        assert "\x1b" not in table and "\x07" not in table and "GPU locks: the GPU lock directory's mutex" in table


@needs_root
def test_a_record_the_holder_did_write_is_shown_printable_only():
    from tests.fixtures.fake_nvml import four_2080ti
    from training.monitor.gpu import GpuBackend
    from training.supervise.gpu_select import lock_key

    backend = GpuBackend(nvml=four_2080ti(pids=[]))
    key = lock_key(0, backend.devices()[0].uuid)
    escapes = b'{"run_id": "\\u001b]0;owned\\u0007\\u001b[31mred\\u202e' + b"x" * 500 + b'", "pid": {pid}}'
    with shared_dir() as shared:
        locks_dir = _admin_lock_dir(shared)
        with neighbour_holding(locks_dir, {f"gpu-{key}.lock": escapes,
                                           "ticket-00000000000000000001.json": escapes}) as neighbour_pid:
            table = as_victim(lambda: _gpus_view(backend, locks_dir), timeout_s=20)
    assert "traindeck run ?]0;owned??[31mred?xxx" in table and f"pid {neighbour_pid}" in table
    assert not any(ch != "\n" and not ch.isprintable() for ch in table)
    assert max(len(line) for line in table.splitlines()) < 300  # bounded, not 500 x's


# ---------------------------------------------------------------- files others made first

@needs_root
def test_lock_files_a_neighbour_made_first_still_let_the_victim_queue_and_take_gpus():
    with shared_dir() as shared:
        locks_dir = _admin_lock_dir(shared)

        def make_first():  # theirs, not writable by anyone else, as a neighbour (or an older traindeck) left them
            for name, mode in (("queue.lock", 0o644), ("next-ticket", 0o600), (f"gpu-{GPU}.lock", 0o644)):
                fd = os.open(locks_dir / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
                os.write(fd, b"\xff\xfe garbage")
                os.close(fd)
            os.mkdir(locks_dir / "tickets", 0o700)

        as_neighbour(make_first)

        def victim():
            locks = GpuLocks(locks_dir, deadline_s=DEADLINE_S)
            hold, payload = locks.acquire(_take([GPU]), {"run_id": "victim-run"}, wait=True, sleep=lambda s: None)
            held = locks.held()
            hold.release()
            again, _ = locks.acquire(_take([GPU]), {"run_id": "victim-run-2"}, wait=False)
            again.release()
            return payload, held[GPU], os.getpid(), locks.queue()

        payload, holder, victim_pid, queue = as_victim(victim, timeout_s=20)
        assert payload == "taken" and holder["pid"] == victim_pid and holder["user"] == str(VICTIM_UID)
        assert queue == []
        # The neighbour's files are as they were: the victim never chmod-ed or wrote what it cannot own.
        assert stat.S_IMODE(os.stat(locks_dir / "queue.lock").st_mode) == 0o644
        assert (locks_dir / f"gpu-{GPU}.lock").read_bytes() == b"\xff\xfe garbage"


def test_no_open_in_the_lock_directory_follows_a_link_blocks_or_creates_without_excl(tmp_path, monkeypatch):
    """What keeps lock files of other users working under fs.protected_regular (where O_CREAT on
    another user's file in a sticky directory is EACCES) and a FIFO from blocking."""
    calls = []
    real_open = os.open

    def recording_open(path, flags, *args, **kwargs):
        calls.append((str(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(gpu_locks.os, "open", recording_open)
    locks = GpuLocks(tmp_path / "locks")
    hold, _ = locks.acquire(_take([GPU]), {"run_id": "r1"}, wait=False)
    queued, why = locks.acquire(_take([GPU]), {"run_id": "r2"}, wait=True, should_stop=lambda: True,
                                sleep=lambda s: None)
    assert locks.held()[GPU]["run_id"] == "r1" and queued is None and why == "stopped"
    hold.release()
    again, _ = locks.acquire(_take([GPU]), {"run_id": "r3"}, wait=False)  # every file exists now
    again.release()
    assert calls
    for path, flags in calls:
        assert flags & os.O_NOFOLLOW and flags & os.O_NONBLOCK, path
        assert not flags & os.O_CREAT or flags & os.O_EXCL, path
    assert stat.S_IMODE(os.stat(tmp_path / "locks").st_mode) == 0o1777  # made here: chmod-ed


# ---------------------------------------------------------------- the directory itself

@needs_root
def test_a_lock_directory_that_is_a_link_or_another_users_is_refused_with_the_fix():
    with shared_dir() as shared:
        before = _victims_private_files(shared)
        home = shared / "victim-home"
        as_neighbour(lambda: (os.mkdir(shared / "theirs", 0o777), os.chmod(shared / "theirs", 0o1777),
                              os.symlink(str(home), shared / "link")) and None)

        def victim():
            out = {}
            for name in ("theirs", "link"):
                locks = GpuLocks(shared / name, deadline_s=DEADLINE_S)
                out[name] = [_answer(lambda: locks.acquire(_take([GPU]), {}, wait=False)), _answer(locks.held)]
            own = GpuLocks(shared / "mine")
            hold, _ = own.acquire(_take([GPU]), {}, wait=False)
            hold.release()
            out["mine"] = oct(stat.S_IMODE(os.lstat(shared / "mine").st_mode))
            return out

        got = as_victim(victim, timeout_s=20)
        for kind, text, seconds in got["theirs"]:
            assert kind == "UnsafeLockDir" and f"it belongs to another user (uid {NEIGHBOUR_UID})" in text
            assert "root-owned with mode 1777" in text and "TRAINDECK_GPU_LOCK_DIR" in text and seconds < 1
        for kind, text, _ in got["link"]:
            assert kind == "UnsafeLockDir" and "it is a symbolic link" in text and "Nothing was changed" in text
        assert got["mine"] == "0o1777"  # a directory the victim made itself: fine, and shared like /tmp
        assert _snapshot(home) == before


def test_a_shared_directory_without_the_sticky_bit_is_refused(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    with pytest.raises(UnsafeLockDir, match=r"not sticky \(mode 777\).*1777"):
        GpuLocks(loose).acquire(_take([GPU]), {}, wait=False)


def test_a_mutex_held_in_this_process_gives_up_on_the_injected_clock(tmp_path):
    """The deadline runs on the clock it is given: no real waiting in the test."""
    locks_dir = tmp_path / "locks"
    GpuLocks(locks_dir).ensure()
    fd = os.open(locks_dir / "queue.lock", os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    now = [0.0]
    locks = GpuLocks(locks_dir, deadline_s=5, clock=lambda: now[0],
                     nap=lambda s: now.__setitem__(0, now[0] + s))
    try:
        with pytest.raises(LockBusy, match=rf"held for 5 s by pid {os.getpid()}, user "):
            locks.acquire(_take([GPU]), {}, wait=False)
        assert 5 <= now[0] < 5.1
    finally:
        os.close(fd)


# ---------------------------------------------------------------- records: any bytes

@needs_root
def test_garbage_in_held_records_never_raises():
    garbage = {f"gpu-GPU-{i}.lock": raw for i, raw in enumerate([
        b"\xff\xfe\xfa not utf-8", b"[" * 100_000, b"{}" * 50_000, b"[1, 2]", b"5", b"true", b'"text"',
        b'{"pid": Infinity, "run_id": 5, "user": ["a"], "since": NaN}', b'{"pid": ' + b"9" * 5000 + b"}",
        b'{"pid": 1e999, "pids": [1, "x", -3, {"a": 1}]}', b"\0" * 70_000])}
    with shared_dir() as shared:
        locks_dir = _admin_lock_dir(shared)
        with neighbour_holding(locks_dir, garbage) as neighbour_pid:
            held = as_victim(lambda: GpuLocks(locks_dir, deadline_s=DEADLINE_S).held(), timeout_s=20)
    assert len(held) == len(garbage)
    assert all(record["pid"] == neighbour_pid and "run_id" not in record for record in held.values())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30)
record_like = st.fixed_dictionaries({}, optional={k: json_values for k in
                                                  ("run_id", "user", "host", "pid", "since", "pids", "ticket")})


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400) | record_like.map(lambda d: json.dumps(d).encode()) |
       st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n))
def test_any_bytes_read_as_a_record_are_a_dict_of_the_right_types(raw):
    record = parse_record(raw)
    assert isinstance(record, dict)
    for key in ("run_id", "user", "host", "command"):
        if key in record:
            assert isinstance(record[key], str) and record[key].isprintable() and len(record[key]) <= 80
    for key in ("pid", "ticket"):
        assert key not in record or type(record[key]) is int
    assert "since" not in record or isinstance(record["since"], float)
    assert all(type(p) is int and p > 0 for p in record.get("pids", []))


@given(record_like)
def test_a_well_formed_record_keeps_what_has_the_right_type(data):
    record = clean_record(data)
    if isinstance(data.get("run_id"), str):
        assert record["run_id"] == printable(data["run_id"])
    if type(data.get("pid")) is int and 0 <= data["pid"] < 1 << 64:
        assert record["pid"] == data["pid"]


@given(st.text(), st.integers(2, 200))
def test_printable_text_has_no_control_characters_and_is_bounded(text, limit):
    out = printable(text, limit)
    assert out.isprintable() and len(out) <= limit and "\x1b" not in out


def test_an_oversized_record_is_empty():
    assert parse_record(json.dumps({"run_id": "x" * (64 * 1024)}).encode()) == {}
    assert parse_record(b"") == {} and parse_record(b"\xff") == {}


def _plant_a_run_in_your_sweep(runs_dir: str, sweep_id: str) -> None:
    from tests.support.fake_runs import make_run_dir

    make_run_dir(Path(runs_dir), "20261124-190000-cpu", state="running", sweep={"id": sweep_id, "point": 0})


@needs_root
def test_a_neighbours_run_that_names_your_sweep_is_not_one_of_its_runs():
    # A runs directory everyone may write (a lab's shared one): the neighbour's run claims your
    # sweep's id; --compare, the runs screen and --stop SWEEP (which signals what runs name) skip it.
    from tests.support.fake_runs import make_run_dir
    from training.rundir.sweep_dir import create_sweep_dir, sweep_runs

    with shared_dir() as runs_dir:
        sweep = create_sweep_dir(runs_dir, "cpu")
        mine = make_run_dir(runs_dir, "20261124-183000-cpu", state="finished", sweep={"id": sweep.id, "point": 1})
        as_neighbour(_plant_a_run_in_your_sweep, str(runs_dir), sweep.id)
        assert len([p for p in runs_dir.iterdir() if (p / "run.json").exists()]) == 2
        assert [p.root for p in sweep_runs(runs_dir, sweep.id)] == [mine.root]
