"""Tests for darts_tf.rnn.networks and darts_tf.rnn.search_space: parameter counts, the search supernet under every bilevel mode, .keras round trip."""

import dataclasses

import numpy as np
import pytest

import keras
import tensorflow as tf

from darts_tf.data.text import batchify, lm_dataset, lm_search_dataset
from darts_tf.genotypes import RecurrentGenotype
from darts_tf.rnn.networks import RNNModel
from darts_tf.rnn.ops import masked_mean_cross_entropy, temporal_activation_penalty
from darts_tf.rnn.search_space import RNNSearchNetwork

MODES = ("first_order", "second_order_exact", "second_order_fd")


def _bilevel(mode, **settings):
    """The RNN search's bilevel settings (the reference's) in `mode`."""
    return dataclasses.replace(RNNSearchNetwork.default_bilevel, mode=mode, **settings)


def test_darts_v2_ptb_model_has_23m_parameters():
    """Embedding 10000 x 850 (tied with the decoder) + decoder bias 10000 + W0 1700 x 1700 + 8 x (850 x 1700):
    8,500,000 + 10,000 + 2,890,000 + 11,560,000 = 22,960,000 (paper: 23M)."""
    model = RNNModel(10000, units=850, genotype="DARTS_V2")
    expected = 10000 * 850 + 10000 + (2 * 850) * (2 * 850) + 8 * 850 * (2 * 850)
    assert expected == 22_960_000
    assert model.count_params() == expected
    assert len(model.trainable_variables) == 2 + 1 + 8  # embedding, bias, W0, W1..W8


def test_enas_cell_same_order_as_paper():
    """ENAS has 11 nodes: 8,510,000 + 2,890,000 + 11 x 1,445,000 = 27,295,000 (paper's ENAS row: 24M)."""
    model = RNNModel(10000, units=850, genotype="ENAS")
    assert model.count_params() == 27_295_000
    assert 20e6 < model.count_params() < 30e6


def test_wikitext2_size_model_is_33m():
    """A.2.4: 700 units on WikiText-2's 33,278 words: 33,278 x 700 + 33,278 + 1400^2 + 8 x 700 x 1400 = 33M."""
    model = RNNModel(33278, units=700, genotype="DARTS_V2")
    assert model.count_params() == 33278 * 700 + 33278 + 1400 * 1400 + 8 * 700 * 1400
    assert round(model.count_params() / 1e6) == 33


def test_losses_ignore_padding():
    logits = np.zeros((1, 3, 4), "float32")
    targets = np.zeros((1, 3), "int32")
    mask = np.array([[1, 1, 0]], "float32")
    logits[0, 2, 1] = 100.0  # a padded position with a huge loss
    np.testing.assert_allclose(float(masked_mean_cross_entropy(targets, logits, mask)), np.log(4), rtol=1e-6)
    h = np.array([[[0.0], [1.0], [5.0]]], "float32")
    np.testing.assert_allclose(float(temporal_activation_penalty(h, mask)), 1.0)
    assert float(masked_mean_cross_entropy(targets, logits, np.zeros_like(mask))) == 0.0


def test_rnn_model_outputs_and_weight_tying():
    model = RNNModel(30, units=8, genotype="DARTS_V1", seed=0)
    tokens = np.random.default_rng(0).integers(0, 30, (3, 5)).astype("int32")
    out = model({"tokens": tokens}, training=False)
    assert out["logits"].shape == (3, 5, 30) and out["hidden"].shape == (3, 8) and out["rnn_outputs"].shape == (3, 5, 8)
    expected = out["rnn_outputs"].numpy() @ model.embedding.embeddings.numpy().T + model.embedding.bias.numpy()
    np.testing.assert_allclose(out["logits"].numpy(), expected, rtol=1e-5, atol=1e-6)
    train_out = model({"tokens": tokens}, training=True)
    assert np.all(np.isfinite(train_out["logits"].numpy()))


def test_rnn_model_saves_and_reloads_after_training(tmp_path):
    genotype = RecurrentGenotype(recurrent=[("relu", 0), ("tanh", 1), ("sigmoid", 1)], concat=[1, 2, 3])
    model = RNNModel(20, units=6, genotype=genotype, seed=1)
    from darts_tf.rnn.train import AveragedSGD
    model.compile(optimizer=AveragedSGD(1.0), bptt=5)
    ids = np.random.default_rng(0).integers(0, 20, 400).astype("int32")
    dataset, steps = lm_dataset(batchify(ids, 4), 5, max_seq_len_delta=2)
    model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)
    path = str(tmp_path / "rnn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, RNNModel) and loaded.genotype == genotype
    assert loaded.bptt == 5 and isinstance(loaded.optimizer, AveragedSGD)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    tokens = ids[:12].reshape(2, 6)
    hidden = np.random.default_rng(1).normal(size=(2, 6)).astype("float32")
    a = model({"tokens": tokens, "hidden": hidden}, training=False)
    b = loaded({"tokens": tokens, "hidden": hidden}, training=False)
    np.testing.assert_array_equal(a["logits"].numpy(), b["logits"].numpy())
    np.testing.assert_array_equal(a["hidden"].numpy(), b["hidden"].numpy())


def _search_batch(vocab=16, batch=8, bptt=6):
    ids = np.random.default_rng(0).integers(0, vocab, 3000).astype(np.int32)
    dataset, steps = lm_search_dataset(batchify(ids[:2400], batch), batchify(ids[2400:], batch), bptt, seed=0,
                                       variable_length=False, max_seq_len_delta=0)
    return dataset, next(iter(dataset))


def _search_net(mode, vocab=16, run_eagerly=True):
    keras.utils.set_random_seed(0)
    net = RNNSearchNetwork(vocab, units=12, steps=3, bilevel=_bilevel(mode), seed=0, dropout=0.2, dropouth=0.1,
                           dropoutx=0.2, dropouti=0.1)
    net.build()
    net.compile(optimizer=keras.optimizers.SGD(1.0), arch_optimizer=keras.optimizers.Adam(3e-3, 0.9, 0.999),
                run_eagerly=run_eagerly)
    return net


def _cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_search_network_structure():
    net = RNNSearchNetwork(50, units=10, seed=0)
    net.build()
    assert net.arch_variables[0].shape == (36, 5)
    assert abs(float(np.std(net.alpha.numpy())) - 1e-3) < 5e-4  # 1e-3 * N(0, 1) as the reference
    assert all(v is not net.alpha for v in net.weight_variables)
    tokens = np.zeros((2, 4), "int32")
    out = net({"tokens": tokens, "mask": np.ones((2, 4), "float32")}, training=True)
    assert out["logits"].shape == (2, 4, 50) and out["hidden"].shape == (2, 10)
    assert net.search_accuracy(None, out) is None
    assert len(net.genotype().recurrent) == 8


def test_exact_and_finite_difference_alpha_gradients_agree():
    """Measured: cosine(exact, fd) = 0.9996 (tiny net, 3 nodes, xi = 1; over init seeds 0-5: 0.9936-0.9998);
    first order is far from both."""
    _, batch = _search_batch()
    grads = {}
    for mode in MODES:
        net = _search_net(mode)
        g, loss, outputs = net.unrolled_alpha_gradient(batch["train"], batch["validation"])
        grads[mode] = g[0].numpy()
        assert np.all(np.isfinite(grads[mode])) and np.isfinite(float(loss))
        assert outputs["hidden"].shape == (8, 12)
    cos_exact_fd = _cosine(grads["second_order_exact"], grads["second_order_fd"])
    print(f"cosine(exact, fd) = {cos_exact_fd:.5f}")
    assert cos_exact_fd > 0.99, cos_exact_fd
    assert _cosine(grads["second_order_exact"], grads["first_order"]) < 0.9
    assert not np.allclose(grads["first_order"], grads["second_order_exact"], rtol=0.1)


def test_exact_alpha_gradient_is_the_finite_difference_limit_in_float64():
    """In float64 with a tiny finite-difference step the two second-order modes must agree to round-off (measured
    2.4e-10 of the Hessian term). With tf.nn.moments in the cell's BatchNorm (a wrong variance Hessian) they
    differed by 9.5%, which the float32 cosine test above did not see. The forward-over-reverse check of the CNN is
    not available here (forward mode does not go through the time loop), and says so."""
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        _, batch = _search_batch()
        grads = {}
        for mode in MODES:
            net = _search_net(mode, run_eagerly=False)
            net.bilevel = dataclasses.replace(net.bilevel, fd_epsilon=1e-6)
            grads[mode] = tf.function(lambda t, v: net.unrolled_alpha_gradient(t, v)[0][0])(
                batch["train"], batch["validation"]).numpy()
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)
    exact, fd = grads["second_order_exact"], grads["second_order_fd"]
    assert exact.dtype == np.float64
    scale = np.abs(exact - grads["first_order"]).max()
    assert np.abs(exact - fd).max() < 1e-7 * scale
    with pytest.raises(ValueError, match="exact_hvp='forward' is not available for RNNSearchNetwork"):
        RNNSearchNetwork(16, units=12, steps=3, bilevel=_bilevel("second_order_exact", exact_hvp="forward"))


@pytest.mark.parametrize("mode", MODES)
def test_search_train_step_runs_and_carries_hidden(mode):
    dataset, _ = _search_batch()
    net = _search_net(mode)
    alpha_before = net.alpha.numpy().copy()
    weights_before = [v.numpy().copy() for v in net.weight_variables]
    history = net.fit(dataset.take(2), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    assert not np.allclose(net.alpha.numpy(), alpha_before)
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(weights_before, net.weight_variables))
    for stream in ("train", "validation"):
        hidden = net.carried._vars[stream].numpy()
        assert hidden.shape == (8, 12) and np.all(np.isfinite(hidden)) and np.abs(hidden).sum() > 0


@pytest.mark.slow
def test_second_order_modes_in_graph_mode():
    """The search step as ``fit`` runs it (``tf.function``): nested gradients through the while loop (~60 s)."""
    dataset, batch = _search_batch()
    grads = {}
    for mode in ("second_order_exact", "second_order_fd"):
        net = _search_net(mode, run_eagerly=False)
        grads[mode] = tf.function(lambda t, v: net.unrolled_alpha_gradient(t, v)[0][0])(
            batch["train"], batch["validation"]).numpy()
        history = net.fit(dataset.take(2), epochs=1, verbose=0).history
        assert np.isfinite(history["loss"][0])
    assert _cosine(grads["second_order_exact"], grads["second_order_fd"]) > 0.99


@pytest.mark.slow  # ~100 s: every mode's gradients with and without the padding tail
def test_padding_tail_is_skipped_without_changing_any_gradient():
    """Variable-length windows are padded to bptt + delta; the time loop stops after the last real step. Every
    mode's alpha gradient (the exact one inside tf.function: a second-order gradient through the data-dependent trip
    count) equals the one of a loop that runs the padded tail too."""
    ids = np.random.default_rng(0).integers(0, 16, 3000).astype(np.int32)
    dataset, _ = lm_search_dataset(batchify(ids[:2400], 8), batchify(ids[2400:], 8), 6, seed=3,
                                   variable_length=True, max_seq_len_delta=6)
    batch = next(iter(dataset))
    for stream in ("train", "validation"):
        mask = batch[stream]["mask"].numpy()
        assert mask.shape[1] == 12 and mask[:, -1].sum() == 0 and mask[:, 0].all()  # a padded tail to skip
    for mode in MODES:
        grads = []
        for skip in (True, False):
            net = _search_net(mode, run_eagerly=False)
            net.cell.skip_padding = skip
            grads.append(tf.function(lambda t, v: net.unrolled_alpha_gradient(t, v)[0][0])(
                batch["train"], batch["validation"]).numpy())
        assert np.abs(grads[0]).sum() > 0
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7, err_msg=mode)


@pytest.mark.slow  # ~55 s (both exact variants traced)
def test_exact_recompute_is_bit_for_bit_the_kept_tape_with_dropout():
    """The exact mode recomputes the virtual step's pass for the Hessian term (lower peak memory); with the search
    network's dropout on, it must draw the same masks as the first pass, so both give the same gradient."""
    _, batch = _search_batch()
    grads = []
    for recompute in (True, False):
        net = _search_net("second_order_exact", run_eagerly=False)
        net.bilevel = dataclasses.replace(net.bilevel, exact_recompute=recompute)
        grads.append(tf.function(lambda t, v: net.unrolled_alpha_gradient(t, v)[0][0])(
            batch["train"], batch["validation"]).numpy())
    first = _search_net("first_order").unrolled_alpha_gradient(batch["train"], batch["validation"])[0][0].numpy()
    assert _cosine(grads[0], first) < 0.99
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("mode", ["first_order", pytest.param("second_order_exact", marks=pytest.mark.slow)])
def test_alpha_gradient_compiles_with_xla_and_matches(mode):
    """jit_compile=True: the time loop (a data-dependent trip count) and, in the exact mode, its second-order
    gradient compile with XLA (no gather along a non-leading axis, no broadcasting BatchMatMul in the loop) and give
    the graph-mode gradient. Dropout is off: XLA draws different random numbers."""
    _, batch = _search_batch()
    grads = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        net = RNNSearchNetwork(16, units=12, steps=3, bilevel=_bilevel(mode), seed=0, dropout=0.0, dropouth=0.0,
                               dropoutx=0.0, dropouti=0.0, dropoute=0.0)
        net.build()
        net.compile(optimizer=keras.optimizers.SGD(1.0), arch_optimizer=keras.optimizers.Adam(3e-3))
        step = tf.function(lambda t, v: net.unrolled_alpha_gradient(t, v)[0][0], jit_compile=jit)
        grads.append(step(batch["train"], batch["validation"]).numpy())
    assert np.abs(grads[0]).sum() > 0
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-4, atol=1e-8)


def test_search_network_genotype_is_what_its_saved_alphas_encode():
    """genotype() ranks predecessors by softmax(alpha) once, as the reference and as the derive stage does from
    alphas.npz (a second softmax over the probabilities reorders rows: the derive stage caught the mismatch)."""
    from darts_tf.genotypes import derive_from_alphas
    net = RNNSearchNetwork(16, units=4, seed=0)
    net.build()
    rng = np.random.default_rng(0)
    for _ in range(20):
        for scale in (3.0, 1e-3, 1e-6):  # spread-out and near-tied alphas (a search after a few steps)
            net.alpha.assign(rng.normal(0, scale, net.alpha.shape).astype("float32"))
            assert net.genotype() == derive_from_alphas(net.alphas_numpy())


def test_search_network_defaults_to_the_search_configs_bilevel_settings_and_round_trips():
    """Its default is what darts-rnn-search builds (the reference's: the virtual step clipped to grad_clip, unlike
    the CNN's); get_config carries the config."""
    from darts_tf.rnn.search import SearchConfig

    assert RNNSearchNetwork.default_bilevel == SearchConfig().bilevel_config()
    assert RNNSearchNetwork.default_bilevel.unrolled_grad_clip == SearchConfig().grad_clip
    net = RNNSearchNetwork(16, units=4, steps=2, seed=0, bptt=5, bilevel=_bilevel("second_order_fd", xi=0.5))
    clone = RNNSearchNetwork.from_config(net.get_config())
    assert clone.bilevel == net.bilevel and clone.get_config() == net.get_config()
