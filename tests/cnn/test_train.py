"""Architecture evaluation (darts_tf.cnn.train, darts_tf.cnn.evaluate, darts-train, darts-test) on the offline `digits` data (8x8x1)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import checkpoint, run_files
from darts_tf import genotypes as gt
from darts_tf.cnn import evaluate
from darts_tf.cnn import train as training
from darts_tf.cnn.networks import NetworkCIFAR, set_drop_path_prob
from darts_tf.data import augment, images
from darts_tf.io_utils import save_model_atomic
from tests.helpers import run_main_in_process, run_module


def tiny_config(output_dir, **overrides):
    values = dict(dataset="digits", layers=3, init_channels=4, batch_size=32, epochs=2, cutout_length=2,
                  learning_rate=0.05, output_dir=str(output_dir), verbose=0, eval_every=0)
    values.update(overrides)
    return training.TrainConfig(**values)


@pytest.fixture(scope="module")
def digits():
    return images.load_image_data("digits")


def tiny_model(drop_path_prob=0.0, C=4):
    keras.utils.set_random_seed(0)
    model = NetworkCIFAR("DARTS_V2", C=C, num_classes=10, num_layers=3, auxiliary=True, drop_path_prob=drop_path_prob,
                         seed=0)
    model.build((None, 8, 8, 1))
    return model


def normalized(data, n):
    return augment.normalize(data.train_images[:n], data.mean, data.std).numpy(), data.train_labels[:n]


def ce(y, logits):
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))


# ----------------------------------------------------------------------------------------------------------
# Training mechanics


def test_a_few_steps_lower_the_loss(digits):
    model = tiny_model(C=8)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), auxiliary_weight=0.4, weight_decay=3e-4,
                  grad_clip=5.0)
    x, y = normalized(digits, 64)
    losses = []
    for _ in range(15):
        model.reset_metrics()
        losses.append(float(model.train_on_batch(x, y, return_dict=True)["loss"]))  # loss before this step's update
    assert losses[-1] < 0.7 * losses[0], losses


def test_drop_path_and_auxiliary_only_in_training(digits):
    model = tiny_model(drop_path_prob=0.5)
    x, y = normalized(digits, 16)
    a, b = model(x, training=True), model(x, training=True)
    assert not np.allclose(a, b), "drop-path should make training-mode outputs vary"
    c, d = model(x, training=False), model(x, training=False)
    np.testing.assert_array_equal(c, d)
    set_drop_path_prob(model, 0.0)
    np.testing.assert_array_equal(model(x, training=False), c)  # drop-path has no effect at inference
    np.testing.assert_array_equal(model(x, training=True), model(x, training=True))  # control: no drop, no variation

    logits, aux = model.forward(x, training=True)
    assert aux is not None and tuple(aux.shape) == (16, 10)
    assert model.forward(x, training=False)[1] is None

    aux_vars = model.auxiliary_head.trainable_variables
    assert aux_vars
    with tf.GradientTape() as tape:
        logits, aux = model.forward(x, training=True)
        loss = ce(y, logits) + 0.4 * ce(y, aux)
    grads = tape.gradient(loss, aux_vars)
    assert all(g is not None for g in grads) and any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    with tf.GradientTape() as tape:
        loss = ce(y, model(x, training=False))
    assert all(g is None for g in tape.gradient(loss, aux_vars))


def test_keras_save_and_reload_give_identical_outputs(digits, tmp_path):
    model = tiny_model()
    x, y = normalized(digits, 32)
    model.forward(x, training=True)  # moves BatchNorm statistics (auxiliary head's included) off their initial values
    path = str(tmp_path / "model.keras")
    save_model_atomic(model, path)
    assert os.listdir(tmp_path) == ["model.keras"]  # no temporary file left behind
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_array_equal(model(x, training=False), loaded(x, training=False))
    assert len(model.variables) == len(loaded.variables)
    for v, w in zip(model.variables, loaded.variables):
        np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=v.path)  # auxiliary head included


# ----------------------------------------------------------------------------------------------------------
# Resume


class _Killed(Exception):
    pass


class KillInEpoch(keras.callbacks.Callback):
    """Simulates a kill a few batches into epoch `epoch` (after the previous epoch's checkpoint)."""

    def __init__(self, epoch, batch=3):
        super().__init__()
        self.kill_epoch, self.kill_batch, self.epoch = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.kill_epoch and batch == self.kill_batch:
            raise _Killed()


def _state(directory):
    with np.load(os.path.join(directory, run_files.STATE)) as data:
        return {k: data[k] for k in data.files if k.startswith("v")}, json.loads(str(data["__meta__"]))


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    full = training.train(tiny_config(tmp_path / "full"))

    killed = tiny_config(tmp_path / "killed")
    with pytest.raises(_Killed):
        training.train(killed, callbacks=[KillInEpoch(1)])
    assert _state(killed.output_dir)[1]["epochs_done"] == 1
    assert not os.path.exists(os.path.join(killed.output_dir, run_files.MODEL))

    with pytest.raises(ValueError, match="--resume"):  # a run directory is never overwritten by accident
        training.train(killed)
    resumed = training.train(tiny_config(tmp_path / "killed", resume=True))

    full_state, full_meta = _state(tmp_path / "full")
    resumed_state, resumed_meta = _state(killed.output_dir)
    assert full_meta["epochs_done"] == resumed_meta["epochs_done"] == 2
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:
        np.testing.assert_allclose(full_state[key], resumed_state[key], rtol=1e-5, atol=1e-5, err_msg=key)
    assert resumed["test_top1_accuracy"] == pytest.approx(full["test_top1_accuracy"], abs=1e-6)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-4)


# ----------------------------------------------------------------------------------------------------------
# Scripts: darts-train then darts-test on the held-out split


def _run_cli_in_process(cli_module, config_cls, argv, capsys):
    """The script's main in this process; returns (exit code, stdout, stderr)."""
    cli_module.define_config_flags(config_cls)
    return run_main_in_process(cli_module.main, argv, capsys)


def test_darts_test_reports_the_accuracy_training_ended_with(tmp_path, capsys):
    from darts_tf.cli import train as train_cli

    out = str(tmp_path / "run")
    code, _, err = _run_cli_in_process(train_cli, training.TrainConfig, [
        "--dataset=digits", "--layers=3", "--init_channels=4", "--batch_size=32", "--epochs=1", "--cutout_length=2",
        "--validation_portion=0.2", "--seed=3", "--verbose=0", f"--output_dir={out}"], capsys)
    assert code == 0, err
    for name in (run_files.MODEL, run_files.GENOTYPE, run_files.METRICS, run_files.DATA_INFO,
                 "flags.txt", run_files.RUN_CONFIG):
        assert os.path.isfile(os.path.join(out, name)), name
    tags = set()
    for path in tf.io.gfile.glob(os.path.join(out, run_files.TENSORBOARD, "train", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"epoch_loss", "epoch_accuracy", "epoch_lr", "epoch_drop_path_prob"} <= tags, tags
    assert "epoch_learning_rate" not in tags, tags  # one learning-rate tag: the rate the epoch used
    with open(os.path.join(out, run_files.METRICS)) as f:
        metrics = json.load(f)
    assert metrics["eval_split"] == "validation" and "test_top1_accuracy" not in metrics
    assert metrics["eval_examples"] == 1437 - int(np.floor(0.8 * 1437))
    assert metrics["epochs"] == 1 and metrics["params_M"] > 0 and metrics["wall_time_s"] > 0
    assert gt.load_genotype_file(os.path.join(out, run_files.GENOTYPE), "cnn") == gt.CNN_GENOTYPES["DARTS_V2"]

    proc = run_module("darts_tf.cli.test", f"--model={os.path.join(out, run_files.MODEL)}", "--split=validation")
    assert "validation top-1 error" in proc.stdout
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["num_examples"] == metrics["eval_examples"]
    assert result["top1_accuracy"] == pytest.approx(metrics["validation_top1_accuracy"], abs=1e-6)
    assert result["top5_accuracy"] == pytest.approx(metrics["validation_top5_accuracy"], abs=1e-6)


def test_script_reports_bad_flags_clearly(tmp_path, capsys):
    from darts_tf.cli import train as train_cli

    code, _, err = _run_cli_in_process(train_cli, training.TrainConfig,
                                       ["--genotype=NOPE", "--dataset=digits", f"--output_dir={tmp_path}"], capsys)
    assert code == 2
    assert "error: Unknown CNN genotype name 'NOPE'" in err and "DARTS_V2" in err
    code, _, err = _run_cli_in_process(train_cli, training.TrainConfig,
                                       ["--validation_portion=1.5", "--dataset=digits", f"--output_dir={tmp_path}"], capsys)
    assert code == 2 and "validation_portion must be in [0, 1)" in err


# ----------------------------------------------------------------------------------------------------------
# Clear errors


def test_unknown_genotype_lists_known_names(tmp_path):
    with pytest.raises(gt.GenotypeError, match=r"Unknown CNN genotype name 'NOPE'.*DARTS_V1, DARTS_V2"):
        training.train(tiny_config(tmp_path, genotype="NOPE"))


def test_genotype_json_failing_validation_names_the_field(tmp_path):
    bad = gt.CNN_GENOTYPES["DARTS_V2"].to_dict()
    bad["reduce"][3] = ["conv_9x9", 1]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(gt.GenotypeError, match=r"field 'reduce'\[3\] uses unknown op 'conv_9x9'"):
        training.train(tiny_config(tmp_path / "run", genotype=str(path)))
    path.write_text("{not json")
    with pytest.raises(gt.GenotypeError, match="does not parse"):
        training.train(tiny_config(tmp_path / "run", genotype=str(path)))


@pytest.mark.parametrize("overrides, message", [
    (dict(epochs=0), "epochs must be >= 1. Received: epochs=0"),
    (dict(validation_portion=1.0), r"validation_portion must be in \[0, 1\)"),
    (dict(validation_portion=-0.1), r"validation_portion must be in \[0, 1\)"),
    (dict(layers=2), "layers must be >= 3"),
    (dict(strategy="tpu"), "strategy must be one of auto, mirrored, multi_worker, default"),
    (dict(batch_size=1000, validation_portion=0.5), r"batch_size=1000 is larger than the training split .*718 examples"),
    (dict(cutout_length=16), "cutout_length=16 is not smaller than the 8x8 images"),
])
def test_impossible_values_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        training.train(tiny_config(tmp_path, **overrides))
    assert not checkpoint.has_state(str(tmp_path))


def test_evaluate_validation_split_needs_a_portion(tmp_path, digits):
    model = tiny_model()
    path = str(tmp_path / "model.keras")
    save_model_atomic(model, path)
    with pytest.raises(ValueError, match="split='validation' needs a validation_portion"):
        evaluate.evaluate(path, dataset="digits", split="validation")
    with pytest.raises(ValueError, match=r"split must be 'test' or 'validation'"):
        evaluate.evaluate(path, dataset="digits", split="train")


# ----------------------------------------------------------------------------------------------------------
# ImageNet transfer (slow: another model and pipeline to trace)


@pytest.mark.slow
def test_train_imagenet_on_an_image_folder(tmp_path, digits):
    root = tmp_path / "folder"
    for split, (x, y) in {"train": (digits.train_images[:64], digits.train_labels[:64]),
                          "val": (digits.test_images[:32], digits.test_labels[:32])}.items():
        for i, (image, label) in enumerate(zip(x, y)):
            d = root / split / f"class{label}"
            d.mkdir(parents=True, exist_ok=True)
            rgb = np.repeat(np.kron(image, np.ones((2, 2, 1), np.uint8)), 3, axis=-1)
            tf.io.write_file(str(d / f"{i}.png"), tf.io.encode_png(rgb))
    config = training.ImageNetConfig(dataset=str(root), image_size=16, layers=3, init_channels=4, batch_size=16,
                                     epochs=1, output_dir=str(tmp_path / "run"), verbose=0, eval_every=0)
    metrics = training.train_imagenet(config)
    assert metrics["eval_split"] == "validation" and metrics["eval_examples"] == 32
    assert 0 <= metrics["validation_top1_accuracy"] <= metrics["validation_top5_accuracy"] <= 1
