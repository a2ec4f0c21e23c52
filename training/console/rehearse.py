"""`run.py --profile NAME --rehearse`: run a GPU profile on this (CPU) box first, scaled down.

A rented 8x B200 box costs money from the first minute; a typo in a task option, a rank that
cannot start, a checkpoint that does not load back or an exporter that is not installed should
cost nothing. A rehearsal runs the profile's own task, mode and code paths (the same number of
DDP ranks on gloo, DataParallel's single-process fallback, bf16 autocast, checkpoint, resume,
ONNX export) with the model and data shrunk to seconds of CPU work, and ends with a checklist:

    phase 1  start_run(scaled profile, epochs - 1, rehearsal=True), followed like --headless
             then: checkpoints/last.pt loads with weights_only=True into a fresh model of the task
    phase 2  the run's profile.toml gets the full rehearsal epochs; resume_run in the same directory
             then: the step counter continued, the loss curve continued, export, the event stream

    [PASS] launch of every rank: 8 of 8 ranks started (heartbeats), world_size 8 on gloo
    [FAIL] forward and backward pass: rank 0: ValueError: unknown arch 'transformer' ...

The checklist is printed, written to RUN_DIR/rehearsal.json and appended to events.jsonl as `log`
events (so the TUI's event log shows it). The exit code is 0 only when no item failed; an item
that does not apply to the profile (export when [export] onnx is off) is SKIP and does not fail.

For the TUI: `rehearse(..., follow=..., on_phase=...)` runs the whole thing in a worker thread;
or start a one-phase rehearsal with `runs.start_run(rehearsal_profile(p)[0], ..., rehearsal=True)`
and judge it afterwards with `check_rehearsal(paths, rehearsal_profile(p)[0])`.

The pieces: training.console.rehearsal_profile (the scaled profile, the phases) and
training.console.rehearsal_checks (the checklist); their public names are importable from here.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, TextIO

from training.console.rehearsal_checks import (  # noqa: F401 - re-exported: the checklist's names
    FAIL,
    ITEM_CHECKPOINT,
    ITEM_EVENTS,
    ITEM_EXPORT,
    ITEM_LAUNCH,
    ITEM_RESUME,
    ITEM_STEP,
    ITEMS,
    LOSS_JUMP_FACTOR,
    PASS,
    SKIP,
    CheckItem,
    PhaseResult,
    _heartbeats,
    _read_events,
    _try_load,
    check_checkpoint,
    check_events,
    check_export,
    check_launch,
    check_rehearsal,
    check_resume,
    check_step,
    first_error,
    format_checklist,
    load_into_fresh_model,
)
from training.console.rehearsal_profile import (  # noqa: F401 - re-exported: the scaled profile's names
    AUTO_RANKS_PER_CORE,
    FP16_NOTE,
    MAX_BATCH,
    REHEARSAL_SUFFIX,
    auto_rank_cap,
    phase_profiles,
    rehearsal_profile,
)
from training.profile import Profile, parse_profile
from training.rundir import RunPaths, read_run_json, write_json_atomic
from training.rundir.events_file import append_events, make_event
from training.rundir.liveness import SupervisorStatus, supervisor_status

RESULT_FILE = "rehearsal.json"
# follow()'s return code when Ctrl-C stopped the run.
INTERRUPTED = 130


# ---- the whole rehearsal ------------------------------------------------------------------------

def _say(out: TextIO, line: str) -> None:
    print(f"rehearse: {line}", file=out, flush=True)


def _run_phase(paths: RunPaths, n: int, follow: Callable[[RunPaths, TextIO, int], int], out: TextIO,
               events_before: int) -> PhaseResult:
    t0 = time.monotonic()
    rc = follow(paths, out, n)
    events = _events_through_final_status(paths, events_before)
    return PhaseResult(rc, round(time.monotonic() - t0, 2), events[events_before:], _heartbeats(paths))


# finish_run writes the final status event before exit.json and run.json's end, but an exit.json
# from another writer (or from a traindeck that wrote the event last) can be a moment ahead of
# that event. The phase's events are read once it is there (or once its writer is gone), so the
# event-stream check never judges a half-written end.
FINAL_STATUS_WAIT_S = 5.0


def _events_through_final_status(paths: RunPaths, events_before: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + FINAL_STATUS_WAIT_S
    while True:
        events, _ = _read_events(paths)
        ended = any(e.get("kind") == "status" and e.get("state") in ("finished", "failed", "stopped")
                    for e in events[events_before:])
        if ended or time.monotonic() >= deadline:
            return events
        if supervisor_status(read_run_json(paths)) is not SupervisorStatus.ALIVE:
            return _read_events(paths)[0]  # its last write may have landed just before it exited
        time.sleep(0.05)


def rehearse(profile: Profile, runs_dir: Path, follow: Callable[[RunPaths, TextIO, int], int],
             argv: list[str] | None = None, out: TextIO = sys.stdout, *, cores: int | None = None,
             on_phase: Callable[[RunPaths, int], None] | None = None) -> int:
    """Rehearse `profile` in a new run directory under `runs_dir`; 0 when every item passed.

    `follow(paths, out, phase) -> returncode` waits for phase 1 or 2 to end and returns INTERRUPTED
    when the user stopped it: the console hands in its viewer (run.py the headless printer, the TUI
    a wait while its run screen shows the run). `on_phase(paths, n)` is called when phase n has
    started, so a UI can show the run directory while it runs.
    """
    from training.console import runs

    t_start = time.monotonic()
    rp, notes = rehearsal_profile(profile, cores)
    # The worker re-reads profile.toml strictly; a scaled profile that does not load (a bad
    # [rehearse] task option) is the user's to fix before anything starts.
    parse_profile(rp.to_toml(), path=f"{rp.name} (rehearsal of {profile.source or profile.name})")
    first, full = phase_profiles(rp)
    two_phases = not rp.is_custom

    _say(out, f"{profile.name} on this box: {rp.launch.mode}, {rp.world_size} rank(s), "
              f"{'task ' + rp.train.task if rp.train.task else 'script ' + (rp.train.script or rp.train.module)}")
    for note in notes:
        _say(out, note)
    paths = runs.start_run(first if two_phases else full, Path(runs_dir), argv=argv, rehearsal=True)
    append_events(paths.events, [make_event("log", level="info", message=f"rehearsal: {note}", source="rehearse")
                                 for note in notes])
    _say(out, f"run directory {paths.root}")
    if two_phases:
        _say(out, f"phase 1: {first.train.epochs} epoch(s), then stop and check last.pt")
    if on_phase:
        on_phase(paths, 1)
    phases = [_run_phase(paths, 1, follow, out, 0)]
    loaded: list[tuple[int, str, int | None]] = []
    phase1_step = None
    last_started = 0.0
    if two_phases and (paths.checkpoints / "last.pt").exists():
        loaded.append(_try_load(paths, rp, 1))
        phase1_step = loaded[-1][2]
    if two_phases and phases[0].returncode == 0 and phase1_step is not None:
        # Same directory, more epochs: exactly what a user does to continue a finished run.
        (paths.profile).write_text(full.to_toml(), encoding="utf-8")
        _say(out, f"phase 2: resume in the same directory to epoch {full.train.epochs}"
                  + (", then export" if full.export.onnx else "")
                  + " (the worker will note that profile.toml changed: that is the epochs)")
        events_before = len(_read_events(paths)[0])
        last_started = time.time()
        runs.resume_run(paths)
        if on_phase:
            on_phase(paths, 2)
        phases.append(_run_phase(paths, 2, follow, out, events_before))
        if (paths.checkpoints / "last.pt").exists():
            loaded.append(_try_load(paths, rp, 2))

    if any(ph.returncode == INTERRUPTED for ph in phases):
        _say(out, f"interrupted; the run was stopped. Run directory: {paths.root}")
        return INTERRUPTED

    items = check_rehearsal(paths, rp, phases, loaded, phase1_step, last_started)
    ok = all(i.status != FAIL for i in items)
    seconds = round(time.monotonic() - t_start, 1)
    failed = [i.name for i in items if i.status == FAIL]
    headline = (f"rehearsal of {profile.name} passed in {seconds:.0f} s: ready for its GPUs" if ok else
                f"rehearsal of {profile.name} FAILED in {seconds:.0f} s ({', '.join(failed)}); "
                f"run directory {paths.root}")
    write_json_atomic(paths.root / RESULT_FILE, {
        "profile": profile.name, "rehearsal_profile": rp.name, "ok": ok, "seconds": seconds, "notes": notes,
        "items": [asdict(i) for i in items],
        "phases": [{"returncode": ph.returncode, "seconds": ph.seconds} for ph in phases],
    })
    append_events(paths.events, [make_event("log", level="info" if ok else "error", source="rehearse",
                                            message=headline, checklist=[asdict(i) for i in items])]
                  + [make_event("log", level="error" if i.status == FAIL else "info", source="rehearse",
                                message=i.line()) for i in items])
    # The checklist is the last thing printed, so `| tail -7` shows the verdict and every item.
    print(file=out)
    for line in format_checklist(items, headline):
        print(line, file=out)
    out.flush()
    return 0 if ok else 1
