"""The CNN select and evaluate stages train on the ingested Dataset artifact's arrays and never reload a dataset by its
name (issue 16): an artifact named like a tfds dataset ('mnist') is trained on with the network and tfds unreachable."""

import dataclasses
import socket

import numpy as np
import pytest

from components import artifacts, evaluate, select
from darts_tf import genotypes as gt
from darts_tf.data import images

TINY_TRAIN = dict(layers=3, init_channels=4, epochs=1, batch_size=32, cutout_length=0, drop_path_prob=0.0,
                  auxiliary=False, verbose=0)
LINEAGE = {"stage": "test", "search_uri": "", "seed": 0, "flags": {}, "dataset_hash": ""}


@pytest.fixture
def offline(monkeypatch):
    """No socket can connect, and loading a dataset by name fails the test."""
    def refuse_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    def refuse_reload(source, *args, **kwargs):
        raise AssertionError(f"the stage reloaded the dataset {source!r} by name")

    monkeypatch.setattr(socket.socket, "connect", refuse_network)
    monkeypatch.setattr(socket, "create_connection", refuse_network)
    monkeypatch.setattr(images, "load_image_data", refuse_reload)


def test_select_and_evaluate_train_on_the_ingested_arrays_of_a_dataset_named_like_a_tfds_one(tmp_path, offline):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None][:400]
    y = bunch.target.astype(np.int64)[:400]
    mean, std = images.channel_stats(x[:320])
    data = images.ImageData(x[:320], y[:320], x[320:], y[320:], 10, "mnist", mean, std)
    data = dataclasses.replace(data, class_names=tuple(f"digit {i}" for i in range(10)))
    dataset = artifacts.write_image_dataset(str(tmp_path / "dataset"), data)
    assert dataset.name == "mnist"
    genotype = artifacts.write_genotype(str(tmp_path / "genotype"), gt.CNN_GENOTYPES["DARTS_V2"], LINEAGE, "derive")

    _, table = select.run(dataset.path, [genotype.path], str(tmp_path / "best"), str(tmp_path / "table"), "cnn",
                          {**TINY_TRAIN, "validation_portion": 0.25})
    assert len(table["candidates"]) == 1
    model, metrics = evaluate.run(dataset.path, genotype.path, str(tmp_path / "model"), str(tmp_path / "metrics"),
                                  "cnn", TINY_TRAIN)
    assert (metrics["dataset"], metrics["eval_examples"]) == ("mnist", 80)
    from darts_tf.cnn.export import load_predictor

    predictor = load_predictor(model.saved_model_dir)
    assert list(predictor.class_names) == [f"digit {i}" for i in range(10)]
