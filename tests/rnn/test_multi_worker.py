"""darts-rnn-train under a distribution strategy (issue 21): each replica carries the hidden state of its rows of the
global batch and masks them as the one-device step does, so the training equals the one-device training.

* 2 logical CPU devices (``mirrored``), in a fresh process (this file as a script: ``python -m
  tests.rnn.test_multi_worker mirrored OUT``): the final weights and perplexities are the one-device run's;
* two worker processes on localhost (``multi_worker``, TF_CONFIG with 127.0.0.1 ports; each worker runs this file as
  a script: OUT WEIGHTS [--resume] [--die_at_epoch N]): both finish with equal weights, equal to a one-device run's,
  only the chief's output directory holds the artifacts, and a run whose worker was killed resumes from the chief's
  checkpoint when both restart, ending with the uninterrupted run's weights.
"""

import json
import os
import sys

import numpy as np
import pytest

from darts_tf.run_files import (BEST_WEIGHTS, GENOTYPE, METRICS, MODEL, RUN_CONFIG, STATE, TENSORBOARD, VOCAB)
from tests.cnn.test_multi_worker import (_tail, _weights, _worker_dirs, check_a_kill_resumes, check_two_workers,
                                         start_workers, wait_all, worker_arguments, worker_callbacks)
from tests.helpers import module_report, run_module

EPOCHS = 2
TINY = dict(units=16, batch_size=8, eval_batch_size=4, test_batch_size=4, bptt=6, max_seq_len_delta=3, epochs=EPOCHS,
            seed=5)
ARTIFACTS = {BEST_WEIGHTS, GENOTYPE, METRICS, MODEL, RUN_CONFIG, STATE, TENSORBOARD, VOCAB}
MODULE = "tests.rnn.test_multi_worker"
# the runs' corpus: the smoke corpus cut to ~10 windows of 8 rows per epoch (over thousands of steps at lr 20 the float
# round-off of two equal trainings grows into different weights; over tens it stays round-off)
CORPUS_TOKENS = 500


def _corpus_of(out):
    """The corpus next to a run directory `out` (written once)."""
    from darts_tf.data.text import smoke_corpus

    directory = os.path.join(os.path.dirname(os.path.abspath(out)), "corpus")
    if not os.path.isfile(os.path.join(directory, "test.txt")):
        smoke_corpus(directory, max_train_tokens=CORPUS_TOKENS)
    return directory


def _config(strategy, **kw):
    from darts_tf.rnn.train import get_preset

    return get_preset("smoke", **{**TINY, **kw}, strategy=strategy)


def _model_weights(run_dir):
    from darts_tf.rnn.evaluate import load_model

    return [np.asarray(v) for v in load_model(run_dir).weights]


def test_mirrored_training_equals_the_one_device_training(tmp_path):
    found = module_report(MODULE, "mirrored", str(tmp_path))
    assert found["replicas"] == 2
    results = found["results"]
    assert results["default"]["steps"] == results["mirrored"]["steps"] > 1
    assert found["worst"] < 1e-4, found  # relative to each variable's largest entry: float round-off
    assert results["mirrored"]["loss"] == pytest.approx(results["default"]["loss"], rel=1e-5)
    assert results["mirrored"]["val_losses"] == pytest.approx(results["default"]["val_losses"], rel=1e-5)


def test_the_strategy_of_darts_rnn_train_is_checked_before_the_run_directory_exists(tmp_path, monkeypatch):
    from darts_tf.rnn.train import train

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"strategy must be one of auto, mirrored, multi_worker, default\. "
                                         r"Received: strategy='ring'"):
        _config("ring")
    with pytest.raises(ValueError, match=r"TF_CONFIG is not set; strategy=multi_worker needs a JSON object like"):
        train(_config("multi_worker"), str(tmp_path / "run"), preset="smoke")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("rnn_mw"))
    out, single = os.path.join(tmp, "run"), os.path.join(tmp, "single")
    _corpus_of(out)
    before = _worker_dirs()
    workers = start_workers(tmp, out, module=MODULE)
    codes = wait_all(workers)
    assert codes == [0, 0], "\n".join(_tail(log) for _, _, log in workers)
    run_module(MODULE, "single", single, timeout=900)
    return out, workers, before, single


@pytest.mark.slow
def test_two_workers_train_the_one_device_weights_and_only_the_chief_writes(uninterrupted):
    out, workers, before, single = uninterrupted
    chief = check_two_workers(out, workers, before, ARTIFACTS)
    with open(os.path.join(out, METRICS)) as f:
        assert json.load(f)["epochs_done"] == EPOCHS
    # the one-device run of the same configuration: the same weights to float round-off (its last epoch's best
    # weights are what model.keras holds; the workers' callback saved the weights they ended training with)
    reference = _weights(os.path.join(single, "final.npz"))
    assert len(reference) == len(chief)
    for a, want in zip(chief, reference):
        np.testing.assert_allclose(a, want, rtol=1e-4, atol=1e-6 * max(1.0, float(np.max(np.abs(want)))))
    for v, want in zip(_model_weights(out), _model_weights(single)):  # model.keras: the best weights
        np.testing.assert_allclose(v, want, rtol=1e-4, atol=1e-6 * max(1.0, float(np.max(np.abs(want)))))


@pytest.mark.slow
def test_a_killed_rnn_worker_and_a_restart_of_both_resume_from_the_chiefs_checkpoint(uninterrupted, tmp_path):
    out = str(tmp_path / "run")
    _corpus_of(out)
    check_a_kill_resumes(str(tmp_path), out, _weights(uninterrupted[1][0][1]), module=MODULE, epochs=EPOCHS)


# ------------------------------------------------------------------------------------------ the child programs
def _mirrored_case(tmp, windows=6):
    """`darts_tf.rnn.train.fit` on the first `windows` windows of the smoke corpus under the default strategy and under
    MirroredStrategy on 2 logical devices: the final weights, the validation losses."""
    import keras
    import tensorflow as tf

    from darts_tf.data.text import load_corpus
    from darts_tf.distribute import make_strategy
    from darts_tf.rnn.train import build_model, compile_model, fit
    from tests.test_distributed_search import _configure_devices

    _configure_devices(2)
    corpus = load_corpus("smoke")
    config = _config("default", epochs=1, max_seq_len_delta=0)  # windows of bptt tokens (some shorter, min 5)
    train_ids = corpus.train[:TINY["batch_size"] * TINY["bptt"] * windows + 1]
    valid_ids = corpus.valid[:TINY["eval_batch_size"] * TINY["bptt"] * 2 + 1]
    weights, results = {}, {}
    for name in ("default", "mirrored"):
        strategy = make_strategy(name)
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = compile_model(build_model(config, corpus.vocab_size), config)
        result = fit(model, train_ids, valid_ids, config)
        weights[name] = [np.asarray(v) for v in model.weights]
        results[name] = {"val_losses": result.val_losses, "loss": result.history["loss"][-1],
                         "steps": int(model.optimizer.iterations.numpy())}
    worst = max(float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-30)
                for a, b in zip(weights["default"], weights["mirrored"]) if a.size)
    moved = max(float(np.max(np.abs(a))) for a in weights["default"])
    return {"worst": worst, "results": results, "replicas": len(tf.config.list_logical_devices("CPU")),
            "moved": moved}


def _main(argv):
    from absl import logging

    from darts_tf.rnn.train import train

    if argv[0] == "mirrored":
        print(json.dumps(_mirrored_case(argv[1])))
        return
    if argv[0] == "single":  # the one-device run of the workers' configuration; its final weights to OUT/final.npz
        args = worker_arguments([argv[1], os.path.join(argv[1], "final.npz")])
        train(_config("default"), argv[1], data_dir=_corpus_of(argv[1]), preset="smoke",
              callbacks=worker_callbacks(args))
        return
    logging.set_verbosity(logging.INFO)  # the run's log lines (role, resume) on stderr, as the scripts print them
    args = worker_arguments(argv)
    train(_config("multi_worker"), args.out, data_dir=_corpus_of(args.out), preset="smoke", resume=args.resume,
          callbacks=worker_callbacks(args))


if __name__ == "__main__":
    _main(sys.argv[1:])
