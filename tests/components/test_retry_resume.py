"""A retried stage resumes (components.state): a search or evaluation that dies after its first epoch and runs again
with the same state directory (what KFP's retry of the same task in the same pipeline run gets) continues at epoch 2,
and the search ends with the alphas of an uninterrupted run (--deterministic). The evaluation takes about 25 s on 2
CPU cores, the search (slow) 60-90 s."""

import os

import numpy as np
import pytest

from components import artifacts, derive, evaluate, ingest, search, state
from darts_tf import checkpoint

SEARCH = dict(epochs=2, batch_size=64, layers=3, init_channels=4, nodes=2, deterministic=True,
              primitives="none,max_pool_3x3,skip_connect,sep_conv_3x3", arch_learning_rate=3e-3)
TRAIN = dict(layers=3, init_channels=4, epochs=2, batch_size=64, cutout_length=0, drop_path_prob=0.0,
             auxiliary=False, verbose=0)


class Killed(RuntimeError):
    """What the first attempt dies of: raised after its first epoch's checkpoint is written."""


def die_after_first_epoch(monkeypatch, module, function):
    """Makes `module.function(config, callbacks, ...)` (the library's run_search / train) raise `Killed` after
    epoch 1, once: the callbacks run after the per-epoch checkpoint, as a kill after it would land."""
    import keras

    original = getattr(module, function)

    class KillAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Killed(f"killed after epoch {epoch + 1}")

    def dying(config, callbacks=(), *args, **kwargs):
        monkeypatch.setattr(module, function, original)  # the retry runs the real thing
        return original(config, [*callbacks, KillAfterFirstEpoch()], *args, **kwargs)

    monkeypatch.setattr(module, function, dying)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return ingest.run(str(tmp_path_factory.mktemp("ingest") / "dataset"), {"kind": "images", "dataset": "digits"})


def test_state_directories_are_per_run_task_and_seed(tmp_path):
    root = str(tmp_path)
    assert state.state_dir("", "run-1", "search", 3) is None  # no state root: the stage trains in its pod
    assert state.state_dir(root, "run-1", "search", 3) == f"{root}/run-1/search-seed-3"
    assert state.state_dir(root + "/", "run-1", "evaluate") == f"{root}/run-1/evaluate"
    assert state.state_dir("gs://bucket/state", "4f2a", "transfer-text") == "gs://bucket/state/4f2a/transfer-text"
    with pytest.raises(ValueError, match="unresolved KFP placeholder"):
        state.state_dir(root, "{{$.pipeline_job_uuid}}", "search", 1)


@pytest.mark.slow  # three tiny searches: 60-90 s on 2 busy cores
def test_a_search_killed_after_epoch_1_resumes_at_epoch_2_with_the_alphas_of_an_uninterrupted_run(
        tmp_path, dataset, monkeypatch):
    from darts_tf.cnn import search as cnn_search

    kept = state.state_dir(str(tmp_path / "state"), "run-1", "search", 3)
    out = str(tmp_path / "attempts" / "search_run")
    die_after_first_epoch(monkeypatch, cnn_search, "run_search")
    with pytest.raises(Killed):
        search.run(dataset.path, out, "cnn", seed=3, config=SEARCH, verbose=0, state_dir=kept)
    assert not os.path.exists(out)  # nothing published by the killed attempt
    assert checkpoint.saved_epochs(f"{kept}/{state.RUN_DIR}") == 1

    retried = search.run(dataset.path, out, "cnn", seed=3, config=SEARCH, verbose=0, state_dir=kept)  # the retry
    assert retried.lineage["resumed_after_epoch"] == 1 and retried.lineage["epochs_done"] == 2
    assert [h["epoch"] for h in retried.metrics["history"]] == [1, 2]  # one history across both attempts
    assert not os.path.exists(kept)  # removed once the artifact is published

    reference = search.run(dataset.path, str(tmp_path / "uninterrupted" / "search_run"), "cnn", seed=3,
                           config=SEARCH, verbose=0)
    assert reference.lineage["resumed_after_epoch"] == 0
    got, want = retried.alphas(), reference.alphas()
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)
    assert (derive.derive_from_search(retried) == derive.derive_from_search(reference))


def test_an_evaluation_killed_after_epoch_1_resumes_at_epoch_2(tmp_path, dataset, monkeypatch):
    from darts_tf import genotypes as gt
    from darts_tf.cnn import train as cnn_train

    lineage = {"stage": "derive", "search_uri": "/search", "seed": 1, "flags": {}, "dataset_hash": dataset.dataset_hash}
    chosen = artifacts.write_genotype(str(tmp_path / "genotype"), gt.CNN_GENOTYPES["DARTS_V2"], lineage, "derive")
    kept = state.state_dir(str(tmp_path / "state"), "run-1", "evaluate")
    model, metrics = str(tmp_path / "model"), str(tmp_path / "metrics")
    die_after_first_epoch(monkeypatch, cnn_train, "train")
    with pytest.raises(Killed):
        evaluate.run(dataset.path, chosen.path, model, metrics, "cnn", TRAIN, state_dir=kept)
    assert not os.path.exists(model) and checkpoint.saved_epochs(f"{kept}/{state.RUN_DIR}") == 1

    trained, result = evaluate.run(dataset.path, chosen.path, model, metrics, "cnn", TRAIN, state_dir=kept)
    assert result["lineage"]["resumed_after_epoch"] == 1 and result["epochs"] == 2
    assert trained.saved_model_dir and os.path.isfile(trained.keras_model_path)
    assert not os.path.exists(kept)
