"""The smoke CNN pipeline end to end with kfp.local (about 2.5 minutes on 2 CPU cores): outputs, caching,
and a corrupt artifact stopping the pipeline at the stage that reads it."""

import glob
import os
import time

import pytest

from components import artifacts
from pipelines import presets
from pipelines.run import run_pipeline

pytestmark = pytest.mark.slow


def _run_dirs(root):
    return sorted(glob.glob(os.path.join(root, "darts-cnn-*")))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pipeline"))
    run_pipeline("cnn", root, presets.get_preset("cnn", "smoke"))
    (run_dir,) = _run_dirs(root)
    return root, run_dir


def test_smoke_pipeline_produces_genotypes_pictures_metrics_and_a_saved_model(first_run):
    from darts_tf.cnn.export import load_predictor

    root, run_dir = first_run
    genotypes = sorted(glob.glob(os.path.join(run_dir, "for-loop-1-iteration-*", "derive", "genotype")))
    assert len(genotypes) == 2
    seeds = sorted(artifacts.read_genotype(g, "test").lineage["seed"] for g in genotypes)
    assert seeds == [1, 2]
    assert len(glob.glob(os.path.join(run_dir, "for-loop-1-iteration-*", "derive", "pictures", "*.png"))) == 4
    best = artifacts.read_genotype(os.path.join(run_dir, "select", "best_genotype"), "test")
    assert best.lineage["selected_from"] == genotypes or sorted(best.lineage["selected_from"]) == genotypes
    table = artifacts.read_metrics(os.path.join(run_dir, "select", "selection"), "test")
    assert len(table["candidates"]) == 2
    metrics = artifacts.read_metrics(os.path.join(run_dir, "evaluate", "metrics"), "test")
    assert metrics["test_top1_accuracy"] > 0.1 + 0.05, metrics  # 10 classes: chance is 0.1
    model = artifacts.read_model(os.path.join(run_dir, "evaluate", "model"), "test")
    probs = load_predictor(model.saved_model_dir).predict(
        artifacts.read_dataset(os.path.join(run_dir, "ingest", "dataset"), "test").image_data().test_images[:5])
    assert probs.shape == (5, 10)
    artifacts.read_metrics(os.path.join(run_dir, "transfer", "metrics"), "test")
    events = [p for p in glob.glob(os.path.join(root, "**", "events.out.tfevents.*"), recursive=True)]
    for stage in ("ingest", "search", "derive", "select", "evaluate", "transfer"):
        assert any(f"{os.sep}{stage}{os.sep}" in p for p in events), stage


def test_rerun_reuses_the_finished_stages(first_run):
    root, _ = first_run
    before = set(glob.glob(os.path.join(root, "**", "executor_output.json"), recursive=True))
    start = time.time()
    run_pipeline("cnn", root, presets.get_preset("cnn", "smoke"))
    assert time.time() - start < 60
    after = set(glob.glob(os.path.join(root, "**", "executor_output.json"), recursive=True))
    assert after == before  # no stage ran again


def test_a_corrupt_genotype_stops_the_pipeline_at_select(first_run, capfd):
    root, run_dir = first_run
    corrupt = os.path.join(run_dir, "for-loop-1-iteration-0", "derive", "genotype")
    with open(os.path.join(corrupt, "genotype.json"), "w") as f:
        f.write('{"kind": "cnn", "normal": [["sep_conv_3x3", 0]')  # half a file
    # A new select setting: ingest/search/derive come from the cache, select must run and read the corrupt file.
    config = presets.override(presets.get_preset("cnn", "smoke"), ["select.seed=7"])
    with pytest.raises(RuntimeError, match="select"):
        run_pipeline("cnn", root, config)
    output = capfd.readouterr()
    assert f"[stage 'select'] artifact '{corrupt}'" in output.out + output.err
    newest = _run_dirs(root)[-1]
    assert newest != run_dir
    assert not os.path.exists(os.path.join(newest, "evaluate")) and not os.path.exists(os.path.join(newest, "transfer"))
    assert not os.path.exists(os.path.join(newest, "select", "best_genotype"))


def test_rnn_smoke_pipeline_end_to_end(tmp_path):
    """Search on the offline text corpus over 2 seeds, select, evaluate, transfer (about a minute)."""
    from darts_tf.rnn.networks import RNNModel  # registers the RNN model's classes for loading

    root = str(tmp_path)
    run_pipeline("rnn", root, presets.get_preset("rnn", "smoke"))
    (run_dir,) = glob.glob(os.path.join(root, "darts-rnn-*"))
    genotypes = glob.glob(os.path.join(run_dir, "for-loop-1-iteration-*", "derive", "genotype"))
    assert len(genotypes) == 2 and all(artifacts.read_genotype(g, "test").genotype.kind == "rnn" for g in genotypes)
    assert glob.glob(os.path.join(run_dir, "for-loop-1-iteration-*", "derive", "pictures", "recurrent.png"))
    metrics = artifacts.read_metrics(os.path.join(run_dir, "evaluate", "metrics"), "test")
    assert metrics["test_perplexity"] < metrics["vocab_size"]  # better than a uniform guess
    model = artifacts.read_model(os.path.join(run_dir, "evaluate", "model"), "test")
    import keras

    assert isinstance(keras.models.load_model(model.keras_model_path), RNNModel)
    assert model.saved_model_dir and metrics["saved_model_check"]["tokens"] > 0  # the exported model, run
    transfer = artifacts.read_metrics(os.path.join(run_dir, "transfer-text", "metrics"), "test")
    assert transfer["lineage"]["stage"] == "transfer" and transfer["test_perplexity"] < transfer["vocab_size"]
