"""The built-in workloads: every task in the registry learns, validates additively, exports.

Each task runs with its registry `tiny` options on one CPU thread, so the whole file stays
well under a minute on a shared two-core box; ONNX export (seconds per model) is marked slow.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch.utils.data import DataLoader

from tests.support.locations import ROOT
from training.tasks import TASKS, load_task_module

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TASK_NAMES = sorted(TASKS)
STEPS = 60
BATCH = 32
LR = 1e-2
# Mean of the last 10 losses must be below this fraction of the mean of the first 5. Over data
# seeds 0-2 the tasks end between 0.01x (video) and 0.34x (tiny) of where they start; 0.5
# keeps a margin for other seeds and thread counts and still fails a model that only drifts.
FALL_RATIO = 0.5


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_options(name: str, **overrides) -> dict:
    return {**TASKS[name].options, **TASKS[name].tiny, **overrides}


def build(name: str, seed: int = 0, **overrides):
    return load_task_module(name).build(tiny_options(name, **overrides), seed)


def inputs(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch[:-1]


def full_batch(dataset) -> tuple[torch.Tensor, ...]:
    return next(iter(DataLoader(dataset, batch_size=len(dataset))))


def train(task, steps: int = STEPS) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(0)
    model = task.model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    train_set, _ = task.datasets()
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(epoch))
        for batch in loader:
            loss, components = task.loss(model, batch)
            for key, value in components.items():
                assert key.startswith("loss/") and value.dim() == 0 and not value.requires_grad
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
        epoch += 1
    return model, losses


def validate(task, model) -> dict[str, float]:
    _, val_set = task.datasets()
    totals: dict[str, torch.Tensor] = {}
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(val_set, batch_size=BATCH):
            for key, value in task.val_stats(model, batch).items():
                totals[key] = totals[key] + value if key in totals else value
    return task.val_metrics(totals)


# -- every task -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASK_NAMES)
def test_training_loss_falls_and_validation_is_finite(name):
    task = build(name)
    assert task.name == name
    model, losses = train(task)
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert all(math.isfinite(x) for x in losses)
    assert last < FALL_RATIO * first, f"{name}: loss {first:.4f} -> {last:.4f}"

    metrics = validate(task, model)
    assert {"val_loss", TASKS[name].monitor} <= metrics.keys()
    for key, value in metrics.items():
        assert key.startswith("val_") and isinstance(value, float) and math.isfinite(value), (key, value)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_val_stats_are_additive(name):
    task = build(name)
    torch.manual_seed(0)
    model = task.model().eval()
    batch = full_batch(task.datasets()[1])
    half = batch[0].shape[0] // 2
    assert half >= 1
    with torch.no_grad():
        whole = task.val_stats(model, batch)
        first = task.val_stats(model, tuple(t[:half] for t in batch))
        second = task.val_stats(model, tuple(t[half:] for t in batch))
    assert whole.keys() == first.keys() == second.keys()
    for key in whole:
        assert isinstance(whole[key], torch.Tensor)
        torch.testing.assert_close((first[key] + second[key]).double(), whole[key].double(),
                                   rtol=1e-5, atol=1e-4, msg=f"{name}: {key} is not additive")
    assert task.val_metrics(whole)["val_loss"] == pytest.approx(
        task.val_metrics({k: first[k] + second[k] for k in whole})["val_loss"], rel=1e-5)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_example_input_runs_through_the_model(name):
    task = build(name)
    model = task.model().eval()
    example = task.example_input(batch_size=3)
    assert isinstance(example, tuple) and all(t.shape[0] == 3 for t in example)
    train_item = task.datasets()[0][0]
    # the example looks like a batch of real inputs
    assert [t.shape[1:] for t in example] == [t.shape for t in inputs(train_item)]
    with torch.no_grad():
        out = model(*example)
    assert out.shape[0] == 3 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_datasets_depend_on_the_seed_only(name):
    a_train, a_val = build(name, seed=0).datasets()
    b_train, b_val = build(name, seed=0).datasets()
    c_train, _ = build(name, seed=1).datasets()
    assert len(a_train) == len(b_train) > len(a_val) == len(b_val) > 0
    for i in (0, len(a_train) - 1):
        assert all(torch.equal(x, y) for x, y in zip(a_train[i], b_train[i], strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a_val[0], b_val[0], strict=True))
    assert not torch.equal(a_train[0][0], c_train[0][0])
    # validation items are not training items
    assert not torch.equal(a_train[0][0], a_val[0][0])
    with pytest.raises(IndexError):
        a_train[len(a_train)]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_default_options_build_a_sensible_model(name):
    task = load_task_module(name).build(dict(TASKS[name].options), 0)
    params = sum(p.numel() for p in task.model().parameters())
    assert 1_000 < params < 100_000_000, params
    assert isinstance(task.uses_conv, bool)


def profile_tasks() -> list[tuple[str, str, dict]]:
    found = []
    for path in sorted((ROOT / "profiles").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        name = data.get("train", {}).get("task")
        if name in TASKS:
            found.append((path.stem, name, {**TASKS[name].options, **data.get("task", {})}))
    return found


@pytest.mark.parametrize(("profile", "name", "options"), profile_tasks(), ids=[p for p, _, _ in profile_tasks()])
def test_full_size_profiles_generate_items_lazily(profile, name, options):
    """200000 graphs or 60000 clips of 16x112x112 must not be materialized up front."""
    task = load_task_module(name).build(options, 0)
    t0 = time.perf_counter()
    train_set, val_set = task.datasets()
    assert time.perf_counter() - t0 < 5.0
    last = train_set[len(train_set) - 1]
    again = load_task_module(name).build(options, 0).datasets()[0][len(train_set) - 1]
    assert all(torch.equal(x, y) for x, y in zip(last, again, strict=True))
    assert [t.shape for t in val_set[0]] == [t.shape for t in last]


# -- task specifics ---------------------------------------------------------------------------


def test_gnn_reports_the_three_loss_components():
    task = build("gnn-coloring")
    _, components = task.loss(task.model(), full_batch(task.datasets()[1]))
    assert set(components) == {"loss/conflict", "loss/chromatic", "loss/entropy"}
    assert 0.0 <= float(components["loss/conflict"]) <= 1.0


def test_gnn_conflict_rate_counts_monochromatic_edges():
    task = build("gnn-coloring")

    class OneColour(torch.nn.Module):
        def forward(self, x, adj):
            return torch.zeros(*x.shape[:2], task.colors).index_fill_(-1, torch.tensor([0]), 5.0)

    metrics = task.val_metrics(task.val_stats(OneColour(), full_batch(task.datasets()[1])))
    assert metrics["val_conflict_rate"] == 1.0 and metrics["val_colors_used"] == 1.0


def test_video_class_weights_are_inverse_frequency():
    task = build("video-action", imbalance=8.0, classes=4)
    freq = task.frequencies
    assert float(freq.max() / freq.min()) == pytest.approx(8.0)
    assert torch.allclose(task.weights * freq, torch.full_like(freq, 1.0 / 4))
    unweighted = build("video-action", class_weights=False)
    assert torch.equal(unweighted.weights, torch.ones(unweighted.classes))


def test_video_macro_f1_from_summed_counts():
    task = build("video-action", classes=3)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    onehot_p, onehot_y = torch.nn.functional.one_hot(preds, 3), torch.nn.functional.one_hot(labels, 3)
    tp = (onehot_p * onehot_y).sum(0)
    totals = {"loss_sum": torch.tensor(1.0), "weight_sum": torch.tensor(1.0), "count": torch.tensor(8.0),
              "correct": tp.sum(), "tp": tp, "fp": onehot_p.sum(0) - tp, "fn": onehot_y.sum(0) - tp}
    # per class: 0 -> p 2/3 r 2/3, 1 -> p 1/2 r 1/2, 2 -> p 2/3 r 2/3
    assert task.val_metrics(totals)["val_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert task.val_metrics(totals)["val_acc"] == pytest.approx(5 / 8)


def test_protein_pearson_matches_corrcoef():
    task = build("protein-rcl")
    torch.manual_seed(0)
    model = task.model().eval()
    batch = full_batch(task.datasets()[1])
    x, mask, target = batch
    with torch.no_grad():
        metrics = task.val_metrics(task.val_stats(model, batch))
        pred = model(x, mask)
    real = mask > 0
    expected = torch.corrcoef(torch.stack([pred[real], target[real]]).double())[0, 1]
    assert metrics["val_pearson"] == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("arch", ["cnn", "unet", "lstm"])
@pytest.mark.parametrize("encoding", ["onehot", "blosum"])
def test_protein_arches_and_encodings(arch, encoding):
    task = build("protein-rcl", arch=arch, encoding=encoding, length=20)
    batch = full_batch(task.datasets()[1])
    loss, _ = task.loss(task.model(), batch)
    loss.backward()
    assert math.isfinite(loss.item())
    # padded residues are zero in the input and the prediction
    x, mask, _ = batch
    assert torch.all(x[mask == 0] == 0)


def test_blosum62_is_the_real_table():
    from training.tasks.protein_rcl import AMINO_ACIDS, BLOSUM62

    table = torch.tensor(BLOSUM62)
    assert table.shape == (20, 20) and torch.equal(table, table.T)
    index = AMINO_ACIDS.index
    assert table[index("W"), index("W")] == 11 and table[index("C"), index("C")] == 9
    assert table[index("I"), index("V")] == 3 and table[index("D"), index("E")] == 2


@pytest.mark.parametrize(("name", "option", "value", "allowed"), [
    ("protein-rcl", "encoding", "word2vec", "onehot, blosum"),
    ("protein-rcl", "arch", "transformer", "cnn, unet, lstm"),
    ("image-classifier", "depth", "resnet152", "tiny, resnet18, resnet50"),
])
def test_unknown_choice_names_the_allowed_values(name, option, value, allowed):
    with pytest.raises(ValueError, match=f"{value}.*{allowed}"):
        build(name, **{option: value})


@pytest.mark.parametrize("name", TASK_NAMES)
def test_defaults_and_tiny_sizes_keep_the_declared_bounds(name):
    spec = TASKS[name]
    assert spec.resolve(spec.tiny) == {**spec.options, **spec.tiny}
    for option in spec.declared:
        assert option.help and option.check(option.default) == option.default


def test_a_task_built_outside_a_profile_checks_its_options_from_the_declaration():
    with pytest.raises(ValueError, match=r"tiny: 'classes' is 1; it must be >= 2"):
        build("tiny", classes=1)
    with pytest.raises(ValueError, match="unknown option 'hiden'. Did you mean 'hidden'"):
        build("tiny", hiden=3)
    with pytest.raises(ValueError, match="'samples' must be an integer, not 1.5"):
        build("tiny", samples=1.5)


def test_image_depths_use_the_right_blocks():
    from training.tasks.image_classifier import BasicBlock, Bottleneck

    def blocks(depth: str, kind: type) -> int:
        model = build("image-classifier", depth=depth, width=4).model()
        return sum(isinstance(m, kind) for m in model.modules())

    assert blocks("tiny", BasicBlock) == 2
    assert blocks("resnet18", BasicBlock) == 8 and blocks("resnet18", Bottleneck) == 0
    assert blocks("resnet50", Bottleneck) == 16 and blocks("resnet50", BasicBlock) == 0
    # torchvision's resnet50 is 25.6M parameters with 1000 classes; 23.5M with 10
    resnet50 = load_task_module("image-classifier").build(
        {**TASKS["image-classifier"].options, "depth": "resnet50", "width": 64}, 0).model()
    assert 20e6 < sum(p.numel() for p in resnet50.parameters()) < 30e6


# -- export -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", TASK_NAMES)
def test_model_exports_to_onnx(name, tmp_path):
    from training.engine.export import export_onnx, missing_dependencies

    if missing_dependencies():
        pytest.skip(f"needs {', '.join(missing_dependencies())}")
    task = build(name)
    ok, message = export_onnx(task.model(), task.example_input(2), tmp_path / "model.onnx")
    assert ok, message
