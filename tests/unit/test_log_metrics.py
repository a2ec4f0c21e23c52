"""[metrics] regexes over printed lines: the parser, and the tailer on a real growing file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.locations import DATA, ROOT
from training.monitor.log_metrics import MAX_LINE_BYTES, LogMetricParser, LogTailer, parse_number
from training.rundir.events_file import read_all

README_METRICS = {
    "train": [r"Epoch (?P<epoch>\d+)/(?P<epochs>\d+) - Train Loss: (?P<loss>[\d.]+), Acc: (?P<acc>[\d.]+%)"],
    "val": [r"Val Loss: (?P<loss>[\d.]+)"],
    "checkpoint": [r"Saved best model: (?P<path>\S*?epoch(?P<epoch>\d+)\S*) \(F1: (?P<f1>[\d.]+)\)"],
}
TRAIN_VAL_LINE = "Epoch 1/100 - Train Loss: 0.4521, Acc: 78.23% | Val Loss: 0.5234"
CHECKPOINT_LINE = "Saved best model: best_model_epoch0.pt (F1: 0.6821)"


def test_one_line_gives_train_and_val_points_at_the_same_place():
    events = LogMetricParser(README_METRICS).feed(TRAIN_VAL_LINE)
    assert [(e["kind"], e["split"]) for e in events] == [("metric", "train"), ("metric", "val")]
    train, val = events
    assert train["values"] == {"loss": 0.4521, "acc": 78.23}  # "%" stripped
    assert val["values"] == {"loss": 0.5234}
    assert train["epoch"] == val["epoch"] == 1 and train["step"] == val["step"]
    assert train["epochs"] == 100 and "epochs" not in train["values"]
    assert all(e["v"] == 1 and isinstance(e["t"], float) for e in events)


def test_checkpoint_line_gives_path_value_and_best():
    (event,) = LogMetricParser(README_METRICS).feed(CHECKPOINT_LINE)
    assert event["kind"] == "checkpoint"
    assert event["path"] == "best_model_epoch0.pt"
    assert event["epoch"] == 0
    assert (event["monitor"], event["value"], event["f1"]) == ("f1", 0.6821, 0.6821)
    assert event["best"] is True


def test_checkpoint_without_best_word_is_not_best():
    p = LogMetricParser({"checkpoint": [r"saved (?P<path>\S+\.pt) val_loss=(?P<val_loss>[\d.]+)"]})
    (event,) = p.feed("saved checkpoints/last.pt val_loss=1.25")
    assert event["best"] is False and event["monitor"] == "val_loss" and event["value"] == 1.25


def test_lines_without_step_get_the_next_step_and_explicit_steps_win():
    p = LogMetricParser({"train": [r"(?:step (?P<step>\d+) )?loss (?P<loss>[\d.]+)"]})
    steps = [p.feed(line)[0]["step"] for line in ["loss 1.0", "loss 0.9", "step 100 loss 0.8", "loss 0.7"]]
    assert steps == [1, 2, 100, 101]


def test_epoch_carries_over_to_later_lines_and_val_prefix_is_dropped():
    p = LogMetricParser({"train": [r"epoch (?P<epoch>\d+) loss (?P<loss>[\d.]+)"],
                         "val": [r"val_loss=(?P<val_loss>[\d.]+) val_f1=(?P<val_f1>\S+)"]})
    p.feed("epoch 3 loss 0.5")
    (val,) = p.feed("val_loss=0.61 val_f1=0.7")
    assert val["epoch"] == 3 and val["values"] == {"loss": 0.61, "f1": 0.7}


def test_non_numeric_value_is_skipped_not_fatal_and_components_use_double_underscore():
    p = LogMetricParser({"train": [r"loss (?P<loss>\S+) color (?P<loss__color>\S+) lr (?P<lr>\S+)"]})
    (e,) = p.feed("loss n/a color 0.25 lr 3e-4")
    assert e["values"] == {"loss/color": 0.25, "lr": 3e-4}
    assert p.feed("loss n/a color n/a lr none") == []  # nothing numeric: no event


def test_ansi_colours_and_unmatched_lines():
    p = LogMetricParser({"train": [r"loss (?P<loss>[\d.]+)"]})
    assert p.feed("\x1b[32mloss 0.5\x1b[0m")[0]["values"] == {"loss": 0.5}
    assert p.feed("nothing here") == [] and p.feed("") == []


@pytest.mark.parametrize("text,value", [("78.23%", 78.23), ("1,024", 1024.0), ("-3e-4", -3e-4), (".5", 0.5),
                                        ("nan", None), ("abc", None), (None, None)])
def test_parse_number(text, value):
    got = parse_number(text)
    if text == "nan":
        assert got != got
    else:
        assert got == value


# ---- the tailer ----------------------------------------------------------------------------

def _wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_tailer_follows_a_print_only_script(tmp_path):
    """A script that only prints (the README lines) produces metric and checkpoint events."""
    log = tmp_path / "logs" / "rank-0.log"
    events = tmp_path / "events.jsonl"
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        for epoch in range(1, 4):
            print(f"Epoch {{epoch}}/100 - Train Loss: {{1 / epoch:.4f}}, Acc: {{70 + epoch}}.5% | Val Loss: {{1.1 / epoch:.4f}}", flush=True)
            time.sleep(0.15)
            if epoch == 1:
                print({CHECKPOINT_LINE!r}, flush=True)
        sys.stdout.write("Epoch 4/100 - Train Loss: 0.2000, Acc: 75.0% | Val Loss: 0.3")  # no newline at the end
        sys.stdout.flush()
    """))
    tailer = LogTailer(lambda: log if log.exists() else None, LogMetricParser(README_METRICS), events,
                       poll_s=0.05).start()
    try:
        time.sleep(0.2)  # the log does not exist yet while the tailer starts
        log.parent.mkdir()
        with open(log, "wb") as f:
            proc = subprocess.run([sys.executable, str(script)], stdout=f, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=60)
        assert proc.returncode == 0
        assert _wait_for(lambda: len(read_all(events)) >= 7)
    finally:
        tailer.stop()
    got = read_all(events)
    metrics = [e for e in got if e["kind"] == "metric"]
    checkpoints = [e for e in got if e["kind"] == "checkpoint"]
    assert [(e["split"], e["epoch"]) for e in metrics] == [
        (s, ep) for ep in (1, 2, 3, 4) for s in ("train", "val")]
    assert metrics[0]["values"] == {"loss": 1.0, "acc": 71.5}
    assert metrics[-1]["values"] == {"loss": 0.3}  # the unterminated last line, drained by stop()
    assert checkpoints[0]["path"] == "best_model_epoch0.pt" and checkpoints[0]["best"] is True
    assert tailer.errors == 0


def test_tailer_survives_binary_junk_long_lines_and_partial_lines(tmp_path):
    log = tmp_path / "out.log"
    events = tmp_path / "events.jsonl"
    tailer = LogTailer(lambda: log, LogMetricParser({"train": [r"loss (?P<loss>[\d.]+)"]}), events, poll_s=0.02)
    with open(log, "wb") as f:
        f.write(b"\x00\xff\xfe garbage \x80\x81 loss \xff\n")
        f.write(b"x" * (3 * MAX_LINE_BYTES) + b" loss 9.9\n")  # one endless line: dropped whole
        f.write(b"loss 0.5\n")
        f.write(b"progress 10%\rprogress 20%\rloss 0.4\r")  # \r-redrawn progress bar
        f.write(b"lo")
    tailer.poll_once()
    tailer.poll_once()
    assert [e["values"]["loss"] for e in read_all(events)] == [0.5, 0.4]
    assert tailer.dropped_long_lines == 1
    assert len(tailer._partial) <= MAX_LINE_BYTES
    with open(log, "ab") as f:
        f.write(b"ss 0.3\n")
    tailer.poll_once()
    assert [e["values"]["loss"] for e in read_all(events)] == [0.5, 0.4, 0.3]


def test_tailer_memory_stays_bounded_on_a_line_that_never_ends(tmp_path):
    log = tmp_path / "out.log"
    tailer = LogTailer(lambda: log, LogMetricParser({"train": [r"loss (?P<loss>[\d.]+)"]}), tmp_path / "e.jsonl")
    with open(log, "wb") as f:
        for _ in range(8):
            f.write(b"y" * (1 << 20))
            f.flush()
            tailer.poll_once()
            assert len(tailer._partial) <= MAX_LINE_BYTES
        f.write(b"tail of that line loss 7\nloss 0.1\n")
    tailer.poll_once()
    assert [e["values"]["loss"] for e in read_all(tmp_path / "e.jsonl")] == [0.1]
    assert tailer.dropped_long_lines == 1


def test_tailer_starts_over_when_the_log_is_replaced(tmp_path):
    log = tmp_path / "out.log"
    events = tmp_path / "events.jsonl"
    tailer = LogTailer(lambda: log, LogMetricParser({"train": [r"loss (?P<loss>[\d.]+)"]}), events)
    log.write_bytes(b"loss 1.0\nloss 0.9\n")
    tailer.poll_once()
    log.write_bytes(b"loss 0.5\n")  # truncated and rewritten (a restart)
    tailer.poll_once()
    assert [e["values"]["loss"] for e in read_all(events)] == [1.0, 0.9, 0.5]


def test_tailer_counts_a_bad_find_log_and_keeps_going(tmp_path):
    calls = []

    def find_log() -> Path | None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("not yet")
        return None

    tailer = LogTailer(find_log, LogMetricParser({"train": [r"loss (?P<loss>[\d.]+)"]}), tmp_path / "e.jsonl",
                       poll_s=0.01).start()
    assert _wait_for(lambda: len(calls) >= 3, timeout=5)
    tailer.stop()
    assert tailer.errors == 1 and not (tmp_path / "e.jsonl").exists()


def test_the_documented_metrics_table_parses_the_documented_lines():
    """The README's [metrics] example does what the text says it does."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    text = (ROOT / "README.md").read_text()
    # The regex example (the preset example before it has no `train =`).
    block = next(b.split("```", 1)[0] for b in text.split("```toml\n")[1:] if "[metrics]" in b and "\ntrain =" in b)
    parser = LogMetricParser(tomllib.loads(block)["metrics"])
    train, val = parser.feed(TRAIN_VAL_LINE)
    (ckpt,) = parser.feed(CHECKPOINT_LINE)
    assert (train["values"], val["values"], train["epoch"]) == ({"loss": 0.4521, "acc": 78.23}, {"loss": 0.5234}, 1)
    assert (ckpt["path"], ckpt["epoch"], ckpt["f1"], ckpt["best"]) == ("best_model_epoch0.pt", 0, 0.6821, True)


# ---- presets, on real output of each framework (tests/data/framework_output/README.md) --------

FRAMEWORK_OUTPUT = DATA / "framework_output"


def tail_capture(name: str, metrics: dict, tmp_path: Path) -> list[dict]:
    """The captured rank log through the real LogTailer (which splits \\r redraws into lines)."""
    log = tmp_path / "rank-0.log"
    log.write_bytes((FRAMEWORK_OUTPUT / name).read_bytes())
    events_path = tmp_path / "events.jsonl"
    LogTailer(lambda: log, LogMetricParser(metrics), events_path).stop()  # stop() reads everything there
    return read_all(events_path) if events_path.exists() else []


def points(events: list[dict], split: str) -> list[tuple]:
    return [(e["step"], e.get("epoch"), e["values"]) for e in events if e["kind"] == "metric" and e["split"] == split]


def test_hf_trainer_preset_reads_the_trainers_log_dicts(tmp_path):
    events = tail_capture("hf_trainer.log", {"preset": "hf-trainer"}, tmp_path)
    train, summary = points(events, "train")[:-1], points(events, "train")[-1]
    # logging_steps=2 over 12 steps: 6 dicts, numbers quoted as strings by transformers 5; epoch 0.33 is epoch 1.
    assert [s for s, _, _ in train] == [1, 2, 3, 4, 5, 6] and [e for _, e, _ in train] == [1, 1, 1, 2, 2, 2]
    assert train[0][2] == {"loss": 3.898, "grad_norm": 0.6986, "lr": 0.0009167}
    # Evaluations land on the train point logged just before them; timings are left out; of the
    # end-of-training summary dict (train_runtime, train_loss) only the throughput, at the last step.
    assert summary == (6, 2, {"samples_per_s": 1524.0, "steps_per_s": 190.5})
    assert points(events, "val") == [(3, 1, {"loss": 3.885}), (6, 2, {"loss": 3.881})]
    assert {e["split"] for e in events} == {"train", "val"}


def test_lightning_preset_reads_the_tqdm_bar_at_lightnings_own_step(tmp_path):
    events = tail_capture("lightning_tqdm.log", {"preset": "lightning"}, tmp_path)
    train = points(events, "train")
    # Two epochs of 8 batches, one point per step although the bar redraws each one twice or more.
    assert [s for s, _, _ in train] == list(range(1, 17))
    # The bar's rate rides on the train point (a redraw with only a new rate is no new point).
    assert all(v["steps_per_s"] > 0 for _, _, v in train)
    train = [(s, e, {k: v for k, v in values.items() if k != "steps_per_s"}) for s, e, values in train]
    assert train[0] == (1, 1, {"loss": 4.74}) and train[-1] == (16, 2, {"loss": 0.337})
    assert points(events, "val") == [(8, 1, {"loss": 1.2}), (16, 2, {"loss": 0.271})]


def test_lightning_preset_reads_the_rich_bar_and_its_wrapped_metrics(tmp_path):
    events = tail_capture("lightning_rich.log", {"preset": "lightning"}, tmp_path)
    assert points(events, "train") == [(16, 2, {"loss": 0.337})]
    assert points(events, "val") == [(16, 2, {"loss": 0.271})]
    assert {e.get("epochs") for e in events} == {2}


def test_lightning_preset_reads_the_rich_bar_live_at_every_step(tmp_path):
    """Rich redrawing as on a terminal (TTY_COMPATIBLE=1, which the lightning preset's launch sets):
    cursor codes between drawings, each drawing's metrics wrapped one per line under its bar."""
    events = tail_capture("lightning_rich_live.log", {"preset": "lightning"}, tmp_path)
    train = points(events, "train")
    assert [s for s, _, _ in train] == list(range(1, 17)) and [e for _, e, _ in train] == [1] * 8 + [2] * 8
    assert train[0] == (1, 1, {"loss": 4.74}) and train[-1] == (16, 2, {"loss": 0.337})
    # One point per evaluation, all its metrics together, however often the bar redraws them; the
    # first is Lightning's sanity check, which the bar shows too; an epoch's evaluation belongs to it
    # although the next epoch's bar (at batch 0) is the first to show it.
    assert points(events, "val") == [(0, 1, {"loss": 5.565, "mae": 1.897}), (8, 1, {"loss": 1.197, "mae": 0.88}),
                                     (16, 2, {"loss": 0.271, "mae": 0.42})]


def test_keras_preset_reads_epochs_and_the_progress_lines(tmp_path):
    events = tail_capture("keras.log", {"preset": "keras"}, tmp_path)
    assert points(events, "val") == [(6, 1, {"loss": 4.2024, "mae": 1.6954}), (12, 2, {"loss": 4.1098, "mae": 1.6752}),
                                     (18, 3, {"loss": 4.0167, "mae": 1.6547})]
    train = points(events, "train")
    assert (6, 1, {"loss": 4.4696, "mae": 1.6997}) in train and train[-1] == (18, 3, {"loss": 4.2467, "mae": 1.6535})
    assert {e.get("epochs") for e in events} == {3}


def test_tqdm_preset_reads_the_postfix_once_per_change(tmp_path):
    events = tail_capture("tqdm.log", {"preset": "tqdm"}, tmp_path)
    train = points(events, "train")
    assert len(train) == 40 and [s for s, _, _ in train] == list(range(1, 41))
    assert train[0] == (1, 0, {"loss": 3.7, "lr": 0.05}) and train[-1] == (40, 1, {"loss": 0.00267, "lr": 0.05})


def test_presets_combine_with_regexes_on_the_same_output(tmp_path):
    metrics = {"preset": ["hf-trainer"], "val": [r"'eval_runtime': '(?P<runtime>[\d.]+)'"]}
    events = tail_capture("hf_trainer.log", metrics, tmp_path)
    runtimes = [e["values"] for e in events if e["split"] == "val" and "runtime" in e["values"]]
    assert len(points(events, "train")) == 7 and runtimes == [{"runtime": 0.004}, {"runtime": 0.0037}]
