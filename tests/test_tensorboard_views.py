"""What a search shows in TensorBoard (darts_tf.summaries, darts_tf.search) and its early stop, read back from the
event files of a toy search whose supernet has CNN-shaped alphas (two cells of 2 nodes, 4 ops) and searches in
seconds; and the select stage's HParams sessions."""

import glob
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from darts_tf import checkpoint
from darts_tf import genotypes as gt
from darts_tf import visualize
from darts_tf.bilevel import BilevelSearchModel
from darts_tf.run_files import RunFiles
from darts_tf.schedules import EpochCosineDecay
from darts_tf.search import run_bilevel_search

STEPS, BATCH, EPOCHS = 4, 16, 3
PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")


class ToyCellSearch(BilevelSearchModel):
    """Dense -> every edge of both cells mixes (0, relu, identity, tanh) of the hidden layer by softmax(alpha) -> Dense:
    alpha_normal and alpha_reduce [5, 4] as a CNN search with 2 nodes and 4 primitives."""

    primitives = PRIMITIVES

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, name="hidden")
        self.head = keras.layers.Dense(3, name="head")
        init = keras.initializers.RandomNormal(stddev=1e-3, seed=0)
        self.alpha_normal = self.add_weight(shape=(5, 4), initializer=init, name="alpha_normal")
        self.alpha_reduce = self.add_weight(shape=(5, 4), initializer=init, name="alpha_reduce")

    @property
    def arch_variables(self):
        return [self.alpha_normal, self.alpha_reduce]

    def call(self, x, training=False):
        h = self.hidden(x)
        candidates = ops.stack([ops.zeros_like(h), ops.relu(h), h, ops.tanh(h)])  # [ops, batch, units]
        mixed = sum(ops.einsum("eo,obu->bu", ops.softmax(a, axis=-1), candidates) for a in self.arch_variables)
        return self.head(mixed)

    def alphas_numpy(self):
        return {"alpha_normal": np.asarray(self.alpha_normal.numpy()),
                "alpha_reduce": np.asarray(self.alpha_reduce.numpy())}

    def genotype(self):
        return gt.derive_from_alphas(self.alphas_numpy(), primitives=PRIMITIVES)


def schedule(epochs=EPOCHS):
    return EpochCosineDecay(0.05, epochs, STEPS, 0.001)


def toy_model(epochs=EPOCHS):
    checkpoint.start_run(0, deterministic=True)
    model = ToyCellSearch(name="toy_cells")
    model(np.zeros((1, 4), np.float32))
    model.compile(optimizer=keras.optimizers.SGD(schedule(epochs)), arch_optimizer=keras.optimizers.Adam(0.05))
    return model


def toy_dataset(initial_epoch, epochs=EPOCHS):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    pairs = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    return tf.data.Dataset.zip({"train": pairs, "validation": pairs}).repeat(epochs - initial_epoch)


def search(out, flags=None, epochs=EPOCHS, resume=False, callbacks=(), model=None):
    return run_bilevel_search(model or toy_model(epochs), lambda e: toy_dataset(e, epochs), STEPS, epochs, str(out),
                              {"seed": 0, "arch_mode": "first_order", **(flags or {})}, resume, callbacks, verbose=0)


def read_events(logdir):
    """{run: {tag: [(step, value)]}} of every event file under `logdir` (run = its folder relative to `logdir`);
    value: a float for a scalar, the PNG bytes for an image, the text for a text summary, else the summary value."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)):
        run = os.path.relpath(os.path.dirname(path), logdir)
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                plugin = v.metadata.plugin_data.plugin_name
                value = v
                if v.HasField("tensor") and plugin in ("scalars", ""):
                    value = float(tf.make_ndarray(v.tensor))
                elif plugin == "images":
                    value = tf.make_ndarray(v.tensor)[2]
                elif plugin == "text":
                    value = tf.make_ndarray(v.tensor).item().decode()
                runs.setdefault(run, {}).setdefault(v.tag, []).append((event.step, value))
    return runs


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("views") / "search"
    result = search(out, {"hessian_eigenvalue": True, "hessian_iterations": 5})
    return out, result, read_events(str(out / "tensorboard"))


def test_the_search_logs_labelled_architecture_views(toy_run):
    out, result, runs = toy_run
    tags = set(runs["architecture"])
    assert {"softmax_alpha_normal", "softmax_alpha_reduce", "alpha_normal", "alpha_reduce", "genotype"} <= tags
    assert {f"op_weights/normal/n2<-c_{{k-1}}/{op}" for op in PRIMITIVES} <= tags
    assert {"op_weights/reduce/n3<-n2/skip_connect", "edge_entropy/normal/n3<-n2",
            "edge_max_weight/reduce/n2<-c_{k-2}"} <= tags
    health = {f"health/{k}" for k in ("skip_connects/normal", "skip_connects/reduce", "entropy/normal",
                                      "entropy/reduce", "max_weight/normal", "max_weight/reduce",
                                      "genotype_changes/normal", "genotype_changes", "hessian_eigenvalue")}
    assert health <= tags
    # the same values in metrics.json's history, per epoch
    with open(RunFiles(str(out)).metrics) as f:
        history = json.load(f)["history"]
    for record in history:
        assert {k[len("health/"):] for k in health} <= set(record), record
        assert np.isfinite(record["hessian_eigenvalue"]) and record["hessian_seconds"] > 0
    step, value = runs["architecture"]["op_weights/normal/n2<-c_{k-1}/sep_conv_3x3"][-1]
    weights = np.exp(result["alphas"]["alpha_normal"][1]) / np.exp(result["alphas"]["alpha_normal"][1]).sum()
    assert step == EPOCHS - 1 and value == pytest.approx(weights[3], rel=1e-5)
    assert runs["architecture"]["health/entropy/normal"][-1][1] == pytest.approx(history[-1]["entropy/normal"])


def test_one_learning_rate_tag_holds_each_epochs_rate(toy_run):
    _, _, runs = toy_run
    rate_tags = [t for run in runs.values() for t in run if "lr" in t or "learning_rate" in t]
    assert rate_tags == ["epoch_lr"]
    expected = [float(schedule()(epoch * STEPS)) for epoch in range(EPOCHS)]  # the rate the epoch's steps took
    assert [s for s, _ in runs["train"]["epoch_lr"]] == list(range(EPOCHS))
    np.testing.assert_allclose([v for _, v in runs["train"]["epoch_lr"]], expected, rtol=1e-6)
    assert expected[0] == pytest.approx(0.05)


def test_every_view_counts_epochs_from_0_as_keras(toy_run):
    _, _, runs = toy_run
    epochs = list(range(EPOCHS))
    for run, tag in (("train", "epoch_loss"), ("validation", "epoch_loss"), ("architecture", "softmax_alpha_normal"),
                     ("architecture", "genotype"), ("architecture", "health/skip_connects/normal"),
                     ("architecture", "op_weights/reduce/n3<-n2/none"), ("architecture", "alpha_reduce")):
        assert [s for s, _ in runs[run][tag]] == epochs, (run, tag)


def test_the_heatmap_spreads_its_colours_over_the_range_of_the_alphas(toy_run):
    _, _, runs = toy_run
    image = tf.io.decode_png(runs["architecture"]["softmax_alpha_normal"][-1][1]).numpy()
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 200
    assert int(image.max()) - int(image.min()) > 100


def test_heatmap_cells_take_the_colour_scale_ends_for_the_data_min_and_max():
    """Weights that differ by 1e-3 (as softmax(alpha) early in a search) still span the colour map: its darkest and
    brightest colours are both in the picture; the old grey block was one grey."""
    from matplotlib import colormaps

    weights = 0.25 + 1e-3 * np.array([[0.0, 1.0, 0.5, -0.2], [0.3, 0.1, 0.9, 0.4]])
    image = tf.io.decode_png(visualize.alpha_heatmap_png(weights, ["n2 <- c_{k-2}", "n2 <- c_{k-1}"],
                                                         list(PRIMITIVES))).numpy()[..., :3].astype(int)
    for end in (0.0, 1.0):
        colour = (np.array(colormaps["viridis"](end)[:3]) * 255).round().astype(int)
        assert (np.abs(image - colour).max(axis=-1) <= 2).sum() > 50, end  # a heatmap cell's worth of pixels
    with pytest.raises(ValueError, match=r"weights must be \[len\(rows\), len\(columns\)\] = \[1, 4\]"):
        visualize.alpha_heatmap_png(weights, ["one"], list(PRIMITIVES))


def test_the_genotype_text_is_a_table_with_a_row_per_node(toy_run):
    out, result, runs = toy_run
    text = runs["architecture"]["genotype"][-1][1]
    genotype = result["genotype"]
    rows = [line for line in text.splitlines() if line[:4] in ("| n2", "| n3")]
    assert len(rows) == 4 and len(text.splitlines()) < 20  # 2 nodes x 2 cells
    (op1, in1), (op2, in2) = genotype.normal[2], genotype.normal[3]
    names = ("c_{k-2}", "c_{k-1}", "n2")
    assert rows[1] == f"| n3 | {names[in1]} | {op1} | {names[in2]} | {op2} |"
    assert "c_{k} = concat(n2, n3)" in text


@needs_dot
def test_the_cell_pictures_are_logged_every_epoch(toy_run):
    _, _, runs = toy_run
    for cell in ("cell/normal", "cell/reduction"):
        steps = [s for s, _ in runs["architecture"][cell]]
        assert steps == list(range(EPOCHS))
        assert runs["architecture"][cell][-1][1][:8] == b"\x89PNG\r\n\x1a\n"


def _session_hparams(runs, run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    (_, value), = runs[run]["_hparams_/session_start_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            for k, v in data.session_start_info.hparams.items()}


def test_the_search_writes_its_hparams_session(toy_run):
    out, result, runs = toy_run
    hparams = _session_hparams(runs, "hparams")
    assert hparams == {"seed": 0, "arch_mode": "first_order", "hessian_eigenvalue": True}
    final = result["metrics"]["final"]
    assert runs["hparams"]["final/val_loss"] == [(EPOCHS - 1, pytest.approx(final["val_loss"]))]
    assert runs["hparams"]["final/val_accuracy"][0][1] == pytest.approx(final["val_accuracy"])


def test_the_select_stage_writes_an_hparams_session_per_candidate(tmp_path, monkeypatch):
    from components import artifacts, common, select

    candidates = []
    for seed, name in ((1, "DARTS_V1"), (7, "DARTS_V2")):
        lineage = {"stage": "derive", "search_uri": str(tmp_path / f"search_{seed}"), "seed": seed, "flags": {},
                   "dataset_hash": "unused"}
        candidates.append(artifacts.write_genotype(str(tmp_path / f"genotype_{seed}"), gt.CNN_GENOTYPES[name],
                                                   lineage, "derive").path)
    task = common.task_of("cnn", "select")
    monkeypatch.setattr(common, "read_dataset_for", lambda *args: None)

    def short_train(self, data, path, config, tb, stage):  # a score per candidate instead of a training run
        return {"validation_accuracy": {"genotype_1": 0.4, "genotype_7": 0.6}[os.path.basename(os.path.dirname(path))]}

    monkeypatch.setattr(type(task), "short_train", short_train)
    _, table = select.run("unused", candidates, str(tmp_path / "best"), str(tmp_path / "selection"), "cnn")
    assert table["best_seed"] == 7
    tb = artifacts.tensorboard_dir_of(str(tmp_path / "selection"))
    runs = read_events(tb)
    for i, (seed, score) in enumerate(((1, 0.4), (7, 0.6))):
        run = os.path.join("hparams", f"candidate_{i:02d}")
        hparams = _session_hparams(runs, run)
        assert hparams["seed"] == seed and hparams["candidate"] == i and hparams["selected"] == (seed == 7)
        assert runs[run]["select/validation_accuracy"] == [(0, pytest.approx(score))]


# ------------------------------------------------------------------------------------------- early stopping

class SkipsFromEpoch(keras.callbacks.Callback):
    """Makes skip_connect the weakest op of every normal edge by far, then before epoch `epoch` (0-based) the
    strongest."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch in (0, self.epoch):
            alpha = self.model.alpha_normal.numpy()
            alpha[:, PRIMITIVES.index("skip_connect")] = 5.0 if epoch == self.epoch else -5.0
            self.model.alpha_normal.assign(alpha)


def test_darts_plus_stops_and_publishes_the_epoch_before_the_skip_connects(tmp_path):
    out, files = tmp_path / "search", RunFiles(str(tmp_path / "search"))
    result = search(out, {"early_stop": "darts_plus", "es_stable_epochs": 0}, epochs=6, callbacks=[SkipsFromEpoch(2)])
    with open(files.metrics) as f:
        metrics = json.load(f)
    assert metrics["early_stop"] == {"rule": "darts_plus", "stopped": True, "stop_epoch": 3, "kept_epoch": 2,
                                     "reason": "the normal cell holds 4 skip-connects (>= 2) after epoch 3"}
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3] and metrics["epochs_done"] == 3
    assert metrics["final"] == metrics["history"][1]
    with np.load(files.alpha_history) as history, np.load(files.alphas) as published:
        for name in ("alpha_normal", "alpha_reduce"):
            np.testing.assert_array_equal(published[name], history[name][1])
            np.testing.assert_array_equal(result["alphas"][name], history[name][1])
    assert gt.load_genotype_file(files.genotype) == gt.load_genotype_file(files.epoch_genotype(2)) == result["genotype"]
    meta = gt.load_genotype_metadata(files.genotype)
    assert meta["epoch"] == 2 and meta["early_stop"]["stop_epoch"] == 3
    from darts_tf.search import load_search_alphas

    assert load_search_alphas(str(out)).epoch == 2
    runs = read_events(str(out / "tensorboard"))
    (step, text), = runs["architecture"]["early_stop"]
    assert step == 2 and "Published: epoch 2" in text
    # a resume replays the rule on the recorded history and does not train on
    again = search(out, {"early_stop": "darts_plus", "es_stable_epochs": 0}, epochs=6, resume=True)
    assert again["metrics"]["early_stop"]["kept_epoch"] == 2 and again["metrics"]["epochs_done"] == 3
    assert again["genotype"] == result["genotype"]


def test_darts_plus_stops_on_a_stable_genotype_and_keeps_that_epoch(tmp_path):
    result = search(tmp_path, {"early_stop": "darts_plus", "es_stable_epochs": 1, "es_max_skip_connects": 9}, epochs=4)
    stop = result["metrics"]["early_stop"]
    history = result["metrics"]["history"]
    first_still = next(h["epoch"] for h in history if h["genotype_changes"] == 0)
    assert stop["stopped"] and stop["stop_epoch"] == stop["kept_epoch"] == first_still == history[-1]["epoch"]
