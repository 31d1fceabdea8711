"""Tests for darts_tf.rnn.train: ASGD trigger and averaging, the train step, presets, resume, and learning a
known Markov chain."""

import math
import os
import time

import numpy as np
import pytest

import keras

from darts_tf import checkpoint
from darts_tf.data.text import batchify
from darts_tf.rnn.evaluate import evaluate_perplexity
from darts_tf.rnn.networks import RNNModel
from darts_tf.run_files import BEST_WEIGHTS
from darts_tf.rnn.train import (RNN_PRESETS, AveragedSGD, TrainConfig, averaged_weights, build_model, compile_model, fit,
                                 get_preset, should_switch_to_asgd)


# ----------------------------------------------------------------------------------------------- ASGD trigger
def test_switch_needs_more_than_nonmono_earlier_epochs():
    assert not should_switch_to_asgd([], 5)
    assert not should_switch_to_asgd([5.0], 5)
    # 5 earlier epochs: not enough history even though the loss went up
    assert not should_switch_to_asgd([1.0, 2.0, 3.0, 4.0, 5.0, 9.0], 5)
    # 6 earlier epochs: compare with min(prev[:-5]) = 1.0
    assert should_switch_to_asgd([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.5], 5)


def test_switch_compares_with_the_best_loss_more_than_nonmono_epochs_ago():
    losses = [5.0, 4.0, 3.0, 2.9, 2.8, 2.7, 2.6]
    assert not should_switch_to_asgd(losses + [2.5], 5)  # still improving
    # 7 earlier epochs: min(prev[:-5]) = min(5.0, 4.0) = 4.0, although 2.6 is the best so far
    assert not should_switch_to_asgd(losses + [3.9], 5)
    assert should_switch_to_asgd(losses + [4.1], 5)  # worse than 4.0, the best of the old epochs
    assert not should_switch_to_asgd(losses + [4.0], 5)  # equal is not worse
    # the recent window is ignored: a new best 5 epochs ago does not count yet
    assert should_switch_to_asgd([3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.1], 5)
    assert not should_switch_to_asgd([3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.9], 5)
    # nonmono = 0: any epoch worse than the best so far
    assert should_switch_to_asgd([2.0, 1.0, 1.5], 0) and not should_switch_to_asgd([2.0, 1.0, 0.5], 0)
    with pytest.raises(ValueError, match="nonmono"):
        should_switch_to_asgd([1.0], -1)


# ----------------------------------------------------------------------------------------------- ASGD average
def test_averaged_sgd_average_is_the_mean_of_the_iterates_since_the_switch():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = AveragedSGD(0.1)
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)

    def step():
        grads = [rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]
        optimizer.apply(grads, model.trainable_variables)
        return [v.numpy().copy() for v in model.trainable_variables]

    before = [v.numpy().copy() for v in model.trainable_variables]
    plain = step()  # SGD: w - lr g
    assert not optimizer.is_averaging
    for _ in range(3):
        step()
    optimizer.start_averaging()
    assert optimizer.is_averaging
    iterates = [step() for _ in range(7)]
    for i, v in enumerate(model.trainable_variables):
        mean = np.mean([it[i] for it in iterates], axis=0)
        np.testing.assert_allclose(optimizer.average_of(v).numpy(), mean, rtol=1e-5, atol=1e-6)
    current = [v.numpy().copy() for v in model.trainable_variables]
    with averaged_weights(model, optimizer) as used:
        assert used
        for i, v in enumerate(model.trainable_variables):
            np.testing.assert_allclose(v.numpy(), np.mean([it[i] for it in iterates], axis=0), rtol=1e-5, atol=1e-6)
    for v, c in zip(model.trainable_variables, current):
        np.testing.assert_array_equal(v.numpy(), c)  # SGD iterates restored
    assert not np.allclose(before[0], plain[0])


def test_averaged_weights_is_a_no_op_before_the_switch():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = AveragedSGD(0.1)
    optimizer.build(model.trainable_variables)
    with averaged_weights(model, optimizer) as used:
        assert not used


# ----------------------------------------------------------------------------------------------- train step
def _window(tokens, seq_len, start=3):
    batch, width = tokens.shape
    mask = (np.arange(width - 1)[None] < seq_len).astype("float32").repeat(batch, 0)
    return {"inputs": tokens[:, :-1] * mask.astype("int32"), "targets": tokens[:, 1:] * mask.astype("int32"),
            "mask": mask, "seq_len": np.int32(seq_len), "start": np.int32(start)}


def _tiny_model(**compile_kwargs):
    model = RNNModel(12, units=6, genotype="DARTS_V2", dropout=0, dropouth=0, dropoutx=0, dropouti=0, dropoute=0,
                     seed=0)
    model.compile(optimizer=AveragedSGD(1.0), run_eagerly=True, **compile_kwargs)
    return model


def test_train_step_scales_the_step_by_seq_len_over_bptt():
    tokens = np.random.default_rng(0).integers(0, 12, (4, 9)).astype("int32")
    window = _window(tokens, 8)
    deltas = {}
    for seq_len in (4, 8):
        model = _tiny_model(bptt=8, grad_clip=1e6, weight_decay=0.0, tar_beta=0.0)
        before = [v.numpy().copy() for v in model.trainable_variables]
        model.train_step({**window, "seq_len": np.int32(seq_len)})
        deltas[seq_len] = [v.numpy() - b for v, b in zip(model.trainable_variables, before)]
    for half, full in zip(deltas[4], deltas[8]):
        np.testing.assert_allclose(2 * half, full, rtol=1e-4, atol=1e-7)


def test_train_step_skips_empty_padding_windows_and_carries_hidden():
    model = _tiny_model(bptt=8)
    tokens = np.random.default_rng(1).integers(0, 12, (4, 9)).astype("int32")
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.train_step(_window(tokens, 0))
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())
    assert int(model.optimizer.iterations.numpy()) == 0
    model.train_step(_window(tokens, 8, start=0))
    assert int(model.optimizer.iterations.numpy()) == 1
    hidden = model.carried._vars["train"].numpy()
    assert hidden.shape == (4, 6) and np.abs(hidden).sum() > 0


# ----------------------------------------------------------------------------------------------- presets
def test_presets():
    ptb, wt2 = get_preset("ptb"), get_preset("wikitext2")
    assert (ptb.units, ptb.weight_decay, ptb.batch_size, ptb.learning_rate, ptb.grad_clip) == (850, 8e-7, 64, 20.0, 0.25)
    assert (ptb.dropout, ptb.dropouth, ptb.dropoutx, ptb.dropouti, ptb.dropoute, ptb.nonmono) == (
        0.75, 0.25, 0.75, 0.2, 0.1, 5)
    assert (wt2.units, wt2.weight_decay, wt2.dropouth, wt2.dropoutx) == (700, 5e-7, 0.15, 0.75)
    assert get_preset("ptb", epochs=3).epochs == 3
    assert {"ptb", "wikitext2"} <= set(RNN_PRESETS)
    with pytest.raises(ValueError, match="Known presets: .*ptb.*wikitext2"):
        get_preset("penn")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


# ----------------------------------------------------------------------------------------------- end to end
def markov_chain(vocab=24, successors=3, seed=0):
    """A sparse random transition matrix, its stationary distribution and its entropy rate (nats/token)."""
    rng = np.random.default_rng(seed)
    P = np.zeros((vocab, vocab))
    for i in range(vocab):
        # i -> i+1 makes the chain irreducible; the other successors are random
        others = rng.choice([j for j in range(vocab) if j != (i + 1) % vocab], successors - 1, replace=False)
        P[i, [(i + 1) % vocab, *others]] = rng.dirichlet(np.ones(successors))
    w, v = np.linalg.eig(P.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    logs = np.where(P > 0, np.log(np.where(P > 0, P, 1.0)), 0.0)
    entropy_rate = float(-(pi[:, None] * P * logs).sum())
    return P, pi, entropy_rate


def sample_chain(P, n, rng):
    cumulative = P.cumsum(1)
    out, state = np.empty(n, np.int32), 0
    for t, u in enumerate(rng.random(n)):
        state = min(int(np.searchsorted(cumulative[state], u)), len(P) - 1)
        out[t] = state
    return out


MARKOV_CONFIG = TrainConfig(units=32, batch_size=32, eval_batch_size=10, test_batch_size=10, bptt=20,
                               max_seq_len_delta=10, epochs=8, nonmono=1, dropout=0.0, dropouth=0.0, dropoutx=0.0,
                               dropouti=0.0, dropoute=0.0, seed=0)


def test_learns_a_markov_chain_to_its_entropy_rate(tmp_path):
    """Measured (2 CPU cores, ~8 s of training): test perplexity 2.256 (averaged weights) vs the chain's exp(entropy rate)
    2.213 (+1.9%) and the unigram perplexity 14.42; the switch to ASGD happens after epoch 5."""
    P, pi, entropy_rate = markov_chain()
    rng = np.random.default_rng(1)
    train_ids, valid_ids, test_ids = (sample_chain(P, n, rng) for n in (40_000, 10_000, 20_000))
    true_ppl = math.exp(entropy_rate)
    unigram = np.bincount(train_ids, minlength=len(P)) / len(train_ids)
    unigram_ppl = math.exp(-(pi * np.log(unigram)).sum())
    keras.utils.set_random_seed(0)
    model = compile_model(build_model(MARKOV_CONFIG, len(P)), MARKOV_CONFIG)
    start = time.time()
    result = fit(model, train_ids, valid_ids, MARKOV_CONFIG, output_dir=str(tmp_path))
    elapsed = time.time() - start
    with averaged_weights(model) as averaged:
        test_ppl = evaluate_perplexity(model, batchify(test_ids, MARKOV_CONFIG.test_batch_size), MARKOV_CONFIG.bptt)
    print(f"Markov chain: test ppl {test_ppl:.3f}, true {true_ppl:.3f}, unigram {unigram_ppl:.2f}, "
          f"ASGD {averaged}, val losses {result.history.get('val_loss')}, {elapsed:.1f} s")
    assert abs(test_ppl - true_ppl) / true_ppl < 0.10
    assert test_ppl < unigram_ppl / 4
    assert averaged and result.history["asgd"][-1] == 1.0
    assert os.path.isfile(tmp_path / BEST_WEIGHTS) and checkpoint.has_state(str(tmp_path))
    assert result.best_val_ppl < 1.1 * true_ppl


def test_killed_run_resumes_from_the_epoch_checkpoint(tmp_path):
    config = TrainConfig(units=8, batch_size=8, eval_batch_size=4, bptt=8, max_seq_len_delta=4, epochs=2,
                            nonmono=0, dropout=0.1, dropouth=0.1, dropoutx=0.1, dropouti=0.1, dropoute=0.1, seed=5)
    rng = np.random.default_rng(0)
    train_ids, valid_ids = rng.integers(0, 10, 1200).astype("int32"), rng.integers(0, 10, 300).astype("int32")
    first = compile_model(build_model(config, 10), config)
    done = fit(first, train_ids, valid_ids, config, output_dir=str(tmp_path))
    assert done.epochs_done == 2 and len(done.val_losses) == 2
    # a new process: fresh model, restore, continue to epoch 3
    second = compile_model(build_model(config, 10), config)
    meta = checkpoint.restore_state(str(tmp_path), second, [second.optimizer])
    assert meta["epochs_done"] == 2 and meta["val_losses"] == done.val_losses
    for a, b in zip(first.variables + first.optimizer.variables, second.variables + second.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    third = compile_model(build_model(config, 10), config)
    resumed = fit(third, train_ids, valid_ids, config, output_dir=str(tmp_path), epochs=3, resume=True)
    assert resumed.epochs_done == 3 and len(resumed.history["loss"]) == 1
    assert int(third.optimizer.iterations.numpy()) > int(first.optimizer.iterations.numpy())


SMOKE_TINY_TRAIN = dict(units=8, batch_size=256, eval_batch_size=64, test_batch_size=64, bptt=20, max_seq_len_delta=5,
                        epochs=1, max_vocab=300)  # the offline corpus in a few windows, a 300-word softmax


def test_a_smoke_training_builds_the_corpus_in_memory_and_records_its_vocabulary(tmp_path):
    import json

    from darts_tf.rnn.train import train

    out = tmp_path / "run"
    metrics = train(get_preset("smoke", **SMOKE_TINY_TRAIN), str(out), preset="smoke")
    assert sorted(os.listdir(out)) == ["best.weights.h5", "genotype.json", "metrics.json", "model.keras",
                                       "run_config.json", "tensorboard", "training_state.npz", "vocab.txt"]
    record = metrics["corpus"]
    assert record["vocab_size"] == metrics["vocab_size"] == 300 and record["test"]["oov"] > 0
    assert 0 < record["test"]["oov_rate"] <= record["test"]["unk_rate"] < 1
    with open(out / "metrics.json") as f:
        assert json.load(f)["corpus"] == record
    with open(out / "run_config.json") as f:
        saved = json.load(f)
    assert saved["max_vocab"] == 300 and saved["strict_vocab"] is False and saved["data_dir"] == "smoke"


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=100_000), r"^The train split is too small for --batch_size: \d+ tokens are too few for "
                               r"batch_size=100000: "),
    (dict(test_batch_size=100_000), r"^The test split is too small for --test_batch_size: "),
])
def test_a_refused_smoke_training_leaves_no_directory(tmp_path, overrides, message):
    from darts_tf.rnn.train import train

    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train(get_preset("smoke", **{**SMOKE_TINY_TRAIN, **overrides}), str(out), preset="smoke")
    assert not out.exists()


def test_max_vocab_is_checked_with_the_config():
    with pytest.raises(ValueError, match=r"--max_vocab must be 0 \(no cap\) or >= 2 .* Received: max_vocab=-3"):
        TrainConfig(max_vocab=-3)
