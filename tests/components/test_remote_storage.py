"""Run directories on a remote filesystem (darts_tf.io_utils through tf.io.gfile): a search, darts-derive and a
training with its SavedModel export, end to end with --output_dir ram://... (TensorFlow's in-memory filesystem, one
per process, standing in for gs://), and a pipeline stage whose resumable state lives there. About a minute."""

import json

import numpy as np
import pytest

from components import ingest, search, state
from darts_tf import genotypes as gt
from darts_tf import io_utils
from darts_tf.run_files import RunFiles

TINY = dict(dataset="digits", batch_size=32, layers=3, init_channels=4)
PRIMITIVES = "none,max_pool_3x3,skip_connect,sep_conv_3x3"


@pytest.fixture
def ram(request):
    import tensorflow as tf

    root = f"ram://remote-storage/{request.node.name}"
    yield root
    if tf.io.gfile.exists(root):
        tf.io.gfile.rmtree(root)


def test_search_derive_and_export_end_to_end_on_ram(ram, capsys):
    from darts_tf.cli import derive as derive_cli
    from darts_tf.cnn import train as cnn_train
    from darts_tf.cnn.export import load_predictor
    from darts_tf.cnn.search import SearchConfig, run_search
    from darts_tf.data.images import load_image_data
    from tests.helpers import run_main_in_process

    searched = run_search(SearchConfig(output_dir=f"{ram}/search", epochs=1, nodes=2, primitives=PRIMITIVES,
                                       deterministic=True, **TINY), verbose=0)
    files = RunFiles(f"{ram}/search")
    for path in (files.state, files.alphas, files.alpha_history, files.genotype, files.metrics, files.run_config,
                 files.epoch_genotype(1)):
        assert io_utils.isfile(path), path
    assert gt.load_genotype_file(files.genotype) == searched["genotype"]
    assert io_utils.walk_files(files.tensorboard)  # TensorBoard's event files too

    code, out, err = run_main_in_process(derive_cli.main, [f"--search_dir={ram}/search",
                                                           f"--output_dir={ram}/derived"], capsys)
    assert code in (0, None), err
    derived = gt.load_genotype_file(f"{ram}/derived/genotype.json")
    assert derived == searched["genotype"]
    assert {"normal.png", "reduction.png", "normal.dot"} <= set(io_utils.listdir(f"{ram}/derived"))
    assert gt.load_genotype_metadata(f"{ram}/derived/genotype.json")["search_dir"] == f"{ram}/search"

    trained = cnn_train.train(cnn_train.TrainConfig(
        output_dir=f"{ram}/train", genotype=f"{ram}/derived/genotype.json", epochs=1, cutout_length=0,
        drop_path_prob=0.0, auxiliary=False, export=True, verbose=0, **TINY))
    run = RunFiles(f"{ram}/train")
    assert io_utils.isfile(run.model) and io_utils.isfile(run.state) and io_utils.isfile(run.data_info)
    assert io_utils.isfile(f"{run.saved_model}/1/saved_model.pb")
    with io_utils.open_file(run.metrics) as f:
        assert json.load(f)["epochs"] == trained["epochs"] == 1
    images = load_image_data("digits").test_images[:4]
    probs = load_predictor(f"{run.saved_model}/1").predict(images)  # the export serves from there
    assert probs.shape == (4, 10) and np.allclose(probs.sum(-1), 1.0, atol=1e-3)
    leftovers = [p for p in io_utils.walk_files(ram) if any(part.startswith(io_utils.TEMPORARY_PREFIXES)
                                                            for part in p.split("/"))]
    assert not leftovers


def test_a_stage_keeps_its_resumable_state_on_a_remote_filesystem(ram, tmp_path):
    dataset = ingest.run(str(tmp_path / "dataset"), {"kind": "images", "dataset": "digits"})
    kept = state.state_dir(f"{ram}/state", "run-7", "search", 2)
    found = search.run(dataset.path, str(tmp_path / "search_run"), "cnn", seed=2, verbose=0, state_dir=kept,
                       config=dict(epochs=1, batch_size=32, layers=3, init_channels=4, nodes=2, primitives=PRIMITIVES))
    assert found.lineage["epochs_done"] == 1 and found.lineage["resumed_after_epoch"] == 0
    # the run directory trained on ram:// was copied into the (local) artifact, and the state removed
    assert sorted(found.alphas()) == ["alpha_normal", "alpha_reduce"]
    assert (tmp_path / "search_run" / "search" / "training_state.npz").is_file()
    assert not io_utils.exists(kept)
