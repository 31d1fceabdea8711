"""The shared search loop (darts_tf.search) and its finiteness guard (darts_tf.guards), on a toy supernet of one mixed
op that searches in seconds, and once on a real CNN search that diverges."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from darts_tf import checkpoint
from darts_tf import genotypes as gt
from darts_tf.bilevel import BilevelSearchModel
from darts_tf.guards import NonFiniteError, NonFiniteGuard
from darts_tf.run_files import RunFiles
from darts_tf.search import StopAfterEpochs, load_search_alphas, run_bilevel_search

from tests.helpers import ENV

STEPS, BATCH = 4, 16


class ToySearch(BilevelSearchModel):
    """Dense -> one mixed op over the recurrent space's activations -> Dense: alpha is one [1, 5] recurrent alpha."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, name="hidden")
        self.head = keras.layers.Dense(3, name="head")
        self.alpha = self.add_weight(shape=(1, len(gt.RNN_PRIMITIVES)), initializer="zeros", name="alpha_recurrent")

    @property
    def arch_variables(self):
        return [self.alpha]

    def call(self, x, training=False):
        h = self.hidden(x)
        w = ops.softmax(self.alpha[0])
        return self.head(w[1] * ops.tanh(h) + w[2] * ops.relu(h) + w[3] * ops.sigmoid(h) + w[4] * h)

    def alphas_numpy(self):
        return {"alpha_recurrent": np.asarray(self.alpha.numpy())}

    def genotype(self):
        return gt.derive_from_alphas(self.alphas_numpy(), k=1)


def toy_model(learning_rate=0.05, arch_learning_rate=0.01):
    checkpoint.start_run(0, deterministic=True)
    model = ToySearch(name="toy")
    model(np.zeros((1, 4), np.float32))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), arch_optimizer=keras.optimizers.Adam(arch_learning_rate))
    return model


def toy_dataset(initial_epoch, epochs=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * BATCH, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    pairs = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    return tf.data.Dataset.zip({"train": pairs, "validation": pairs}).repeat(epochs - initial_epoch)


def search(out, model, epochs=3, resume=False, callbacks=()):
    return run_bilevel_search(model, lambda e: toy_dataset(e, epochs), STEPS, epochs, str(out), {"seed": 0},
                              resume, callbacks, verbose=0)


def strict_json(path):
    """The file's JSON; NaN / Infinity (not JSON) fail the test."""
    def refuse(token):
        raise AssertionError(f"{path} holds {token}")
    with open(path) as f:
        return json.load(f, parse_constant=refuse)


def test_a_learning_rate_that_diverges_stops_the_search_and_keeps_the_last_good_epoch(tmp_path):
    steps_then_huge = keras.optimizers.schedules.PiecewiseConstantDecay([STEPS], [0.05, 1e30])
    model = toy_model(learning_rate=steps_then_huge)
    with pytest.raises(NonFiniteError, match=r"Training diverged at epoch 2, step \d of 4: the loss is not finite "
                                             r"\(loss=(nan|inf).*The learning rate is likely too large: lower "
                                             r"--learning_rate or --arch_learning_rate.*The last good checkpoint \(.*"
                                             r"training_state.npz, after epoch 1\) is kept"):
        search(tmp_path, model)
    files = RunFiles(str(tmp_path))
    fresh = toy_model(learning_rate=steps_then_huge)
    assert checkpoint.restore_state(str(tmp_path), fresh)["epochs_done"] == 1
    assert all(np.isfinite(v.numpy()).all() for v in fresh.variables)
    assert [h["epoch"] for h in strict_json(files.metrics)["history"]] == [1]
    assert os.listdir(os.path.dirname(files.epoch_genotype(1))) == ["epoch_001.json"]
    assert not os.path.exists(files.genotype) and not os.path.exists(files.alphas)
    with np.load(files.alpha_history) as history:
        assert history["alpha_recurrent"].shape == (1, 1, 5)


def test_the_guard_names_the_step_whose_alphas_became_non_finite():
    class PoisonAlpha(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.alpha.assign(np.full((1, 5), np.nan, np.float32))

    model = toy_model()
    with pytest.raises(NonFiniteError, match=r"Training diverged at epoch 1, step 2 of 4: the architecture variables "
                                             r"are not finite \(toy/alpha_recurrent \(5 of 5 values are nan\)\)\. The "
                                             r"architecture learning rate is likely too large: lower "
                                             r"--arch_learning_rate.*No epoch finished"):
        model.fit(toy_dataset(0), epochs=1, steps_per_epoch=STEPS, verbose=0,
                  callbacks=[PoisonAlpha(), NonFiniteGuard(("--learning_rate", "--arch_learning_rate"))])


def test_the_guard_checks_every_weight_before_the_epoch_is_saved(tmp_path):
    """Weights that go inf in an epoch's last step (after its loss was logged) are caught before the checkpoint."""
    class PoisonWeightAtTheEnd(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == STEPS - 1:
                kernel = self.model.layers[0].kernel
                kernel.assign(np.where(np.eye(*kernel.shape) > 0, np.inf, kernel.numpy()).astype("float32"))

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")], name="plain")
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    x, y = np.ones((STEPS * BATCH, 4), np.float32), np.zeros(STEPS * BATCH, np.int32)
    with pytest.raises(NonFiniteError, match=r"Training diverged at the end of epoch 1: the model's variables are not "
                                             r"finite \(plain/dense/kernel \(3 of 12 values are inf\)\)\. The learning "
                                             r"rate is likely too large: lower --learning_rate,"):
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0,
                  callbacks=[NonFiniteGuard(state_path=RunFiles(str(tmp_path)).state), PoisonWeightAtTheEnd(),
                             checkpoint.EpochCheckpoint(str(tmp_path))])
    assert not checkpoint.has_state(str(tmp_path))


def test_final_alphas_that_are_not_finite_publish_nothing(tmp_path):
    """A finished search resumed from a state with bad alphas (one written before the guard) publishes nothing."""
    files = RunFiles(str(tmp_path))
    search(tmp_path, toy_model(), epochs=1)
    os.remove(files.genotype)
    os.remove(files.alphas)
    with np.load(files.state) as data:
        state = dict(data)
    alpha = [f"v{i:05d}" for i, p in enumerate(state["__paths__"]) if p == "toy/alpha_recurrent"]
    state[alpha[0]] = np.full((1, 5), np.inf, np.float32)
    np.savez(files.state, **state)
    with pytest.raises(NonFiniteError, match=r"The alphas of .* after epoch 1 are not finite: alpha_recurrent \(5 of 5 "
                                             r"values are inf\)\. The search diverged; no genotype is derived from "
                                             r"them\. Run it again with a lower --arch_learning_rate or --learning_rate"):
        search(tmp_path, toy_model(), epochs=1, resume=True)
    assert not os.path.exists(files.genotype) and not os.path.exists(files.alphas)


def test_an_unfinished_search_derives_from_its_last_finished_epoch(tmp_path):
    model = toy_model()
    search(tmp_path, model, epochs=3, callbacks=[StopAfterEpochs(2)])
    files = RunFiles(str(tmp_path))
    assert not os.path.exists(files.alphas) and not os.path.exists(files.genotype)
    found = load_search_alphas(str(tmp_path))
    assert (found.finished, found.epoch, found.source) == (False, 2, files.alpha_history)
    np.testing.assert_array_equal(found.alphas["alpha_recurrent"], model.alpha.numpy())

    search(tmp_path, toy_model(), epochs=3, resume=True)
    found = load_search_alphas(str(tmp_path))
    assert (found.finished, found.source) == (True, files.alphas)


def test_the_search_checks_its_output_directory_before_fitting(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    model = toy_model()
    with pytest.raises(ValueError, match=r"--output_dir .*/file is a file, not a directory"):
        search(tmp_path / "file", model)


TINY_CNN = ["--dataset=digits", "--batch_size=32", "--epochs=1", "--init_channels=4", "--layers=3", "--nodes=2",
            "--primitives=none,max_pool_3x3,skip_connect,sep_conv_3x3", "--train_portion=0.5", "--seed=3"]


def test_a_cnn_search_with_a_diverging_learning_rate_exits_2_with_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.search", f"--output_dir={tmp_path}", *TINY_CNN,
                           "--learning_rate=1e30"], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Training diverged at epoch 1, step" in errors[0], proc.stderr[-3000:]
    assert "lower --learning_rate or --arch_learning_rate" in errors[0]
    assert not os.path.exists(tmp_path / "genotype.json") and not os.path.exists(tmp_path / "metrics.json")


@pytest.mark.parametrize("content, cause", [('{"history": [{"epoch": 1, "lo', "JSONDecodeError"),
                                            ("[1, 2]", None), ('{"final": {}}', None)])
def test_resuming_a_search_whose_metrics_file_is_damaged_names_the_file_and_the_fix(tmp_path, content, cause):
    search(tmp_path, toy_model(), epochs=3, callbacks=[StopAfterEpochs(1)])
    path = RunFiles(str(tmp_path)).metrics
    with open(path, "w") as f:
        f.write(content)
    what = rf"truncated or not a darts_tf metrics file: {cause}: .*" if cause else r'no per-epoch "history" list'
    with pytest.raises(ValueError, match=rf"^{path} is damaged \({what}\): delete it and the run's training_state\.npz "
                                         rf"to start the search over, or restore a copy of {path}\.$"):
        search(tmp_path, toy_model(), epochs=3, resume=True)
