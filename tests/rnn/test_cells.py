"""Tests for the recurrent cells (darts_tf.rnn.networks.DARTSCell, darts_tf.rnn.search_space.RNNSearchCell): the derived and the search recurrent cell."""

import numpy as np
import pytest


from darts_tf.genotypes import RNN_GENOTYPES, RecurrentGenotype
from darts_tf.rnn.networks import DARTSCell
from darts_tf.rnn.ops import num_search_edges
from darts_tf.rnn.search_space import RNNSearchCell

ACT = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
       "identity": lambda x: x}


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_darts_step(x, h_prev, w0, ws, genotype):
    """One time step of the derived cell, written from the paper's equations (no dropout)."""
    nhid = h_prev.shape[-1]
    ch = np.concatenate([x, h_prev], -1) @ w0
    c, h = ch[:, :nhid], ch[:, nhid:]
    states = [h_prev + sigmoid(c) * (np.tanh(h) - h_prev)]
    for (name, pred), w in zip(genotype.recurrent, ws):
        s_prev = states[pred]
        ch = s_prev @ w
        c, h = ch[:, :nhid], ch[:, nhid:]
        states.append(s_prev + sigmoid(c) * (ACT[name](h) - s_prev))
    return np.mean([states[i] for i in genotype.concat], axis=0)


def _weights(cell):
    return cell.w0.numpy(), [w.numpy() for w in cell.node_kernels]


@pytest.mark.parametrize("name", ["DARTS_V2", "DARTS_V1", "ENAS"])
def test_derived_cell_matches_numpy_reference(name):
    genotype = RNN_GENOTYPES[name]
    rng = np.random.default_rng(0)
    cell = DARTSCell(6, genotype=genotype, init_range=0.5, seed=1)
    x = rng.normal(size=(3, 1, 5)).astype("float32")
    h0 = rng.normal(size=(3, 6)).astype("float32")
    outputs, last = cell(x, h0, None, training=False)
    assert outputs.shape == (3, 1, 6) and last.shape == (3, 6)
    w0, ws = _weights(cell)
    assert w0.shape == (11, 12) and len(ws) == genotype.steps and ws[0].shape == (6, 12)
    expected = numpy_darts_step(x[:, 0], h0, w0, ws, genotype)
    np.testing.assert_allclose(last.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs.numpy()[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_derived_cell_recurrence_over_time_matches_numpy():
    genotype = RNN_GENOTYPES["DARTS_V2"]
    rng = np.random.default_rng(1)
    cell = DARTSCell(4, genotype=genotype, init_range=0.5)
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    h = np.zeros((2, 4), "float32")
    outputs, last = cell(x, h, None, training=False)
    w0, ws = _weights(cell)
    for t in range(5):
        h = numpy_darts_step(x[:, t], h, w0, ws, genotype)
        np.testing.assert_allclose(outputs.numpy()[:, t], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last.numpy(), h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("skip_padding", [True, False])
def test_mask_keeps_hidden_unchanged_on_padding(skip_padding):
    rng = np.random.default_rng(2)
    cell = DARTSCell(4, genotype="DARTS_V2", init_range=0.5, skip_padding=skip_padding)
    x = rng.normal(size=(2, 6, 4)).astype("float32")
    h0 = rng.normal(size=(2, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 0, 0]], "float32")
    outputs, last = cell(x, h0, mask, training=False)
    out = outputs.numpy()
    # padded tail: the state stays that of the last real step
    np.testing.assert_array_equal(out[:, 4], out[:, 3])
    np.testing.assert_array_equal(out[:, 5], out[:, 3])
    np.testing.assert_array_equal(last.numpy(), out[:, 3])
    # a masked step inside row 1 carries the previous state
    np.testing.assert_array_equal(out[1, 1], out[1, 0])
    # row 0 equals running the cell on the 4 real steps only
    _, last_short = cell(x[:1, :4], h0[:1], None, training=False)
    np.testing.assert_allclose(last.numpy()[0], last_short.numpy()[0], rtol=1e-6, atol=1e-7)
    # an all-padding window leaves the hidden state exactly as it was
    _, same = cell(x, h0, np.zeros_like(mask), training=False)
    np.testing.assert_array_equal(same.numpy(), h0)


def test_variational_dropout_masks_only_in_training():
    cell = DARTSCell(8, genotype="DARTS_V2", dropoutx=0.5, dropouth=0.5, init_range=0.5, seed=3)
    x = np.ones((4, 3, 8), "float32")
    h0 = np.zeros((4, 8), "float32")
    a, _ = cell(x, h0, None, training=False)
    b, _ = cell(x, h0, None, training=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c, _ = cell(x, h0, None, training=True)
    d, _ = cell(x, h0, None, training=True)
    assert not np.allclose(c.numpy(), a.numpy())
    assert not np.allclose(c.numpy(), d.numpy())  # a new mask per call (sequence batch)


def test_search_cell_shapes_weights_and_batchnorm_statistics():
    cell = RNNSearchCell(5, steps=8, seed=0)
    assert num_search_edges(8) == 36
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 7, 5)).astype("float32")
    h0 = np.zeros((4, 5), "float32")
    alpha = 1e-3 * rng.normal(size=(36, 5)).astype("float32")
    outputs, last = cell(x, h0, None, training=True, alpha=alpha)
    assert outputs.shape == (4, 7, 5) and last.shape == (4, 5)
    assert [tuple(w.shape) for w in cell.trainable_weights] == [(10, 10)] + [(5, 10)] * 8
    assert not np.allclose(cell.moving_mean.numpy(), 0.0)  # updated from the batch moments
    out_eval, _ = cell(x, h0, None, training=False, alpha=alpha)
    assert np.all(np.isfinite(out_eval.numpy()))
    with pytest.raises(ValueError, match="alpha"):
        cell(x, h0, None, training=False)


def test_search_cell_none_only_alpha_gives_zero_nodes():
    """With all weight on 'none' every node is 0 before BatchNorm; the output is then 0 in training."""
    cell = RNNSearchCell(3, steps=2, init_range=0.5)
    x = np.random.default_rng(0).normal(size=(5, 2, 3)).astype("float32")
    alpha = np.full((3, 5), -1e4, "float32")
    alpha[:, 0] = 1e4
    outputs, _ = cell(x, np.zeros((5, 3), "float32"), None, training=True, alpha=alpha)
    np.testing.assert_allclose(outputs.numpy(), 0.0, atol=1e-5)


def test_cells_config_round_trip():
    genotype = RecurrentGenotype(recurrent=[("tanh", 0), ("relu", 1)], concat=[1, 2])
    cell = DARTSCell(4, genotype=genotype, dropoutx=0.1, dropouth=0.2, seed=7, skip_padding=False)
    clone = DARTSCell.from_config(cell.get_config())
    assert clone.genotype == genotype and clone.dropoutx == 0.1 and clone.seed == 7 and not clone.skip_padding
    search = RNNSearchCell(4, steps=3, dropouth=0.25)
    again = RNNSearchCell.from_config(search.get_config())
    assert again.steps == 3 and again.dropouth == 0.25 and again.primitives == search.primitives


def test_bad_arguments_tell_the_fix():
    with pytest.raises(ValueError, match="dropoutx"):
        DARTSCell(4, dropoutx=1.0)
    with pytest.raises(ValueError, match="units"):
        DARTSCell(0)
    with pytest.raises(ValueError, match="primitives"):
        RNNSearchCell(4, primitives=("none", "gelu"))
    with pytest.raises(ValueError, match="genotype"):
        DARTSCell(4, genotype=3)
