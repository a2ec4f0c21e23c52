"""Registry of the built-in workloads.

The registry is torch-free on purpose: the profile loader validates `[task]` options against
these defaults, and the console lists and checks profiles without paying for `import torch`.
Each task module (imported only by the worker) builds its model and data from the resolved
options dict; the defaults here are the one place option names and types are declared.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: str
    description: str
    # name -> default; the default's type is the option's type (int, float, bool, str, list).
    options: dict[str, Any] = field(default_factory=dict)
    # "min" or "max" for the task's headline validation metric, used by the default monitor.
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    # Options that shrink the task for rehearsal on a CPU box (merged over the profile's).
    tiny: dict[str, Any] = field(default_factory=dict)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec(
            name="tiny",
            module="training.tasks.tiny",
            description="small MLP on a planted linear-plus-noise signal; learns in seconds on CPU",
            options={"samples": 4096, "features": 32, "hidden": 64, "classes": 4, "noise": 0.3},
            monitor="val_loss",
            tiny={"samples": 512, "hidden": 16},
        ),
        TaskSpec(
            name="gnn-coloring",
            module="training.tasks.gnn_coloring",
            description="message-passing GNN for graph coloring (conflict + chromatic + entropy loss)",
            options={"graphs": 2048, "nodes": 24, "edge_prob": 0.15, "colors": 4, "hidden": 64, "layers": 4},
            monitor="val_loss",
            tiny={"graphs": 128, "nodes": 12, "hidden": 16, "layers": 2},
        ),
        TaskSpec(
            name="chess-value",
            module="training.tasks.chess_value",
            description="value CNN over 12x8x8 board planes, regression to a planted evaluation",
            options={"positions": 8192, "channels": 64, "blocks": 4},
            monitor="val_loss",
            tiny={"positions": 512, "channels": 8, "blocks": 1},
        ),
        TaskSpec(
            name="video-action",
            module="training.tasks.video_action",
            description="3D CNN action detection on short synthetic clips, imbalanced classes, F1",
            options={
                "clips": 1024,
                "frames": 8,
                "size": 32,
                "classes": 5,
                "width": 32,
                "imbalance": 4.0,
                "class_weights": True,
            },
            monitor="val_f1",
            monitor_mode="max",
            tiny={"clips": 96, "frames": 4, "size": 16, "width": 8},
        ),
        TaskSpec(
            name="protein-rcl",
            module="training.tasks.protein_rcl",
            description="per-residue regression over one-hot/BLOSUM encodings with a CNN, U-Net or LSTM",
            options={
                "sequences": 2048,
                "length": 128,
                "encoding": "blosum",
                "arch": "unet",
                "width": 64,
            },
            monitor="val_loss",
            tiny={"sequences": 128, "length": 32, "width": 8},
        ),
        TaskSpec(
            name="image-classifier",
            module="training.tasks.image_classifier",
            description="ResNet-style classifier; depth 'tiny' to 'resnet50' on planted-pattern images",
            options={"images": 4096, "size": 32, "classes": 10, "depth": "resnet18", "width": 64},
            monitor="val_acc",
            monitor_mode="max",
            tiny={"images": 256, "size": 16, "depth": "tiny", "width": 8},
        ),
    ]
}


def load_task_module(name: str):
    """Import the module implementing task `name` (imports torch)."""
    return importlib.import_module(TASKS[name].module)
