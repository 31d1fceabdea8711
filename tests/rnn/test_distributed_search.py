"""The RNN search step under ``tf.distribute.MirroredStrategy`` on two logical CPU devices equals the one-device step on
the same global batch, in every gradient mode: alphas, weights, BatchNorm statistics, both optimisers' states and the
hidden state carried from window to window (each replica carries the rows of its share), with dropout on (each
replica masks its rows as the one-device step does) and windows of different lengths (the learning rate scaled per
window). As ``tests/test_distributed_search.py``, each case runs in a fresh process (this file as a script,
``python -m tests.rnn.test_distributed_search MODE STEPS``) that prints its findings as JSON.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.test_distributed_search import REPLICAS, _configure_devices, _replica_values, _state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLOBAL_BATCH, VOCAB = 8, 16
SEARCH = dict(output_dir="unused", dataset="smoke", units=8, nodes=2, batch_size=GLOBAL_BATCH, bptt=4,
              max_seq_len_delta=2, dropout=0.3, dropouth=0.2, dropoutx=0.3, dropouti=0.2, dropoute=0.1, seed=5,
              learning_rate=2.0, arch_learning_rate=3e-2)


def _run_case(*args, timeout=900):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "tests.rnn.test_distributed_search", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(found):
    assert found["replicas_differ"] == []  # alphas, weights, BN statistics and optimiser slots, bit for bit
    assert found["alpha_moved"] > 1e-4
    assert found["windows"] == found["steps"] and len(set(found["seq_lens"])) > 1  # windows of different lengths
    for kind in ("alpha", "model", "optimizer", "carried"):
        assert found["worst"][kind] < 1e-4, found["worst"]
    for key, value in found["logs"]["single"].items():  # the logged losses are the global batch's
        assert found["logs"]["mirrored"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_first_order_rnn_search_steps_equal_the_one_device_steps():
    # three windows with the search's optimisers (SGD for w, Adam for alpha)
    _check(_run_case("first_order", "3"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["second_order_fd", "second_order_exact"])
def test_second_order_rnn_search_steps_equal_the_one_device_steps(mode):
    # two windows, alpha stepped by plain SGD so that its difference is the architecture gradient's
    _check(_run_case(mode, "2", "sgd"))


@pytest.mark.slow
def test_darts_rnn_search_with_strategy_mirrored_finds_the_one_device_alphas(tmp_path):
    found = _run_case("search", str(tmp_path))
    assert found["windows"] > 2
    for name in found["default"]:
        np.testing.assert_allclose(found["mirrored"][name], found["default"][name], rtol=1e-4, atol=1e-6)
    assert found["genotypes_equal"]


def test_multi_worker_is_refused_for_the_rnn_search():
    from darts_tf.rnn.search import SearchConfig

    with pytest.raises(ValueError, match=r"--strategy=multi_worker is not available for darts-rnn-search: .*rows.* "
                                         r"--strategy=mirrored \(or auto\)\. Received: strategy='multi_worker'"):
        SearchConfig(output_dir="x", strategy="multi_worker").validate()
    SearchConfig(output_dir="x", dataset="smoke", strategy="mirrored").validate()


def test_window_scalars_become_per_row_entries():
    import tensorflow as tf

    from darts_tf.rnn.search import per_row_scalars

    window = {"inputs": tf.zeros([4, 6], tf.int32), "seq_len": tf.constant(5), "start": tf.constant(12)}
    rows = per_row_scalars(window)
    assert rows["seq_len"].numpy().tolist() == [5] * 4 and rows["start"].numpy().tolist() == [12] * 4
    assert rows["inputs"] is window["inputs"]


# ------------------------------------------------------------------------------------------------- the child process
def _streams(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, VOCAB, (GLOBAL_BATCH, 40)).astype(np.int32),
            rng.integers(0, VOCAB, (GLOBAL_BATCH, 40)).astype(np.int32))


def _compare(mode, steps, linear_alpha=False):
    import keras
    import tensorflow as tf

    from darts_tf.distribute import make_strategy
    from darts_tf.rnn.search import SearchConfig, build_search_model, rnn_search_dataset

    config = SearchConfig(**SEARCH, arch_mode=mode, epochs=1)
    train, valid = _streams()
    mirrored = make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == REPLICAS, mirrored.num_replicas_in_sync
    models = {}
    for name, strategy in (("single", tf.distribute.get_strategy()), ("mirrored", mirrored)):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            models[name] = build_search_model(config, VOCAB, strategy.num_replicas_in_sync)
            if linear_alpha:  # alpha -= grad: its difference is the gradient's (Adam's scale-free steps amplify the
                # round-off of near-zero second-order alpha gradients 30-60x: 6e-4 against 1e-5 here)
                models[name].compile(optimizer=keras.optimizers.SGD(config.learning_rate),
                                     arch_optimizer=keras.optimizers.SGD(1.0))
    models["mirrored"].set_weights(models["single"].get_weights())
    initial_alphas = [np.array(v.numpy()) for v in models["single"].arch_variables]
    logs, seq_lens = {}, []
    for name, model in models.items():
        replicas = model.distribute_strategy.num_replicas_in_sync
        dataset, per_epoch = rnn_search_dataset(train, valid, config, replicas=replicas)
        if name == "single":
            seq_lens = [int(np.reshape(w["train"]["seq_len"], [-1])[0])
                        for w in dataset.take(steps).as_numpy_iterator()]
        history = model.fit(dataset.take(steps), epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False).history
        logs[name] = {k: float(v[-1]) for k, v in history.items()}
    single, many = models["single"], models["mirrored"]
    worst = {"alpha": 0.0, "model": 0.0, "optimizer": 0.0, "carried": 0.0}
    replicas_differ = []
    for (kind, v), (_, w) in zip(_state(single), _state(many)):
        reference, copies = _replica_values(v)[0], _replica_values(w)
        if len(copies) != REPLICAS or any(not np.array_equal(copies[0], c) for c in copies[1:]):
            replicas_differ.append(w.path)
        if reference.size:
            scale = max(float(np.max(np.abs(reference))), 1e-30)
            worst[kind] = max(worst[kind], float(np.max(np.abs(copies[0] - reference))) / scale)
    for stream, var in single.carried._vars.items():  # each replica's rows, in replica order: the one-device rows
        reference = var.numpy()
        rows = np.concatenate([x.numpy() for x in many.distribute_strategy.experimental_local_results(
            many.carried._vars[stream])])
        if reference.size:
            assert rows.shape == reference.shape, (stream, rows.shape, reference.shape)
            worst["carried"] = max(worst["carried"], float(np.max(np.abs(rows - reference))) /
                                   max(float(np.max(np.abs(reference))), 1e-30))
    moved = max(float(np.max(np.abs(v.numpy() - a0))) for v, a0 in zip(single.arch_variables, initial_alphas))
    return {"mode": mode, "worst": worst, "replicas_differ": replicas_differ, "logs": logs, "alpha_moved": moved,
            "steps": steps, "windows": len(seq_lens), "seq_lens": seq_lens, "per_epoch": per_epoch}


def _search_case(output_dir):
    """darts-rnn-search's run_search for one epoch on a small corpus (first order) under each strategy: the final
    alphas and genotypes, and the windows of the epoch."""
    from darts_tf.data.text import batchify, load_corpus, smoke_corpus
    from darts_tf.genotypes import load_genotype_file
    from darts_tf.rnn.search import SearchConfig, run_search, search_windows_per_epoch

    corpus = smoke_corpus(os.path.join(output_dir, "corpus"), max_train_tokens=400)
    found, genotypes = {}, []
    for strategy in ("default", "mirrored"):
        config = SearchConfig(**{**SEARCH, "output_dir": os.path.join(output_dir, strategy), "dataset": "small",
                                 "data_dir": corpus, "epochs": 1, "strategy": strategy})
        result = run_search(config, verbose=0)
        found[strategy] = {k: np.asarray(v).tolist() for k, v in result["alphas"].items()}
        genotypes.append(load_genotype_file(result["genotype_path"]))
    columns = batchify(load_corpus(corpus).train, SEARCH["batch_size"]).shape[1]
    found["windows"] = search_windows_per_epoch(columns, SEARCH["bptt"], SEARCH["seed"], 1,
                                                SEARCH["max_seq_len_delta"])[0]
    found["genotypes_equal"] = genotypes[0] == genotypes[1]
    return found


if __name__ == "__main__":
    _configure_devices(REPLICAS)
    if sys.argv[1] == "search":
        print(json.dumps(_search_case(sys.argv[2])))
    else:
        print(json.dumps(_compare(sys.argv[1], int(sys.argv[2]), linear_alpha=sys.argv[3:] == ["sgd"])))
