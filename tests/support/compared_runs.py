"""Finished runs that differ in one or two config keys, for the compare screen's tests.

    paths = compared_runs(runs_dir, [{"lr": 1e-3}, {"lr": 3e-3}])   # one run per entry

Each is a fake run (tests/support/fake_runs.py) of the synthetic profile with the entry's [train]
values, `steps` train metrics (a loss that falls faster with a larger lr), a validation result and
an epoch event per epoch, a best checkpoint and exit.json; fixed times, so the files are the same
every time and a screen over them is stable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.fake_runs import append_events, event, make_run_dir, synthetic_profile_toml, write_exit
from training.rundir import RunPaths

T0 = 1795856400.0  # 2026-11-28: a fixed past, so nothing depends on today
EPOCHS = 4


def compared_runs(runs_dir: Path, configs: list[dict[str, Any]], steps: int = 200) -> list[RunPaths]:
    out = []
    for i, config in enumerate(configs):
        created = T0 + i * 600
        toml = synthetic_profile_toml(gpus=0).replace("[train]\n", "[train]\n" + "".join(
            f"{k} = {v!r}\n" for k, v in config.items()))
        paths = make_run_dir(runs_dir, f"20261128-{10 + i:02d}0000-synthetic", profile_toml=toml,
                             state="finished", created=created, state_t=created + steps)
        speed = float(config.get("lr", 1e-3)) * 1000
        per_epoch = steps // EPOCHS
        events = [event(created + 1, "status", state="running", epochs=EPOCHS, steps_per_epoch=per_epoch)]
        for step in range(1, steps + 1):
            epoch = 1 + (step - 1) // per_epoch
            loss = 2.0 / (1.0 + speed * step / 50) + 0.1
            events.append(event(created + 1 + step, "metric", step=step, epoch=epoch, split="train",
                                values={"loss": round(loss, 5), "samples_per_s": 1000.0 + 100 * i}))
            if step % per_epoch == 0:
                val = round(loss * 1.1, 5)
                events += [event(created + 1 + step, "metric", step=step, epoch=epoch, split="val",
                                 values={"loss": val}),
                           event(created + 1 + step, "epoch", epoch=epoch, epochs=EPOCHS, step=step,
                                 seconds=float(per_epoch), samples_per_s=1000.0 + 100 * i)]
        events.append(event(created + steps + 1, "checkpoint", path="checkpoints/best.pt", epoch=EPOCHS, step=steps,
                            monitor="val_loss", value=val, best=True, bytes=1000, seconds=0.1))
        events.append(event(created + steps + 2, "status", state="finished", message="finished"))
        append_events(paths, events)
        write_exit(paths, returncode=0, state="finished", t=created + steps + 2, seconds=float(steps + 2))
        out.append(paths)
    return out
