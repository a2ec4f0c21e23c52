"""The rehearsal's checklist: each item judged from what the run directory holds (events,
heartbeats, exit.json, checkpoints, the export), PASS / FAIL / SKIP with a one-line detail."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traindeck.numbers import finite_number
from training.profile import Profile
from training.rundir import RunPaths, read_json
from training.rundir.events_file import EventReader

# A resumed loss this many times the worst loss before the resume means the resume did not
# continue the curve (fresh optimizer state against trained weights, an lr restart, a blow-up).
LOSS_JUMP_FACTOR = 10.0

# "ValueError: ...", "torch.distributed.DistBackendError: ..." (not "raise ValueError(...)").
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Failure)\b")

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
ITEM_LAUNCH = "launch of every rank"
ITEM_STEP = "forward and backward pass"
ITEM_CHECKPOINT = "checkpoint written and loaded back"
ITEM_RESUME = "resume continues the step counter"
ITEM_EXPORT = "export"
ITEM_EVENTS = "event stream the UI would show"
ITEMS = (ITEM_LAUNCH, ITEM_STEP, ITEM_CHECKPOINT, ITEM_RESUME, ITEM_EXPORT, ITEM_EVENTS)



@dataclass
class CheckItem:
    name: str
    status: str
    detail: str = ""

    def line(self) -> str:
        return f"[{self.status}] {self.name}" + (f": {self.detail}" if self.detail else "")


@dataclass
class PhaseResult:
    """What one phase left behind, for the checks that compare phases."""

    returncode: int | None
    seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)
    heartbeat_t: dict[int, float] = field(default_factory=dict)


def format_checklist(items: list[CheckItem], headline: str = "") -> list[str]:
    failed = [i.name for i in items if i.status == FAIL]
    head = headline or ("rehearsal passed" if not failed else f"rehearsal FAILED: {', '.join(failed)}")
    return [head] + ["  " + i.line() for i in items]


def _train_metrics(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("kind") == "metric" and e.get("split", "train") == "train"
            and isinstance(e.get("step"), int)]


def _worker_running(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worker's `status running` events (the supervisor's own carry no world_size)."""
    return [e for e in events if e.get("kind") == "status" and e.get("state") == "running" and "world_size" in e]


def _heartbeats(paths: RunPaths) -> dict[int, float]:
    out = {}
    for f in paths.heartbeats.glob("rank-*.json"):
        data = read_json(f, {}) or {}
        if isinstance(data.get("rank"), int):
            out[data["rank"]] = float(data.get("t") or 0.0)
    return out


def first_error(paths: RunPaths, events: list[dict[str, Any]] | None = None) -> str:
    """The first line that says why the run failed: exit.json (the supervisor's diagnosis of the
    failing rank), else the worker's error event, else the end of rank 0's log."""
    data = read_json(paths.exit_json, {}) or {}
    errors = [str(x).strip() for x in data.get("error") or [] if str(x).strip()]
    rank = data.get("failed_rank")
    if errors:
        # The supervisor puts the exception line first; a plain traceback would have it last.
        line = next((x for x in errors if _EXCEPTION_LINE.match(x)), errors[0])
        return (f"rank {rank}: " if rank is not None and not line.startswith("rank") else "") + line
    for e in events or []:
        if e.get("kind") == "log" and e.get("level") == "error":
            return str(e.get("message", ""))
    if data.get("message"):
        return str(data["message"])
    if data.get("returncode") not in (None, 0):
        return f"exit code {data['returncode']}"
    return ""


def _read_events(paths: RunPaths) -> tuple[list[dict[str, Any]], int]:
    reader = EventReader(paths.events)
    out: list[dict[str, Any]] = []
    while True:
        batch = reader.read()
        if not batch and reader.at_end:
            return out, reader.skipped
        out.extend(batch)


def check_launch(paths: RunPaths, rp: Profile, phases: list[PhaseResult]) -> CheckItem:
    want = rp.world_size
    if rp.is_custom:
        from training.rundir.logs import rank_logs

        logs = rank_logs(paths)
        missing = [r for r in range(want) if r not in logs]
        if missing:
            return CheckItem(ITEM_LAUNCH, FAIL, f"no log from rank(s) {', '.join(map(str, missing))} of {want}"
                             + _because(paths, phases[-1].events if phases else []))
        return CheckItem(ITEM_LAUNCH, PASS, f"{want} of {want} ranks started (per-rank logs)")
    details = []
    for n, phase in enumerate(phases, start=1):
        before = phases[n - 2].heartbeat_t if n > 1 else {}
        # In phase 2 a rank counts only if it beat again: the files of phase 1 are still there.
        started = [r for r in range(want) if phase.heartbeat_t.get(r, 0.0) > before.get(r, 0.0)]
        if len(started) < want:
            missing = sorted(set(range(want)) - set(started))
            return CheckItem(ITEM_LAUNCH, FAIL, f"phase {n}: rank(s) {', '.join(map(str, missing))} of {want} never "
                             f"started (no heartbeat)" + _because(paths, phase.events))
        running = _worker_running(phase.events)
        if running and running[0].get("world_size") != want:
            return CheckItem(ITEM_LAUNCH, FAIL, f"phase {n}: world_size {running[0].get('world_size')} in the "
                             f"worker's status, expected {want}")
        if running:
            r = running[0]
            details.append(f"world_size {r.get('world_size')} on {r.get('backend') or r.get('device')}")
    how = details[0] if details else "no status from the worker"
    return CheckItem(ITEM_LAUNCH, PASS, f"{want} of {want} ranks started in {len(phases)} launch(es) "
                     f"(heartbeats), {how}")


def _because(paths: RunPaths, events: list[dict[str, Any]]) -> str:
    err = first_error(paths, events)
    return f" - {err}" if err else ""


def check_step(paths: RunPaths, rp: Profile, phases: list[PhaseResult]) -> CheckItem:
    for n, phase in enumerate(phases, start=1):
        metrics = _train_metrics(phase.events)
        bad = [e for e in metrics if finite_number((e.get("values") or {}).get("loss")) is None]
        if bad:
            return CheckItem(ITEM_STEP, FAIL, f"phase {n}: loss {bad[0]['values'].get('loss')} at step "
                             f"{bad[0]['step']} (not finite)")
        if phase.returncode not in (0, None) and not (rp.is_custom and metrics):
            err = first_error(paths, phase.events) or f"exit code {phase.returncode}"
            return CheckItem(ITEM_STEP, FAIL, f"phase {n}: {err}")
        if not metrics:
            if rp.is_custom:
                return CheckItem(ITEM_STEP, SKIP, "the script reported no train loss (add [metrics] regexes or "
                                 "report.log calls to have it checked)")
            return CheckItem(ITEM_STEP, FAIL, f"phase {n}: no train metric events" + _because(paths, phase.events))
    losses = [e["values"]["loss"] for ph in phases for e in _train_metrics(ph.events)]
    detail = f"{len(losses)} steps, loss {losses[0]:.4g} -> {losses[-1]:.4g}"
    running = _worker_running(phases[0].events)
    got = running[0].get("steps_per_epoch") if running else None
    if isinstance(got, int) and got < rp.train.steps_per_epoch:
        # Not a failure (every path still ran), but fewer steps than asked for prove less.
        detail += (f" (only {got} step(s) per epoch: the scaled data is small for {rp.world_size} rank(s) x "
                   f"batch {rp.train.batch_size}; raise the [rehearse] task sizes)")
    return CheckItem(ITEM_STEP, PASS, detail)


def load_into_fresh_model(path: Path, rp: Profile) -> dict[str, Any]:
    """Load a checkpoint the way a user would (weights_only=True) into a new model of the task."""
    import torch

    from training.engine.checkpoint import load_checkpoint, load_model_weights
    from training.tasks import load_task_module

    ckpt = load_checkpoint(path, map_location="cpu")
    torch.manual_seed(rp.train.seed)
    model = load_task_module(rp.train.task).build(rp.task_options(), rp.train.seed).model()
    load_model_weights(model, ckpt["model"])
    return ckpt


def _not_reached(phases: list[PhaseResult]) -> str:
    """Why the rehearsal stopped early ("" when every phase ran and finished)."""
    for n, ph in enumerate(phases, start=1):
        if ph.returncode != 0:
            return f"not reached: phase {n} failed"
    return ""


def check_checkpoint(paths: RunPaths, rp: Profile, phases: list[PhaseResult],
                     loaded: list[tuple[int, str, int | None]]) -> CheckItem:
    """`loaded`: (phase, error or "", the checkpoint's step) from load_into_fresh_model after each phase."""
    if rp.is_custom:
        events = [e for ph in phases for e in ph.events if e.get("kind") == "checkpoint"]
        if not events:
            return CheckItem(ITEM_CHECKPOINT, SKIP, "custom script: no checkpoint events to check")
        return CheckItem(ITEM_CHECKPOINT, PASS, f"{len(events)} checkpoint event(s), last {events[-1].get('path')}")
    if not loaded:
        if _not_reached(phases):
            return CheckItem(ITEM_CHECKPOINT, SKIP, _not_reached(phases))
        return CheckItem(ITEM_CHECKPOINT, FAIL, "no checkpoints/last.pt was written")
    for n, error, step in loaded:
        if error:
            return CheckItem(ITEM_CHECKPOINT, FAIL, f"phase {n}: {error}")
        written = [e for e in phases[n - 1].events if e.get("kind") == "checkpoint"
                   and str(e.get("path", "")).endswith("last.pt")]
        if not written:
            return CheckItem(ITEM_CHECKPOINT, FAIL, f"phase {n}: no checkpoint event for last.pt")
        last_step = max((e["step"] for e in _train_metrics(phases[n - 1].events)), default=None)
        if phases[n - 1].returncode == 0 and last_step is not None and step != last_step:
            return CheckItem(ITEM_CHECKPOINT, FAIL, f"phase {n}: last.pt holds step {step}, training reached "
                             f"step {last_step}")
    steps = " and ".join(str(s) for _, _, s in loaded)
    return CheckItem(ITEM_CHECKPOINT, PASS, f"last.pt (step {steps}) loads with weights_only=True into a "
                     f"fresh {rp.train.task} model")


def check_resume(paths: RunPaths, rp: Profile, phases: list[PhaseResult], all_events: list[dict[str, Any]],
                 phase1_step: int | None) -> CheckItem:
    if rp.is_custom:
        return CheckItem(ITEM_RESUME, SKIP, "custom script: resuming is the script's own business")
    if len(phases) < 2:
        if _not_reached(phases):
            return CheckItem(ITEM_RESUME, SKIP, _not_reached(phases))
        return CheckItem(ITEM_RESUME, SKIP, "not reached: phase 1 left no loadable last.pt")
    before, after = _train_metrics(phases[0].events), _train_metrics(phases[1].events)
    if not before or not after:
        return CheckItem(ITEM_RESUME, FAIL, f"no train metrics {'before' if not before else 'after'} the resume"
                         + _because(paths, phases[1].events))
    last, first = before[-1]["step"], after[0]["step"]
    running = _worker_running(phases[1].events)
    start = running[0].get("start_step") if running else None
    if start != phase1_step:
        return CheckItem(ITEM_RESUME, FAIL, f"the resumed worker started at step {start}, last.pt holds step "
                         f"{phase1_step}")
    if first <= last:
        return CheckItem(ITEM_RESUME, FAIL, f"the step counter restarted: step {first} after the resume, "
                         f"{last} before it")
    # Train metrics are one per logged step; validation shares its step with the last train
    # point by design, so only the train split has to be strictly increasing.
    steps = [e["step"] for e in _train_metrics(all_events)]
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        return CheckItem(ITEM_RESUME, FAIL, f"train step(s) {', '.join(map(str, repeated[:5]))} appear twice "
                         f"in events.jsonl")
    if steps != sorted(steps):
        return CheckItem(ITEM_RESUME, FAIL, "train steps in events.jsonl go backwards")
    worst = max(abs(e["values"]["loss"]) for e in before)
    resumed_loss = after[0]["values"]["loss"]
    if finite_number(resumed_loss) is None or abs(resumed_loss) > LOSS_JUMP_FACTOR * max(worst, 1e-6):
        return CheckItem(ITEM_RESUME, FAIL, f"the loss jumped at the resume: {before[-1]['values']['loss']:.4g} at "
                         f"step {last}, {resumed_loss} at step {first}")
    if phases[1].returncode != 0:
        return CheckItem(ITEM_RESUME, FAIL, "phase 2: " + (first_error(paths, phases[1].events)
                                                          or f"exit code {phases[1].returncode}"))
    return CheckItem(ITEM_RESUME, PASS, f"step {last} -> {first}, loss {before[-1]['values']['loss']:.4g} -> "
                     f"{resumed_loss:.4g}, no step repeated")


def check_export(paths: RunPaths, rp: Profile, phases: list[PhaseResult], since: float) -> CheckItem:
    if not rp.export.onnx:
        return CheckItem(ITEM_EXPORT, SKIP, "the profile does not export ([export] onnx = false)")
    from training.engine.export import missing_dependencies

    missing = missing_dependencies()
    if missing:
        return CheckItem(ITEM_EXPORT, FAIL, f"{' and '.join(missing)} not installed: pip install "
                         f"{' '.join(missing)} (or pip install 'traindeck[export]'), here and on the GPU box")
    if _not_reached(phases):
        return CheckItem(ITEM_EXPORT, SKIP, _not_reached(phases))
    target = paths.root / rp.export.path
    events = phases[-1].events if phases else []
    said = [str(e.get("message")) for e in events if e.get("kind") == "log" and "ONNX" in str(e.get("message"))]
    if not target.exists() or target.stat().st_mtime < since:
        return CheckItem(ITEM_EXPORT, FAIL, f"{rp.export.path} was not written by the last phase"
                         + (f" - {said[-1]}" if said else ""))
    try:
        import onnx

        onnx.checker.check_model(str(target))
    except Exception as exc:  # the checker raises its own ValidationError and protobuf errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CheckItem(ITEM_EXPORT, FAIL, f"onnx.checker rejects {rp.export.path}: {first[:300]}")
    return CheckItem(ITEM_EXPORT, PASS, f"{rp.export.path} ({target.stat().st_size} bytes, opset "
                     f"{rp.export.opset}) passes onnx.checker")


def check_events(paths: RunPaths, rp: Profile, phases: list[PhaseResult], all_events: list[dict[str, Any]],
                 skipped: int) -> CheckItem:
    if skipped:
        return CheckItem(ITEM_EVENTS, FAIL, f"{skipped} line(s) of events.jsonl do not parse")
    statuses = [e for e in all_events if e.get("kind") == "status"]
    final = statuses[-1].get("state") if statuses else None
    if _not_reached(phases):
        # A failed run's stream is right when it ends in the state the run really ended in.
        state = (read_json(paths.exit_json, {}) or {}).get("state") or "failed"
        if final != state:
            return CheckItem(ITEM_EVENTS, FAIL, f"the run {state}, but the last status event says {final}")
        return CheckItem(ITEM_EVENTS, PASS, f"{len(all_events)} events, 0 unparseable, final status {final}")
    wanted = ["status running"] if rp.is_custom else ["status running", "metric", "epoch", "checkpoint"]
    have = {e.get("kind") for e in all_events}
    if any(e.get("kind") == "status" and e.get("state") == "running" for e in all_events):
        have.add("status running")
    missing = [w for w in wanted if w not in have]
    if final != "finished":
        missing.append(f"final status finished (last status: {final})")
    if missing:
        return CheckItem(ITEM_EVENTS, FAIL, "missing " + ", ".join(missing))
    return CheckItem(ITEM_EVENTS, PASS, f"{len(all_events)} events, 0 unparseable; "
                     + ", ".join(w for w in wanted if w in have) + ", final status finished")


def check_rehearsal(paths: RunPaths, rp: Profile, phases: list[PhaseResult] | None = None,
                    loaded: list[tuple[int, str, int | None]] | None = None,
                    phase1_step: int | None = None, last_phase_started: float = 0.0) -> list[CheckItem]:
    """The checklist for a rehearsal run directory. Called with only (paths, rp) - a run started
    with start_run(rehearsal_profile(...)[0], rehearsal=True), e.g. by the TUI - it judges the run
    as one phase and loads last.pt itself; the resume item is then SKIP."""
    all_events, skipped = _read_events(paths)
    one_phase = phases is None
    if one_phase:
        rc = (read_json(paths.exit_json, {}) or {}).get("returncode")
        phases = [PhaseResult(rc, 0.0, all_events, _heartbeats(paths))]
        loaded = []
        if not rp.is_custom and (paths.checkpoints / "last.pt").exists():
            loaded.append(_try_load(paths, rp, 1))
    items = [
        check_launch(paths, rp, phases),
        check_step(paths, rp, phases),
        check_checkpoint(paths, rp, phases, loaded or []),
        CheckItem(ITEM_RESUME, SKIP, "one phase only: nothing was resumed") if one_phase and not rp.is_custom
        else check_resume(paths, rp, phases, all_events, phase1_step),
        check_export(paths, rp, phases, last_phase_started),
        check_events(paths, rp, phases, all_events, skipped),
    ]
    return items


def _try_load(paths: RunPaths, rp: Profile, phase: int) -> tuple[int, str, int | None]:
    try:
        ckpt = load_into_fresh_model(paths.checkpoints / "last.pt", rp)
    except Exception as exc:  # any failure to load is the finding, not a crash of the rehearsal
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return phase, f"{type(exc).__name__}: {first[:300]}", None
    step = ckpt.get("step")
    return phase, "", int(step) if isinstance(step, int) else None
