"""The RNN search step under ``tf.distribute.MirroredStrategy`` on two logical CPU devices equals the one-device step on
the same global batch, in every gradient mode: alphas, weights, BatchNorm statistics, both optimisers' states and the
hidden state carried from window to window (each replica carries the rows of its share), with dropout on (each
replica masks its rows as the one-device step does) and windows of different lengths (the learning rate scaled per
window). As ``tests/test_distributed_search.py``, each case runs in a fresh process (this file as a script,
``python -m tests.rnn.test_distributed_search MODE STEPS``) that prints its findings as JSON.
"""

import json
import os
import sys

import numpy as np
import pytest

from tests.helpers import module_report
from tests.test_distributed_search import REPLICAS, _configure_devices, _replica_values, _state

GLOBAL_BATCH, VOCAB = 8, 16
SEARCH = dict(output_dir="unused", dataset="smoke", units=8, nodes=2, batch_size=GLOBAL_BATCH, bptt=4,
              max_seq_len_delta=2, dropout=0.3, dropouth=0.2, dropoutx=0.3, dropouti=0.2, dropoute=0.1, seed=5,
              learning_rate=2.0, arch_learning_rate=3e-2)


ALPHA_ATOL = 1e-4  # the end-to-end searches' alphas against the one-device search's (see the mirrored test)


def _run_case(*args, timeout=900):
    """This file as a script in a fresh process with `REPLICAS` logical CPU devices; its JSON report."""
    return module_report("tests.rnn.test_distributed_search", *args, timeout=timeout)


def _check(found):
    assert found["replicas_differ"] == []  # alphas, weights, BN statistics and optimiser slots, bit for bit
    assert found["alpha_moved"] > 1e-4
    assert found["windows"] == found["steps"] and len(set(found["seq_lens"])) > 1  # windows of different lengths
    assert found["rows_ok"]  # each replica's rows of every window
    for kind in ("alpha", "model", "optimizer", "carried"):
        assert found["worst"][kind] < 1e-4, found["worst"]
    for key, value in found["logs"]["single"].items():  # the logged losses are the global batch's
        assert found["logs"]["mirrored"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_the_unrolled_time_loop_is_the_while_loop_with_its_first_and_second_derivatives():
    """What a search step runs under several replicas (run_recurrence(unroll=True), every padded step included) against
    the one-device while loop that stops after the last real step: states, last state, accumulators, and the gradient
    and a Hessian-vector product of a loss of them, in float64."""
    import tensorflow as tf

    from darts_tf.rnn.ops import run_recurrence

    rng = np.random.default_rng(0)
    steps, batch, units = 6, 3, 4
    x = tf.constant(rng.normal(size=(steps, batch, 2 * units)))
    w = tf.constant(rng.normal(size=(units, 2 * units)) * 0.5)
    mask = tf.constant(np.repeat((np.arange(steps) < 4).astype(np.float64)[:, None, None], batch, axis=1))
    h0, v = tf.constant(rng.normal(size=(batch, units))), tf.constant(rng.normal(size=(units, 2 * units)))

    def run(unroll, w):
        def step(x_t, h):
            c, g = tf.split(x_t + h @ w, 2, axis=-1)
            new = h + tf.sigmoid(c) * (tf.tanh(g) - h)
            return new, (tf.reduce_mean(new, axis=0),)
        states, last, aux = run_recurrence(step, x, mask, h0, (tf.zeros([units], tf.float64),), unroll=unroll)
        return states, last, aux[0]

    def derivatives(unroll):
        with tf.GradientTape() as outer:
            outer.watch(w)
            with tf.GradientTape() as inner:
                inner.watch(w)
                states, last, aux = run(unroll, w)
                loss = tf.reduce_sum(tf.sin(states)) + tf.reduce_sum(last ** 2) + tf.reduce_sum(aux ** 3)
            g = inner.gradient(loss, w)
            gv = tf.reduce_sum(g * v)
        return [t.numpy() for t in (states, last, aux, g, outer.gradient(gv, w))]

    for unrolled, looped in zip(derivatives(True), derivatives(False)):
        np.testing.assert_allclose(unrolled, looped, rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # the unrolled loop above by default; with the replicas: 30 s (two traced steps)
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
    found = _run_case("search", str(tmp_path / "run"))
    assert found["windows"] > 2
    # to ALPHA_ATOL, not to round-off: over 10 windows Adam's scale-free steps turn the round-off of near-zero alpha
    # gradients into up to 6e-6 here (alpha steps are 3e-2); a wrong row split differs by 1e-2. The step tests above
    # pin the distributed step to round-off.
    for name in found["default"]:
        np.testing.assert_allclose(found["mirrored"][name], found["default"][name], rtol=0, atol=ALPHA_ATOL)
    assert found["genotypes_equal"]


@pytest.mark.slow
def test_darts_rnn_search_with_strategy_multi_worker_on_two_localhost_workers(tmp_path):
    from darts_tf.distribute import WORKER_DIR_PREFIX
    from tests.test_distributed_search import run_search_workers

    out, scratch = str(tmp_path / "run"), tmp_path / "scratch"  # scratch: the workers' temporary directories
    scratch.mkdir()
    reported = run_search_workers("tests.rnn.test_distributed_search", out, scratch)
    for name in reported[0]["multi_worker"]:  # both workers: the same alphas, bit for bit; the one-device run's
        np.testing.assert_array_equal(reported[0]["multi_worker"][name], reported[1]["multi_worker"][name])
    single = _run_case("search", str(tmp_path / "single"), "default")
    for name in single["default"]:
        np.testing.assert_allclose(reported[0]["multi_worker"][name], single["default"][name], rtol=0, atol=ALPHA_ATOL)
    assert {"genotype.json", "vocab.txt", "alphas.npz"} <= set(os.listdir(os.path.join(out, "multi_worker")))
    assert not [d for d in os.listdir(scratch) if d.startswith(WORKER_DIR_PREFIX)]  # the other worker's is gone


def test_the_rnn_search_takes_every_strategy():
    from darts_tf.rnn.search import SearchConfig

    for strategy in ("default", "auto", "mirrored", "multi_worker"):
        SearchConfig(output_dir="x", dataset="smoke", strategy=strategy).validate()
    with pytest.raises(ValueError, match=r"strategy must be one of auto, mirrored, multi_worker, default\. "
                                         r"Received: strategy='ring'"):
        SearchConfig(output_dir="x", dataset="smoke", strategy="ring").validate()


# ------------------------------------------------------------------------------------------------- the child process
def _streams(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, VOCAB, (GLOBAL_BATCH, 40)).astype(np.int32),
            rng.integers(0, VOCAB, (GLOBAL_BATCH, 40)).astype(np.int32))


def _compare(mode, steps, linear_alpha=False):
    import keras
    import tensorflow as tf

    from darts_tf.distribute import distribute_row_streams, make_strategy
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
    dataset, per_epoch = rnn_search_dataset(train, valid, config)
    seq_lens = [int(w["train"]["seq_len"]) for w in dataset.take(steps).as_numpy_iterator()]
    distributed = distribute_row_streams(mirrored, lambda a, b: rnn_search_dataset(train[a:b], valid[a:b], config)[0],
                                         GLOBAL_BATCH)
    # replica r gets rows [r B/R, (r+1) B/R) of every window of both streams, and the window's scalars as they are
    first, shares = next(iter(dataset)), mirrored.experimental_local_results(next(iter(distributed)))
    rows_ok = all(np.array_equal(np.concatenate([sh[stream][key] for sh in shares]), first[stream][key])
                  for stream in ("train", "validation") for key in ("inputs", "targets", "mask"))
    rows_ok = rows_ok and all(int(sh["train"]["seq_len"]) == int(first["train"]["seq_len"]) for sh in shares)
    for name, model in models.items():
        data = dataset if name == "single" else distributed
        history = model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False).history
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
            "steps": steps, "windows": len(seq_lens), "seq_lens": seq_lens, "per_epoch": per_epoch,
            "rows_ok": bool(rows_ok)}


def _search_case(output_dir, strategies=("default", "mirrored")):
    """darts-rnn-search's run_search for one epoch on a small corpus (first order) under each strategy: the final
    alphas and genotypes, and the windows of the epoch."""
    from darts_tf.data.text import batchify, load_corpus, smoke_corpus
    from darts_tf.genotypes import load_genotype_file
    from darts_tf.rnn.search import SearchConfig, run_search, search_windows_per_epoch

    corpus = smoke_corpus(os.path.join(os.path.dirname(os.path.abspath(output_dir)), "corpus"), max_train_tokens=400)
    found, genotypes = {}, []
    for strategy in strategies:
        config = SearchConfig(**{**SEARCH, "output_dir": os.path.join(output_dir, strategy), "dataset": "small",
                                 "data_dir": corpus, "epochs": 1, "strategy": strategy})
        result = run_search(config, verbose=0)
        found[strategy] = {k: np.asarray(v).tolist() for k, v in result["alphas"].items()}
        if strategy != "multi_worker":  # there, the chief's (checked once every worker has finished)
            genotypes.append(load_genotype_file(result["genotype_path"]))
    columns = batchify(load_corpus(corpus).train, SEARCH["batch_size"]).shape[1]
    found["windows"] = search_windows_per_epoch(columns, SEARCH["bptt"], SEARCH["seed"], 1,
                                                SEARCH["max_seq_len_delta"])[0]
    found["genotypes_equal"] = all(g == genotypes[0] for g in genotypes)
    return found


if __name__ == "__main__":
    if sys.argv[1] == "worker":  # one of the multi-worker processes (TF_CONFIG set): one CPU device each
        print(json.dumps(_search_case(sys.argv[2], strategies=("multi_worker",))))
        sys.exit(0)
    _configure_devices(REPLICAS)
    if sys.argv[1] == "search":
        print(json.dumps(_search_case(sys.argv[2], tuple(sys.argv[3:]) or ("default", "mirrored"))))
    else:
        print(json.dumps(_compare(sys.argv[1], int(sys.argv[2]), linear_alpha=sys.argv[3:] == ["sgd"])))
