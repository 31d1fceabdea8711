"""The CNN pipeline on the user's own image folder (`--set ingest.dataset=PATH`, issue 16): ingest reads the folder once,
every later stage trains on the ingested arrays, and the class names reach the exported model (slow: about 2 minutes
on 2 CPU cores)."""

import glob
import os

import pytest

from components import artifacts
from pipelines import presets
from pipelines.run import run_pipeline

from tests.image_folders import CLASSES, digit_images, write_folder

pytestmark = pytest.mark.slow


def test_the_cnn_pipeline_on_an_image_folder_keeps_its_class_names_to_the_saved_model(tmp_path):
    from darts_tf.cnn.export import load_predictor

    folder = str(tmp_path / "shapes")
    x, y = digit_images(per_class=60)
    write_folder(folder, x[:144], y[:144], "train")
    write_folder(folder, x[144:], y[144:], "test")
    root = str(tmp_path / "runs")
    config = presets.override(presets.get_preset("cnn", "smoke"), [f"ingest.dataset={folder}", "seeds=[1]"])
    run_pipeline("cnn", root, config)
    (run_dir,) = glob.glob(os.path.join(root, "darts-cnn-*"))
    dataset = artifacts.read_dataset(os.path.join(run_dir, "ingest", "dataset"), "test")
    assert (dataset.name, dataset.metadata["class_names"]) == (folder, list(CLASSES))
    assert dataset.metadata["splits"]["test"]["size"] == 36
    metrics = artifacts.read_metrics(os.path.join(run_dir, "evaluate", "metrics"), "test")
    assert (metrics["dataset"], metrics["eval_examples"]) == (folder, 36)
    model = artifacts.read_model(os.path.join(run_dir, "evaluate", "model"), "test")
    predictor = load_predictor(model.saved_model_dir)
    assert list(predictor.class_names) == list(CLASSES)
    assert predictor.predict(dataset.image_data().test_images[:4]).shape == (4, 3)
