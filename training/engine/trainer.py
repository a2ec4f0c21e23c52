"""The training loop of one rank: steps, the logging interval (the one host sync), validation,
checkpoints and the control requests (save, save-stop, pause, resume from the console; rewind from
the supervisor's [health] nan rule).

The step anatomy (training.engine.step_clock) laps at each boundary of a step: `other` when a step
begins (whatever ran since the last one: logging, heartbeats, hooks), `data` when its batch is on the
device, `compute` (and `comm`, the all-reduce wait after DDP's last bucket) when backward returns,
`optimizer` after the update; validation and checkpoints are `eval` and `checkpoint`. Every rank
writes its own `timing` event at each logging boundary (and a last one at the end).

Every method that talks to other ranks is called by every rank at the same step; anything written
to the run directory is written by rank 0 only (`self.is_main`)."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from traindeck.heartbeat import Heartbeat
from training import report
from training.engine.amp import AutocastProbe
from training.engine.checkpoint import (
    CheckpointFiles,
    CheckpointWriteError,
    capture_rng_state,
    improved,
    load_checkpoint,
    load_model_weights,
    make_checkpoint,
    remove_stale_temp_files,
    serialize,
)
from training.engine.data import Data, _batch_to
from training.engine.hooks import Hooks
from training.engine.rank_setup import Environment, Notes, Precision
from training.engine.resume import StartPoint
from training.engine.step_clock import make_step_clock, time_comm_hook
from training.rundir import RunPaths, read_run_json
from training.rundir.control import CODE_ACTIONS, ControlChannel
from training.rundir.records import RunRecord

PAUSE_POLL_S = 0.5


class StopRequested(Exception):
    """control.json asked for save-stop; the checkpoint is written, exit 0."""


def _all_gather_rng_states(state: dict, world_size: int, device: torch.device) -> list[dict]:
    """Every rank's RNG state, gathered without pickle: all_gather_object would unpickle whatever
    arrives over the process group's sockets. Each state travels as the bytes of torch.save and is
    read back with weights_only=True (tensors, lists, numbers), as a checkpoint is."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    mine = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).to(device)
    size = torch.tensor([mine.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s.item()) for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: mine.numel()] = mine
    gathered = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return [torch.load(io.BytesIO(g[: int(n.item())].cpu().numpy().tobytes()), weights_only=True)
            for g, n in zip(gathered, sizes, strict=True)]


def _all_reduce_dict(totals: dict[str, torch.Tensor], ddp: bool) -> dict[str, torch.Tensor]:
    """Sum a dict of tensors over ranks with one collective."""
    if not ddp or not totals:
        return totals
    keys = sorted(totals)
    flat = torch.cat([totals[k].reshape(-1).double() for k in keys])
    dist.all_reduce(flat)
    out, offset = {}, 0
    for k in keys:
        n = totals[k].numel()
        out[k] = flat[offset:offset + n].reshape(totals[k].shape).to(totals[k].dtype)
        offset += n
    return out


@dataclass
class Trainer:
    profile: object
    paths: RunPaths
    env: Environment
    heartbeat: Heartbeat
    task: object
    model: nn.Module  # what the loop calls: DDP, DataParallel or raw
    raw: nn.Module  # the model itself (model.module when wrapped)
    dp_ids: list[int]
    precision: Precision
    channels_last: bool
    optimizer: torch.optim.Optimizer
    params: list
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data: Data
    ckpt_files: CheckpointFiles
    start: StartPoint
    autocast_probe: AutocastProbe | None
    hooks: Hooks = field(default_factory=Hooks)
    notes: Notes = field(default_factory=list)
    # Rank 0: FLOPs of one training sample (training.engine.flops), or None and why.
    flops_per_sample: float | None = None
    flops_note: str = ""

    def __post_init__(self) -> None:
        self.T = self.profile.train
        self.device = self.env.device
        self.ddp = self.env.ddp
        self.is_main = self.env.rank == 0
        self.step = self.start.step
        self.epoch = 0
        self.epoch_step = 0
        self.best_value = self.start.best
        self.monitor_name, self.monitor_mode = self.profile.monitor
        self.samples_per_step = self.T.batch_size * self.T.grad_accum * self.env.world_size
        self.control = ControlChannel(self.paths.root) if self.is_main else None
        self.skipped_save = ""  # rank 0: why the newest save was refused (non-finite weights), "" if written
        # Rewinds of this run so far (the [health] nan rule's "rewind"), for rewind_lr_factor ** n:
        # an earlier life of the run (before --resume) counts too. The supervisor keeps the count
        # in run.json and changes it only when it sends a rewind, long after every rank read it here.
        self.rewinds = RunRecord.from_json(read_run_json(self.paths)).health_rewinds
        if self.is_main:
            remove_stale_temp_files(self.paths.checkpoints)
        self.clock = make_step_clock(self.device)
        # DDP's all-reduce told apart from backward: a comm hook marks the clock at each bucket.
        self.comm_timed = time_comm_hook(self.model, self.clock)
        self.samples_per_rank_step = self.samples_per_step // max(1, self.env.world_size)
        self.timing_steps = 0
        self.timing_totals = {"steps": 0, "seconds": 0.0, "samples": 0, "phases": {}}

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        self._announce()
        self.model.train()
        self._reset_interval()
        for epoch in range(self.start.epoch, self.T.epochs + 1):
            self.epoch = epoch
            skip_steps = self.start.epoch_step if self.epoch == self.start.epoch else 0
            t_epoch = time.monotonic()
            batches = self.data.start_epoch(self.epoch, skip_steps * self.T.grad_accum * self.T.batch_size)
            self.epoch_step = skip_steps
            while self.epoch_step < self.data.steps_per_epoch:
                self.train_step(batches)
                if self.step % self.T.log_every == 0:
                    self.end_interval()
                every = self.profile.checkpoint.every_steps
                if every and self.step % every == 0:
                    self.save(["last"], epoch_complete=False)
            self.end_epoch(skip_steps, time.monotonic() - t_epoch)
            self.t_log = time.monotonic()
        self.finish()
        return 0

    def _announce(self) -> None:
        for level, message in self.notes:
            report.message(message, level=level)
        if self.is_main and self.flops_note:
            report.message(f"no FLOPs per sample, so no TFLOP/s or MFU: {self.flops_note}")
        env, T = self.env, self.T
        world_desc = f"{env.world_size} x {self.device.type}" if self.ddp else f"{env.mode} on {self.device}"
        report.status("running", message=f"training {T.task}: {world_desc}, {T.epochs} epochs x "
                                         f"{self.data.steps_per_epoch} steps from step {self.step}",
                      world_size=env.world_size, device=str(self.device), backend=env.backend or None,
                      epochs=T.epochs, steps_per_epoch=self.data.steps_per_epoch, start_step=self.step,
                      batch_size=T.batch_size, amp=self.precision.describe(),
                      grad_scaler=self.precision.scaler.is_enabled(), dp_device_ids=self.dp_ids or None,
                      num_workers=self.data.num_workers, **self._compute_identity())

    def _compute_identity(self) -> dict:
        """What TFLOP/s and MFU are computed from (training.rundir.step_anatomy, traindeck.gpu_peaks):
        the FLOPs of a sample, the GPU model, the dtype the matmuls run in, the GPUs computing."""
        tokens = getattr(self.task, "tokens_per_sample", None)
        if self.device.type != "cuda":
            return {"flops_per_sample": self.flops_per_sample, "tokens_per_sample": tokens, "gpus": 0}
        dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.precision.dtype)
        if dtype is None:
            dtype = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
        return {"flops_per_sample": self.flops_per_sample, "tokens_per_sample": tokens,
                "gpu_model": torch.cuda.get_device_name(self.device),
                "compute_dtype": dtype, "gpus": len(self.dp_ids) or self.env.world_size}

    def _reset_interval(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.comp_sums: dict[str, torch.Tensor] = {}
        self.grad_norm: torch.Tensor | None = None
        self.steps_since_log = 0
        self.t_log = time.monotonic()

    def train_step(self, batches) -> None:
        """One optimizer step over train.grad_accum micro-batches; the loss stays on the device."""
        T, scaler, clock = self.T, self.precision.scaler, self.clock
        clock.lap("other")
        for micro in range(T.grad_accum):
            batch = _batch_to(next(batches), self.device, self.channels_last)
            clock.lap("data")
            last_micro = micro == T.grad_accum - 1
            sync = self.model.no_sync() if self.ddp and not last_micro else contextlib.nullcontext()
            with sync:
                with self.precision.autocast():
                    loss, components = self.task.loss(self.model, batch)
                scaler.scale(loss / T.grad_accum).backward()
            clock.lap_split("compute", "comm")
            self.loss_sum += loss.detach().float() / T.grad_accum
            for k, v in components.items():
                v = v.detach().float() / T.grad_accum
                self.comp_sums[k] = self.comp_sums[k] + v if k in self.comp_sums else v
        if T.grad_clip or (self.step + 1) % T.log_every == 0:
            # The gradient norm of every logging step (the health rules watch it), clipped or not:
            # clip_grad_norm_ returns it, and with max_norm inf it clips nothing. It stays on the
            # device until the interval's one host sync.
            scaler.unscale_(self.optimizer)
            self.grad_norm = nn.utils.clip_grad_norm_(self.params, T.grad_clip or float("inf")).detach().float()
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        clock.lap("optimizer")
        self.step += 1
        self.epoch_step += 1
        self.steps_since_log += 1
        self.timing_steps += 1
        self.heartbeat.beat(self.step, epoch=self.epoch)
        if self.autocast_probe is not None:
            self._report_autocast()
        self.hooks.after_step(self.step, self.raw)

    def _report_autocast(self) -> None:
        """Which autocast dtype every forward really ran in (each DP replica thread, each rank),
        reported after the first step; then the probe's hooks are gone."""
        probe = self.autocast_probe
        probe.close()
        report.message(f"rank {self.env.rank}: autocast in forward: " + ", ".join(
            f"{dev} {'/'.join(dtypes)}" for dev, dtypes in probe.by_device().items()),
            all_ranks=True, autocast=probe.by_device())
        self.autocast_probe = None

    def end_interval(self) -> None:
        """The one host sync of a logging interval: loss sums + the control code, all ranks."""
        code, seq = self.read_control()
        names = sorted(self.comp_sums)
        grad_norm = self.grad_norm if self.grad_norm is not None else torch.zeros((), device=self.device)
        packed = torch.stack([self.loss_sum, *(self.comp_sums[k] for k in names), grad_norm.to(self.device),
                              torch.tensor(float(code), device=self.device)]).double()
        if self.ddp:
            dist.all_reduce(packed)
        values = packed.tolist()
        code = int(round(values[-1]))
        now = time.monotonic()
        scale = 1.0 / (self.steps_since_log * self.env.world_size)
        metrics = {"loss": values[0] * scale}
        metrics.update({k: v * scale for k, v in zip(names, values[1:-2], strict=True)})
        if self.grad_norm is not None and (math.isfinite(values[-2]) or not self.precision.scaler.is_enabled()):
            # (With a grad scaler an inf norm is an overflow the scaler skips, not a sick model.)
            # DDP ranks hold the same all-reduced gradients: the sum over ranks is world_size x the norm.
            metrics["grad_norm"] = values[-2] / self.env.world_size
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        metrics["samples_per_s"] = self.steps_since_log * self.samples_per_step / max(now - self.t_log, 1e-9)
        report.log(self.step, epoch=self.epoch, **metrics)
        self.report_timing()
        self.loss_sum.zero_()
        self.comp_sums = {}
        self.grad_norm = None
        self.steps_since_log = 0
        if code and self.handle_control(code, seq, paused=False):
            self.pause(seq)
        self.t_log = time.monotonic()

    def report_timing(self) -> None:
        """This rank's `timing` event: the seconds of each phase since the last one (a CUDA clock
        reads its events here, after the interval's host sync), and the totals since the start."""
        self.clock.lap("other")
        phases = self.clock.drain()
        seconds = sum(phases.values())
        if not phases or seconds <= 0:
            return
        steps, self.timing_steps = self.timing_steps, 0
        samples = steps * self.samples_per_rank_step
        totals = self.timing_totals
        totals["steps"] += steps
        totals["seconds"] += seconds
        totals["samples"] += samples
        for name, value in phases.items():
            totals["phases"][name] = totals["phases"].get(name, 0.0) + value
        report.get_reporter().emit(
            "timing", all_ranks=True, rank=self.env.rank, step=self.step, steps=steps, seconds=round(seconds, 6),
            phases={k: round(v, 6) for k, v in phases.items()}, samples=samples, clock=self.clock.kind,
            total={"steps": totals["steps"], "seconds": round(totals["seconds"], 6), "samples": totals["samples"],
                   "phases": {k: round(v, 6) for k, v in totals["phases"].items()}})

    def end_epoch(self, skip_steps: int, epoch_seconds: float) -> None:
        """Validate (every train.val_every epochs and the last), report the epoch, checkpoint."""
        T, epoch = self.T, self.epoch
        done_samples = (self.epoch_step - skip_steps) * self.samples_per_step
        val_metrics: dict[str, float] = {}
        if epoch % T.val_every == 0 or epoch == T.epochs:
            val_metrics = self.validate()
            report.log(self.step, epoch=epoch, split="val",
                       **{(k[4:] if k.startswith("val_") else k): v for k, v in val_metrics.items()})
        report.epoch(epoch, epochs=T.epochs, step=self.step, seconds=round(epoch_seconds, 3),
                     samples_per_s=round(done_samples / max(epoch_seconds, 1e-9), 1))
        monitor_value = val_metrics.get(self.monitor_name)
        if val_metrics and monitor_value is None and self.is_main and epoch == self.start.epoch:
            report.message(f"monitor '{self.monitor_name}' is not among the validation metrics "
                           f"({', '.join(val_metrics)}); best.pt is not written", level="warning")
        kinds = []
        every = self.profile.checkpoint.every_epochs
        if (every and epoch % every == 0) or epoch == T.epochs:
            kinds.append("last")
            if self.profile.checkpoint.keep_last:
                kinds.append("epoch")
        if monitor_value is not None and math.isfinite(monitor_value) and \
                improved(monitor_value, self.best_value, self.monitor_mode):
            self.best_value = monitor_value
            kinds.append("best")
        if kinds:
            self.save(kinds, epoch_complete=True, monitor_value=monitor_value)

    def finish(self) -> None:
        self.epoch = min(max(self.epoch, self.start.epoch - 1), self.T.epochs)
        if self.is_main and self.profile.export.onnx:
            # An export of a large model takes minutes: the watchdog must not read it as a hung step.
            self.heartbeat.beat(self.step, epoch=self.epoch, state="exporting", force=True)
            ok, message = _export(self.task, self.raw, self.paths.root / self.profile.export.path,
                                  self.profile.export.opset)
            report.message(message, level="info" if ok else "warning")
        self.hooks.at_finish(self.raw, self.env.rank)
        self.report_timing()  # the steps since the last logging boundary, the last validation and save
        if self.is_main:
            report.message(f"training finished: {self.T.epochs} epochs, step {self.step}")
        self.heartbeat.beat(self.step, epoch=self.epoch, state="finished", force=True)

    # ---- validation ----------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        eval_model = self.model if isinstance(self.model, nn.DataParallel) else self.raw  # DDP forward trains
        self.clock.lap("other")
        self.heartbeat.beat(self.step, epoch=self.epoch, state="validating", force=True)
        self.raw.eval()
        totals: dict[str, torch.Tensor] = {}
        with torch.no_grad(), self.precision.autocast():
            for batch in self.data.val_loader:
                stats = self.task.val_stats(eval_model, _batch_to(batch, self.device, self.channels_last))
                for k, v in stats.items():
                    v = v.detach().double()
                    totals[k] = totals[k] + v if k in totals else v
            if not totals and self.ddp:
                # A val set smaller than the world leaves this rank without a batch, while the others
                # wait in the all-reduce for the same keys: send them as zeros.
                totals = self._zero_val_totals(eval_model)
        self.raw.train()
        self.heartbeat.beat(self.step, epoch=self.epoch, state="training", force=True)
        totals = _all_reduce_dict(totals, self.ddp)
        metrics = {k: float(v) for k, v in self.task.val_metrics(totals).items()}
        self.clock.lap("eval")
        return metrics

    def _zero_val_totals(self, eval_model: nn.Module) -> dict[str, torch.Tensor]:
        """The task's validation statistics as zeros, their keys and shapes from a dry val_stats on
        the first validation sample; {} when the val set is empty on every rank (none all-reduces)."""
        loader = self.data.val_loader
        if len(loader.dataset) == 0:
            return {}
        probe = loader.collate_fn([loader.dataset[0]])
        stats = self.task.val_stats(eval_model, _batch_to(probe, self.device, self.channels_last))
        return {k: torch.zeros_like(v.detach(), dtype=torch.float64) for k, v in stats.items()}

    # ---- checkpoints ---------------------------------------------------------------------------
    def save(self, kinds: list[str], epoch_complete: bool, monitor_value: float | None = None) -> None:
        """Collective: every rank calls it at the same step. kinds: 'last', 'epoch', 'best'."""
        # A long write must not look like a hung step to the watchdog.
        self.clock.lap("other")
        self.heartbeat.beat(self.step, epoch=self.epoch, state="saving", force=True)
        rng_states = [capture_rng_state()]
        if self.ddp:
            rng_states = _all_gather_rng_states(capture_rng_state(), self.env.world_size, self.device)
        failure = self._write_checkpoint(kinds, epoch_complete, monitor_value, rng_states) if self.is_main else ""
        if self.ddp:  # every rank learns whether rank 0's write worked, so all exit together
            flag = torch.tensor([1.0 if failure else 0.0], device=self.device)
            dist.broadcast(flag, src=0)
            if flag.item() and not failure:
                failure = "rank 0 could not write the checkpoint"
        self.clock.lap("checkpoint")
        if failure:
            raise CheckpointWriteError(failure)

    def _write_checkpoint(self, kinds: list[str], epoch_complete: bool, monitor_value: float | None,
                          rng_states: list) -> str:
        """Rank 0: write one checkpoint to each kind's file; returns the failure, "" when written."""
        files, step = self.ckpt_files, self.step
        sick = _not_finite(self.raw, monitor_value)
        if sick:
            # A checkpoint is a place to come back to: never one that holds NaN, and never best.pt.
            kept = ", ".join(f"checkpoints/{t.name}" for t in (files.last, files.best) if t.exists()) or "no checkpoint"
            report.message(f"checkpoint at step {step} not written: {sick}; {kept} kept as the last good one",
                           level="warning", unhealthy=sick, step=step)
            self.skipped_save = sick
            return ""
        self.skipped_save = ""
        targets = [files.last if k == "last" else files.best if k == "best" else files.epoch_file(self.epoch)
                   for k in kinds]
        state = make_checkpoint(model=self.raw, optimizer=self.optimizer, scaler=self.precision.scaler,
                                scheduler=self.scheduler, epoch=self.epoch, epoch_step=self.epoch_step,
                                epoch_complete=epoch_complete, step=step, rng=rng_states,
                                profile_digest=self.profile.digest(), task=self.T.task,
                                world_size=self.env.world_size, monitor=(self.monitor_name, self.monitor_mode),
                                monitor_value=monitor_value, best=self.best_value)
        try:
            written = files.write(serialize(state), targets)
        except CheckpointWriteError as exc:
            report.message(f"checkpoint write failed at step {step}: {exc}. The previous checkpoint "
                           f"files are intact; free disk space and resume the run.", level="error")
            return str(exc)
        for target, nbytes, seconds in written:
            report.checkpoint(target, epoch=self.epoch, step=step, monitor=self.monitor_name,
                              value=monitor_value, best=target == files.best, bytes=nbytes,
                              seconds=round(seconds, 3))
        if "epoch" in kinds:
            files.prune()
        return ""

    # ---- control requests ----------------------------------------------------------------------
    def read_control(self) -> tuple[int, int]:
        """Rank 0's pending control code and its seq; (0, 0) when none (and on every other rank)."""
        cmd = self.control.poll() if self.control is not None else None
        return (cmd.code, cmd.seq) if cmd is not None else (0, 0)

    def handle_control(self, code: int, seq: int, paused: bool) -> bool:
        """Act on a control code all ranks agreed on; returns whether the run is now paused."""
        action, step = CODE_ACTIONS.get(code), self.step
        if action in ("save", "save-stop"):
            self.save(["last"], epoch_complete=False)
            if action == "save":
                report.message(f"saved checkpoints/last.pt at step {step} on request", control=action, seq=seq)
                return paused
            if self.skipped_save:
                report.message(f"stopping on request at step {step} without saving it ({self.skipped_save})",
                               control=action, seq=seq)
                report.status("stopped", message=f"stopped on request at step {step}; the last good checkpoint "
                                                 f"is kept", step=step, epoch=self.epoch)
                raise StopRequested()
            report.message(f"saved step {step}; stopping on request", control=action, seq=seq)
            report.status("stopped", message=f"stopped on request after saving step {step}", step=step,
                          epoch=self.epoch)
            raise StopRequested()
        if action == "rewind":
            self.rewind(seq)
            return paused
        if action == "pause":
            report.message(f"{'already ' if paused else ''}paused at step {step}", control=action, seq=seq)
            return True
        if action == "resume":
            report.message(f"resumed at step {step}" if paused else f"not paused (step {step})",
                           control=action, seq=seq)
            return False
        return paused

    def rewind(self, seq: int) -> None:
        """Collective: the [health] nan rule asked to go back to checkpoints/last.pt (never written with
        non-finite weights). The weights, optimizer, schedule and scaler come back from it and the step
        counter continues from its step; the data stays where it is, so the batches since the
        checkpoint are skipped, not replayed. The learning rate is scaled by
        health.rewind_lr_factor once more per rewind. The rewind is a `log` event with
        control="rewind", from_step and to_step: viewers drop the superseded points after to_step."""
        from_step, last = self.step, self.ckpt_files.last
        if not last.exists():
            if self.is_main:
                report.message(f"cannot rewind at step {from_step}: there is no checkpoints/last.pt yet; stopping "
                               f"without saving the non-finite weights", level="error", control="rewind", seq=seq)
                report.status("stopped", message=f"stopped at step {from_step}: nothing to rewind to",
                              step=from_step, epoch=self.epoch)
            raise StopRequested()
        ckpt = load_checkpoint(last, map_location="cpu")
        load_model_weights(self.raw, ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") is not None and self.precision.scaler.is_enabled():
            self.precision.scaler.load_state_dict(ckpt["scaler"])
        self.optimizer.zero_grad(set_to_none=True)
        self.rewinds += 1
        factor = float(getattr(self.profile.health, "rewind_lr_factor", 1.0))
        if factor != 1.0:
            self._scale_lr(factor ** self.rewinds)
        self.step = int(ckpt["step"])
        self._reset_interval()
        self.heartbeat.beat(self.step, epoch=self.epoch, state="training", force=True)
        if self.is_main:
            lr = self.scheduler.get_last_lr()[0]
            report.message(f"rewound from step {from_step} to checkpoints/last.pt at step {self.step} (rewind "
                           f"{self.rewinds}); the batches since it are skipped, lr {lr:.3g}", level="warning",
                           control="rewind", seq=seq, from_step=from_step, to_step=self.step, rewinds=self.rewinds,
                           lr=lr)

    def _scale_lr(self, total: float) -> None:
        """Set the learning rate to `total` x the schedule's (initial_lr is the profile's peak): the
        checkpoint's scale, whatever earlier rewinds left in it, is replaced, not compounded."""
        sched = self.scheduler
        for i, group in enumerate(self.optimizer.param_groups):
            initial = group.get("initial_lr", sched.base_lrs[i])
            ratio = initial * total / sched.base_lrs[i] if sched.base_lrs[i] else 1.0
            sched.base_lrs[i] = initial * total
            group["lr"] *= ratio
        sched._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def pause(self, seq: int) -> None:
        """All ranks wait here; in DDP a cheap all-reduce every PAUSE_POLL_S keeps them in step."""
        paused = True
        self.clock.lap("other")
        while paused:
            self.heartbeat.beat(self.step, epoch=self.epoch, state="paused")
            time.sleep(PAUSE_POLL_S)
            code, seq = self.read_control()
            if self.ddp:
                t = torch.tensor([float(code)], device=self.device)
                dist.all_reduce(t)
                code = int(round(t.item()))
            if code:
                paused = self.handle_control(code, seq, paused=True)
        self.clock.skip()  # a pause is no part of any step
        self.heartbeat.beat(self.step, epoch=self.epoch, state="training", force=True)


def _not_finite(raw: nn.Module, monitor_value: float | None) -> str:
    """Why a checkpoint of these weights must not be written ("" when it may)."""
    if monitor_value is not None and not math.isfinite(monitor_value):
        return f"the monitored value is {monitor_value}"
    with torch.no_grad():
        bad = [name for name, p in raw.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        return f"{len(bad)} weight tensor(s) are not finite ({bad[0]}{', ...' if len(bad) > 1 else ''})"
    return ""


def _export(task, raw: nn.Module, path, opset: int) -> tuple[bool, str]:
    from training.engine.export import export_onnx

    try:
        example = task.example_input()
    except Exception as exc:
        return False, f"ONNX export skipped: the task gave no example input ({exc})"
    return export_onnx(raw, example, path, opset=opset)
