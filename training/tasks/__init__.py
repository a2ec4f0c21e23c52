"""Registry of the built-in workloads, and the one declaration of each task's options.

The registry is torch-free on purpose: the profile loader validates `[task]` options against
the `Option`s declared here (type, default, bounds or choices, help), and the console lists and
checks profiles without paying for `import torch`. Each task module (imported only by the
worker) builds its model and data from `TaskSpec.resolve(options)` and checks nothing itself:

    base              the contract between the worker and a workload; Option, OptionError
    synthetic         deterministic synthetic data shared by the tasks; SyntheticTask
    gnn_coloring      a message-passing GNN coloring random graphs
    chess_value       a residual CNN regressing a planted evaluation of chess-like positions
    video_action      a 3D CNN recognising planted motion patterns in short clips
    protein_rcl       per-residue regression over amino-acid sequences (CNN, U-Net or LSTM)
    image_classifier  ResNet-style classifiers on images with a planted class pattern
    tiny              a small MLP on a planted linear-plus-noise signal (tests, rehearsals)
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

from training.tasks.base import Option, OptionError

# Choices of the string options (the task modules dispatch on the same tuples).
DEPTHS = ("tiny", "resnet18", "resnet50")
ENCODINGS = ("onehot", "blosum")
ARCHES = ("cnn", "unet", "lstm")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: str
    description: str
    declared: tuple[Option, ...] = ()
    # The option that counts the items generated (the last eighth of them validates).
    items: str = ""
    # "min" or "max" for the task's headline validation metric, used by the default monitor.
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    # Options that shrink the task for rehearsal on a CPU box (merged over the profile's).
    tiny: dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """name -> default, in declaration order."""
        return {o.name: o.default for o in self.declared}

    def option(self, name: str) -> Option | None:
        return next((o for o in self.declared if o.name == name), None)

    def resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        """The defaults with `options` over them, each checked against its declaration;
        ValueError (OptionError) naming the task and the option otherwise."""
        resolved = self.options
        for key, value in options.items():
            declared = self.option(key)
            if declared is None:
                close = difflib.get_close_matches(key, list(resolved), n=1, cutoff=0.6)
                hint = f" Did you mean '{close[0]}'?" if close else f" Known options: {', '.join(resolved)}."
                raise OptionError(f"{self.name}: unknown option '{key}'.{hint}")
            try:
                resolved[key] = declared.check(value)
            except OptionError as exc:
                raise OptionError(f"{self.name}: '{key}' {exc}") from None
        return resolved


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec(
            name="tiny",
            items="samples",
            module="training.tasks.tiny",
            description="small MLP on a planted linear-plus-noise signal; learns in seconds on CPU",
            declared=(
                Option("samples", 4096, "samples generated, 1/8 of them for validation", min=1),
                Option("features", 32, "input features", min=1),
                Option("hidden", 64, "width of the MLP's hidden layers", min=1),
                Option("classes", 4, "classes of the planted signal", min=2),
                Option("noise", 0.3, "noise added to the planted logits (their scale is 1)"),
            ),
            monitor="val_loss",
            tiny={"samples": 512, "hidden": 16},
        ),
        TaskSpec(
            name="gnn-coloring",
            items="graphs",
            module="training.tasks.gnn_coloring",
            description="message-passing GNN for graph coloring (conflict + chromatic + entropy loss)",
            declared=(
                Option("graphs", 2048, "random graphs generated, 1/8 of them for validation", min=2),
                Option("nodes", 24, "most nodes of a graph (the fewest is half of it)", min=2),
                Option("edge_prob", 0.15, "probability of each edge (Erdős–Rényi)", min=0.0, max=1.0),
                Option("colors", 4, "colors the model may use", min=2),
                Option("hidden", 64, "width of the node embeddings", min=1),
                Option("layers", 4, "message-passing layers", min=0),
            ),
            monitor="val_loss",
            tiny={"graphs": 128, "nodes": 12, "hidden": 16, "layers": 2},
        ),
        TaskSpec(
            name="chess-value",
            items="positions",
            module="training.tasks.chess_value",
            description="value CNN over 12x8x8 board planes, regression to a planted evaluation",
            declared=(
                Option("positions", 8192, "positions generated, 1/8 of them for validation", min=2),
                Option("channels", 64, "channels of the residual tower", min=1),
                Option("blocks", 4, "residual blocks", min=0),
            ),
            monitor="val_loss",
            tiny={"positions": 512, "channels": 8, "blocks": 1},
        ),
        TaskSpec(
            name="video-action",
            items="clips",
            module="training.tasks.video_action",
            description="3D CNN action detection on short synthetic clips, imbalanced classes, F1",
            declared=(
                Option("clips", 1024, "clips generated, 1/8 of them for validation", min=2),
                Option("frames", 8, "frames of a clip", min=2),
                Option("size", 32, "side of a frame in pixels", min=4),
                Option("classes", 5, "motion directions to tell apart", min=2),
                Option("width", 32, "channels of the first 3D conv", min=1),
                Option("imbalance", 4.0, "most frequent class / least frequent", min=1.0),
                Option("class_weights", True, "weigh the loss by inverse class frequency"),
            ),
            monitor="val_f1",
            monitor_mode="max",
            tiny={"clips": 96, "frames": 4, "size": 16, "width": 8},
        ),
        TaskSpec(
            name="protein-rcl",
            items="sequences",
            module="training.tasks.protein_rcl",
            description="per-residue regression over one-hot/BLOSUM encodings with a CNN, U-Net or LSTM",
            declared=(
                Option("sequences", 2048, "sequences generated, 1/8 of them for validation", min=2),
                Option("length", 128, "longest sequence (the shortest is half of it)", min=8),
                Option("encoding", "blosum", "residue encoding", choices=ENCODINGS),
                Option("arch", "unet", "the model", choices=ARCHES),
                Option("width", 64, "channels of the model", min=1),
            ),
            monitor="val_loss",
            tiny={"sequences": 128, "length": 32, "width": 8},
        ),
        TaskSpec(
            name="image-classifier",
            items="images",
            module="training.tasks.image_classifier",
            description="ResNet-style classifier; depth 'tiny' to 'resnet50' on planted-pattern images",
            declared=(
                Option("images", 4096, "images generated, 1/8 of them for validation", min=2),
                Option("size", 32, "side of an image in pixels", min=8),
                Option("classes", 10, "classes (each its own grating and colour)", min=2),
                Option("depth", "resnet18", "the ResNet", choices=DEPTHS),
                Option("width", 64, "channels of the first stage", min=1),
            ),
            monitor="val_acc",
            monitor_mode="max",
            tiny={"images": 256, "size": 16, "depth": "tiny", "width": 8},
        ),
    ]
}


def load_task_module(name: str):
    """Import the module implementing task `name` (imports torch)."""
    return importlib.import_module(TASKS[name].module)
