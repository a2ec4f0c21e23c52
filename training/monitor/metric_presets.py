"""`[metrics] preset = "..."`: what common frameworks print, turned into metric points without a regex.

    hf-trainer  the Trainer's log dicts: {'loss': 3.9, 'grad_norm': 0.7, 'learning_rate': 0.001,
                'epoch': 0.33} (values quoted as strings in transformers 5) -> train (learning_rate as
                lr); {'eval_loss': ...} -> val; the final train_runtime summary gives the run's
                throughput only (train_samples_per_second, train_steps_per_second -> samples_per_s,
                steps_per_s at the last step), not a loss point
    lightning   the progress bar: tqdm's "Epoch 0:  25%|..| 2/8 [.., 3.2it/s, train_loss=6.33, val_loss=1.2]"
                (its rate as steps_per_s on the train point)
                or rich's "Epoch 1/1 ━━ 8/8 .. train_loss: 0.337" (+ "val_loss: 0.271" below it)
    keras       "Epoch 3/10" then "6/6 ━━ 0s 4ms/step - loss: 4.47 - mae: 1.70 - val_loss: 4.20"
    tqdm        any tqdm bar's postfix: "..| 20/20 [00:00<00:00, 2950.41it/s, loss=0.00267, lr=0.05]"

A value named val_X goes to the val split as X; Lightning's train_X is X (so `loss` is the loss
everywhere). Bars redraw the same numbers many times: a point is made only when the numbers
change. Each preset is a small state machine fed one line at a time (after training.monitor.log_metrics
has split \\r redraws into lines and removed ANSI codes); a step it cannot read from the line is
None and the parser gives it the next step number. Epochs are counted from 1, as in traindeck's
own worker (Lightning prints them from 0, the Trainer as a fraction: 0.33 is epoch 1); a plain
tqdm bar's epoch is the number after "epoch" in its description, as the script printed it.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field


@dataclass
class Point:
    split: str
    values: dict[str, float]
    step: int | None = None
    epoch: int | None = None
    epochs: int | None = None


@dataclass
class _Changes:
    """Remembers the last numbers per split, so a redraw of the same bar makes no new point."""

    last: dict[str, dict[str, float]] = field(default_factory=dict)

    def new(self, split: str, values: dict[str, float]) -> bool:
        if not values or self.last.get(split) == values:
            return False
        self.last[split] = values
        return True


def _number(text: str) -> float | None:
    try:
        value = float(str(text).strip().rstrip("%"))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _split_values(pairs: dict[str, float], strip_train: bool = False) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, value in pairs.items():
        split = "train"
        if name.startswith("val_") and len(name) > 4:
            split, name = "val", name[4:]
        elif strip_train and name.startswith("train_") and len(name) > 6:
            name = name[6:]
        out.setdefault(split, {})[name] = value
    return out


class HfTrainer:
    _DICT = re.compile(r"\{'[^{}]*\}")
    _EVAL_NOISE = ("runtime", "samples_per_second", "steps_per_second")

    def __init__(self) -> None:
        self.last_train_step: int | None = None

    def feed(self, line: str, last_step: int | None) -> list[Point]:
        m = self._DICT.search(line)
        if m is None:
            return []
        try:
            logged = ast.literal_eval(m.group(0))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return []
        if not isinstance(logged, dict):
            return []
        numbers = {str(k): v for k, v in ((k, _number(v)) for k, v in logged.items()) if v is not None}
        if "train_runtime" in logged:
            # The end-of-training summary repeats averages, not a point on the curve: only its throughput.
            rates = {name: numbers[key] for key, name in (("train_samples_per_second", "samples_per_s"),
                                                          ("train_steps_per_second", "steps_per_s")) if key in numbers}
            return [Point("train", rates, step=last_step)] if rates else []
        epoch_fraction = numbers.pop("epoch", None)
        epoch = math.ceil(epoch_fraction) if epoch_fraction is not None else None
        if any(k.startswith("eval_") for k in numbers):
            values = {k[5:]: v for k, v in numbers.items() if k.startswith("eval_") and k[5:] not in self._EVAL_NOISE}
            # The dict carries no step: place the evaluation at the train point logged before it.
            return [Point("val", values, step=last_step, epoch=epoch)] if values else []
        if "learning_rate" in numbers:
            numbers["lr"] = numbers.pop("learning_rate")
        return [Point("train", numbers, epoch=epoch)] if numbers else []


# tqdm's bar: "DESC: PCT%|BAR| N/TOTAL [ELAPSED<REMAINING, RATE, k=v, k=v]" (TOTAL may be "?").
_TQDM = re.compile(r"^(?P<desc>.*?):?\s*(?:\d+%)?\|.*\|\s*(?P<n>\d+)/(?P<total>\d+|\?)\s*\[(?P<inside>[^\]]*)\]")
_PAIR = re.compile(r"^\s*(?P<name>[A-Za-z_][\w/.-]*)=(?P<value>\S+)\s*$")


def _tqdm_rate(inside: str) -> float | None:
    """The bar's rate as iterations per second ("83.08it/s", or "2.50s/it" for slow ones)."""
    parts = inside.split(",")
    rate = parts[1].strip() if len(parts) > 1 else ""
    if rate.endswith("it/s"):
        return _number(rate[:-4])
    if rate.endswith("s/it"):
        seconds = _number(rate[:-4])
        return 1.0 / seconds if seconds else None
    return None


def _tqdm_postfix(inside: str) -> dict[str, float]:
    pairs = {}
    for part in inside.split(",")[2:]:  # after "elapsed<remaining" and the rate
        m = _PAIR.match(part)
        if m is not None and m.group("name") != "v_num":  # Lightning's logger version, not a metric
            value = _number(m.group("value"))
            if value is not None:
                pairs[m.group("name")] = value
    return pairs


class Tqdm:
    """The postfix of any tqdm bar; its counter is not trusted for the step (a bar refreshed by
    set_postfix still shows the count of its last refresh), so every change is the next step."""

    _EPOCH = re.compile(r"\bepoch\s*(\d+)", re.I)

    def __init__(self) -> None:
        self.changes = _Changes()

    def feed(self, line: str, last_step: int | None) -> list[Point]:
        m = _TQDM.search(line)
        if m is None:
            return []
        epoch_m = self._EPOCH.search(m.group("desc"))
        epoch = int(epoch_m.group(1)) if epoch_m else None
        return [Point(split, values, epoch=epoch)
                for split, values in _split_values(_tqdm_postfix(m.group("inside"))).items()
                if self.changes.new(split, values)]


def _epoch_shown(epoch: int, batch: str) -> int:
    """The epoch (from 1) of the numbers on Lightning's bar: a new epoch's bar at batch 0 still
    shows the last epoch's (its validation, run at that epoch's end)."""
    return epoch if batch == "0" and epoch > 0 else epoch + 1


class Lightning:
    """Lightning's bars: the step is epoch * batches + the batch (Lightning sets the counter itself).

    One drawing of the Rich bar is its bar line and the lines its metrics wrapped onto; its points
    are made when the drawing is complete (the next line that is not one of its metrics: the next
    drawing, which Rich starts with cursor codes, or anything else printed), so a redraw is one
    point per split, not one per wrapped line. `finish()` completes the last one."""

    _TQDM_EPOCH = re.compile(r"^\s*Epoch (?P<epoch>\d+):")
    _RICH = re.compile(r"^\s*Epoch (?P<epoch>\d+)/(?P<last>\d+)\s.*?\s(?P<n>\d+)/(?P<total>\d+)\s")
    _RICH_PAIR = re.compile(r"(?P<name>[A-Za-z_][\w/.-]*): (?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
    # Rich wraps the metrics onto lines of their own under the bar: "      val_loss: 0.271"; what
    # the script prints as the bar stops can follow the last of them on the same line.
    _RICH_MORE = re.compile(r"^\s+(?:[A-Za-z_][\w/.-]*: [-+]?[\d.]+(?:[eE][-+]?\d+)?(?:\s+|$))+")

    def __init__(self) -> None:
        self.changes = _Changes()
        # The Rich drawing being read: (step, epoch, epochs) and the metrics seen on its lines so far.
        self.drawing: tuple[tuple[int, int, int | None], dict[str, float]] | None = None

    def feed(self, line: str, last_step: int | None) -> list[Point]:
        m = self._TQDM_EPOCH.match(line)
        bar = _TQDM.search(line) if m else None
        if m and bar:
            done = self.finish()
            epoch = int(m.group("epoch"))
            step = None
            if bar.group("total") != "?":
                step = epoch * int(bar.group("total")) + int(bar.group("n"))
            return done + self._points(_tqdm_postfix(bar.group("inside")), step,
                                       _epoch_shown(epoch, bar.group("n")), None, _tqdm_rate(bar.group("inside")))
        m = self._RICH.match(line)
        if m:
            done = self.finish()
            epoch = int(m.group("epoch"))
            step = epoch * int(m.group("total")) + int(m.group("n"))
            place = (step, _epoch_shown(epoch, m.group("n")), int(m.group("last")) + 1)
            self.drawing = (place, self._rich_pairs(line[m.end():]))
            return done
        more = self._RICH_MORE.match(line) if self.drawing is not None else None
        if more is not None and self.drawing is not None:
            self.drawing[1].update(self._rich_pairs(more.group(0)))
            if more.end() == len(line):
                return []
        return self.finish()

    def finish(self) -> list[Point]:
        if self.drawing is None:
            return []
        place, pairs = self.drawing
        self.drawing = None
        return self._points(pairs, *place)

    def _rich_pairs(self, text: str) -> dict[str, float]:
        pairs = {}
        for m in self._RICH_PAIR.finditer(text):
            value = _number(m.group("value"))
            if value is not None and m.group("name") != "v_num":
                pairs[m.group("name")] = value
        return pairs

    def _points(self, pairs: dict[str, float], step: int | None, epoch: int, epochs: int | None,
                rate: float | None = None) -> list[Point]:
        """A point per split whose numbers changed (a redraw's new rate alone is no new point); the
        train point carries the bar's rate as steps_per_s."""
        return [Point(split, {**values, "steps_per_s": rate} if split == "train" and rate else values,
                      step=step, epoch=epoch, epochs=epochs)
                for split, values in _split_values(pairs, strip_train=True).items()
                if self.changes.new(split, values)]


class Keras:
    _EPOCH = re.compile(r"^\s*Epoch (?P<epoch>\d+)/(?P<epochs>\d+)\s*$")
    _PROGRESS = re.compile(r"^\s*(?P<n>\d+)/(?P<total>\d+)\b")
    _PAIR = re.compile(r"^\s*(?P<name>[A-Za-z_][\w/.-]*): (?P<value>\S+)\s*$")

    def __init__(self) -> None:
        self.changes = _Changes()
        self.epoch: int | None = None
        self.epochs: int | None = None

    def feed(self, line: str, last_step: int | None) -> list[Point]:
        m = self._EPOCH.match(line)
        if m:
            self.epoch, self.epochs = int(m.group("epoch")), int(m.group("epochs"))
            return []
        m = self._PROGRESS.match(line)
        if m is None or " - " not in line:
            return []
        pairs = {}
        for part in line.split(" - ")[1:]:
            pm = self._PAIR.match(part)
            value = _number(pm.group("value")) if pm else None
            if pm and value is not None:
                pairs[pm.group("name")] = value
        # The running averages of the epoch so far, at the batch they were printed for.
        step = None
        if self.epoch is not None:
            step = (self.epoch - 1) * int(m.group("total")) + int(m.group("n"))
        return [Point(split, values, step=step, epoch=self.epoch, epochs=self.epochs)
                for split, values in _split_values(pairs).items() if self.changes.new(split, values)]


PRESETS = {"hf-trainer": HfTrainer, "lightning": Lightning, "keras": Keras, "tqdm": Tqdm}

# What a framework needs in its environment to print, into a file, what its preset reads: the
# launch adds it unless the user's environment or [launch] env sets the same name. Lightning draws
# its Rich bar (its default wherever rich is installed, and traindeck's textual installs it) only
# once, when fit ends, unless Rich takes its output for a terminal: TTY_COMPATIBLE=1 (rich >= 14)
# makes it redraw at every step as it does on screen, with cursor codes the parser removes. Its
# tqdm bar, the Trainer's log dicts, Keras's progress line and tqdm redraw into a file as they are.
PRESET_ENV: dict[str, dict[str, str]] = {"lightning": {"TTY_COMPATIBLE": "1"}}

# Where each framework saves when the script names no place, as names found under the script's
# working directory (training.monitor.checkpoint_watch.CheckpointScan), beside the generic ones
# every custom script gets (*.pt, *.pth, *.ckpt, *.safetensors, checkpoint-*/): the Trainer's
# output_dir/checkpoint-N/ and Lightning's lightning_logs/version_N/checkpoints/*.ckpt are among
# those; Keras's ModelCheckpoint must be given a path, which ends in .keras or .weights.h5
# (.h5 for the legacy format).
PRESET_CHECKPOINT_NAMES: dict[str, tuple[str, ...]] = {"keras": ("*.keras", "*.weights.h5", "*.h5")}


def preset_names(metrics: dict) -> list[str]:
    """The presets a profile's `[metrics]` table names (one string or a list)."""
    presets = metrics.get("preset") or []
    return [presets] if isinstance(presets, str) else list(presets)


def preset_env(metrics: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in preset_names(metrics):
        env.update(PRESET_ENV.get(name, {}))
    return env
