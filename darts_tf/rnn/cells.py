"""The DARTS recurrent cell (paper sect. 2.1 and A.1.2) as Keras 3 layers.

Every cell starts from node 0, a highway node built from the input and the previous hidden state::

    [c, h] = [x_t * mask_x, h_{t-1} * mask_h] W0,    s0 = h_{t-1} + sigmoid(c) * (tanh(h) - h_{t-1})

and node i (i >= 1) reads a predecessor state s_j through its own linear map W_i (nhid x 2 nhid)::

    [c, h] = (s_j * mask_h) W_i,    s_i = s_j + sigmoid(c) * (f(h) - s_j),    f in tanh / relu / sigmoid / identity.

``RNNSearchCell`` mixes all predecessors and activations with softmax(alpha) (one W_i per node shared by all of its
incoming edges, BatchNorm without affine on every node); ``DARTSCell`` is the discrete cell of a
``RecurrentGenotype``. Both run the time loop as one ``tf.while_loop`` over ``TensorArray``s with a fixed length and
honour a step mask: where ``mask == 0`` (padding) the hidden state is carried unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf
from keras import ops

from darts_tf.ops import moments as bn_moments
from darts_tf.genotypes import RNN_PRIMITIVES, RNN_STEPS, RecurrentGenotype, genotype_from_dict, resolve_genotype

INIT_RANGE = 0.04  # the reference's uniform(-0.04, 0.04) initialisation of every recurrent matrix
BN_EPSILON = 1e-5  # torch.nn.BatchNorm1d defaults, as the reference search cell
BN_MOMENTUM = 0.1

ACTIVATIONS: Dict[str, Callable[[Any], Any]] = {
    "tanh": ops.tanh,
    "relu": ops.relu,
    "sigmoid": ops.sigmoid,
    "identity": lambda x: x,
}


def num_search_edges(steps: int = RNN_STEPS) -> int:
    """Edges of a search cell: node i (1-based) has i predecessors (states 0..i-1), so 1 + 2 + ... + steps."""
    return steps * (steps + 1) // 2


def as_recurrent_genotype(genotype: Union[str, Dict[str, Any], RecurrentGenotype]) -> RecurrentGenotype:
    """A ``RecurrentGenotype`` from itself, its ``to_dict()`` form, a published name or a JSON path."""
    if isinstance(genotype, RecurrentGenotype):
        return genotype
    if isinstance(genotype, dict):
        return genotype_from_dict(genotype, kind="rnn")
    if isinstance(genotype, str):
        return resolve_genotype(genotype, kind="rnn")
    raise ValueError(f"genotype must be a RecurrentGenotype, its dict, a published name or a JSON path. "
                     f"Received: genotype={genotype!r}")


def _check_rate(name: str, rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} is a dropout rate in [0, 1). Received: {name}={rate}")
    return rate


def variational_mask(shape, rate: float, seed_generator, dtype="float32"):
    """A locked (variational) dropout mask, Gal & Ghahramani 2016: Bernoulli(1 - rate) / (1 - rate), drawn once."""
    keep = 1.0 - rate
    noise = keras.random.uniform(shape, dtype=dtype, seed=seed_generator)
    return ops.cast(noise < keep, dtype) / keep


def run_recurrence(step_fn, x_proj, step_mask, h0, aux0: Tuple = (), skip_padding: bool = True):
    """The time loop: ``h_t = m_t * h_new + (1 - m_t) * h_{t-1}`` with ``h_new, aux_inc = step_fn(x_proj_t, h_{t-1})``.

    ``x_proj`` [T, B, K] and ``step_mask`` [T, B, 1] are time-major; ``aux`` accumulators (e.g. BatchNorm moments)
    add ``aux_inc`` weighted by the fraction of real rows at that step. One ``tf.while_loop`` over
    ``TensorArray``s (gradients, including second order, stay O(T)), at most T iterations (XLA's static bound).
    With ``skip_padding`` the loop stops after the last step that has a real row: the reference's variable-length
    windows (about bptt) are padded to bptt + 20, and that all-padding tail would otherwise cost as much as real
    steps. The tail's states are the last real state, as the mask would have made them. (A per-step ``tf.cond``
    did the same before; TF 2.21 cannot take the second-order gradient of a cond inside a while loop, which the
    exact unrolled mode needs, while a data-dependent trip count differentiates twice.)
    Returns (states [T, B, H], last state [B, H], aux).
    """
    steps = x_proj.shape[0]
    if steps is None:
        steps = tf.shape(x_proj)[0]
    x_ta = tf.TensorArray(x_proj.dtype, size=steps, element_shape=x_proj.shape[1:]).unstack(x_proj)
    m_ta = tf.TensorArray(step_mask.dtype, size=steps, element_shape=step_mask.shape[1:]).unstack(step_mask)
    out_ta = tf.TensorArray(h0.dtype, size=steps, element_shape=h0.shape)

    def body(t, h, aux, out):
        m = m_ta.read(t)
        h_new, aux_inc = step_fn(x_ta.read(t), h)
        h = m * h_new + (1.0 - m) * h
        weight = tf.reduce_mean(m)
        aux = tuple(a + weight * inc for a, inc in zip(aux, aux_inc))
        return t + 1, h, aux, out.write(t, h)

    # parallel_iterations=1: the steps depend on each other anyway, and overlapping iterations made the
    # second-order gradient loop (exact unrolled mode) collide on AddN's per-iteration temporary variables
    # ("Resource .../AddN/tmp_var ... already exists") at 300 units / batch 256.
    trips = steps
    if skip_padding:  # 1 + the last step with a real row (at least one step, which the mask keeps neutral)
        real = tf.reduce_any(step_mask > 0, axis=list(range(1, len(step_mask.shape))))
        trips = tf.maximum(tf.reduce_max(tf.where(real, tf.range(1, steps + 1), 0)), 1)
    _, h_last, aux, out_ta = tf.while_loop(lambda t, *_: t < trips, body, (tf.constant(0), h0, tuple(aux0), out_ta),
                                           maximum_iterations=steps, parallel_iterations=1)
    states = out_ta.stack()
    if skip_padding:  # the tail after the loop's last step (never written) carries the last state; static shapes
        # for XLA (a gather of the written steps would be dynamic, and a gather with repeated indices has a scatter
        # for gradient, which overwrites instead of adding)
        written = tf.range(steps)[:, None, None] < trips
        states = tf.where(written, states, h_last[None])
    states.set_shape([x_proj.shape[0]] + list(h0.shape))
    return states, h_last, aux


class RecurrentCellBase(keras.layers.Layer):
    """Node 0, the variational dropout masks and the time loop shared by the search and the derived cell.

    ``call(inputs [B, T, ninp], hidden [B, nhid], step_mask [B, T] or None, training)`` returns
    (outputs [B, T, nhid], last hidden [B, nhid]). Subclasses define ``num_nodes`` and ``_nodes``.
    """

    def __init__(self, units: int, dropoutx: float = 0.0, dropouth: float = 0.0, init_range: float = INIT_RANGE,
                 seed: Optional[int] = None, skip_padding: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.skip_padding = bool(skip_padding)
        if int(units) <= 0:
            raise ValueError(f"units must be a positive integer. Received: units={units}")
        self.units = int(units)
        self.dropoutx = _check_rate("dropoutx", dropoutx)
        self.dropouth = _check_rate("dropouth", dropouth)
        self.init_range = float(init_range)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def num_nodes(self) -> int:
        raise NotImplementedError

    def _initializer(self, index: int):
        """uniform(-init_range, init_range); with a seed, a distinct derived seed per matrix (reproducible)."""
        seed = None if self.seed is None else int(self.seed) * 1009 + index
        return keras.initializers.RandomUniform(-self.init_range, self.init_range, seed=seed)

    def build(self, input_shape):
        self.input_dim = int(input_shape[-1])
        self.w0 = self.add_weight(shape=(self.input_dim + self.units, 2 * self.units), initializer=self._initializer(0),
                                  name="w0")
        self.node_kernels = [self.add_weight(shape=(self.units, 2 * self.units), initializer=self._initializer(i + 1),
                                             name=f"w{i + 1}") for i in range(self.num_nodes)]

    def _initial_aux(self, training) -> Tuple:
        return ()

    def _finish_aux(self, aux, training, real_steps) -> None:
        """Uses the loop's accumulators once the sequence is done (the search cell's BatchNorm statistics)."""

    def _nodes(self, s0, h_mask, training, **cell_args):
        """(cell output, aux increments) from the normalised or raw node-0 state."""
        raise NotImplementedError

    def _init_state(self, x_proj_t, h_prev, h_mask):
        hh = h_prev if h_mask is None else h_prev * h_mask
        c, h = ops.split(x_proj_t + ops.matmul(hh, self.w0[self.input_dim:]), 2, axis=-1)
        return h_prev + ops.sigmoid(c) * (ops.tanh(h) - h_prev)

    def _node_update(self, s_prev, kernel, h_mask, activation: str):
        inp = s_prev if h_mask is None else s_prev * h_mask
        c, h = ops.split(ops.matmul(inp, kernel), 2, axis=-1)
        return s_prev + ops.sigmoid(c) * (ACTIVATIONS[activation](h) - s_prev)

    def call(self, inputs, hidden, step_mask=None, training=False, **cell_args):
        inputs = ops.convert_to_tensor(inputs)
        batch = ops.shape(inputs)[0]
        x_mask = h_mask = None
        if training and self.dropoutx > 0:
            x_mask = variational_mask((batch, self.input_dim), self.dropoutx, self.seed_generator, inputs.dtype)
        if training and self.dropouth > 0:
            h_mask = variational_mask((batch, self.units), self.dropouth, self.seed_generator, inputs.dtype)
        x = inputs if x_mask is None else inputs * x_mask[:, None, :]
        # The input half of node 0's map does not depend on the recurrence: one matmul for all time steps.
        x_proj = ops.einsum("btd,dk->tbk", x, self.w0[: self.input_dim])
        if step_mask is None:
            step_mask = ops.ones(ops.shape(inputs)[:2], dtype=inputs.dtype)
        mask_tm = ops.transpose(ops.cast(step_mask, inputs.dtype))[:, :, None]

        def step(x_proj_t, h_prev):
            return self._nodes(self._init_state(x_proj_t, h_prev, h_mask), h_mask, training, **cell_args)

        states, last, aux = run_recurrence(step, x_proj, mask_tm, ops.cast(hidden, inputs.dtype),
                                              self._initial_aux(training), skip_padding=self.skip_padding)
        real_steps = ops.maximum(ops.sum(mask_tm) / ops.cast(batch, mask_tm.dtype), 1.0)
        self._finish_aux(aux, training, real_steps)
        return ops.transpose(states, (1, 0, 2)), last

    def compute_output_shape(self, input_shape, hidden_shape=None, step_mask_shape=None):
        return tuple(input_shape[:-1]) + (self.units,), (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, dropoutx=self.dropoutx, dropouth=self.dropouth, init_range=self.init_range,
                      seed=self.seed, skip_padding=self.skip_padding)
        return config


class DARTSCell(RecurrentCellBase):
    """The derived recurrent cell of a ``RecurrentGenotype``: one W_i per node, no BatchNorm; output = mean of the
    ``genotype.concat`` states (paper fig. 4 / A.2.2)."""

    def __init__(self, units: int, genotype: Union[str, Dict[str, Any], RecurrentGenotype] = "DARTS_V2",
                 dropoutx: float = 0.0, dropouth: float = 0.0, init_range: float = INIT_RANGE,
                 seed: Optional[int] = None, skip_padding: bool = True, **kwargs):
        super().__init__(units, dropoutx=dropoutx, dropouth=dropouth, init_range=init_range, seed=seed,
                         skip_padding=skip_padding, **kwargs)
        self.genotype = as_recurrent_genotype(genotype)

    @property
    def num_nodes(self) -> int:
        return self.genotype.steps

    def _nodes(self, s0, h_mask, training, **cell_args):
        states = [s0]
        for kernel, (activation, pred) in zip(self.node_kernels, self.genotype.recurrent):
            states.append(self._node_update(states[pred], kernel, h_mask, activation))
        return ops.mean(ops.stack([states[i] for i in self.genotype.concat], axis=0), axis=0), ()

    def get_config(self):
        config = super().get_config()
        config["genotype"] = self.genotype.to_dict()
        return config


class RNNSearchCell(RecurrentCellBase):
    """The continuous relaxation of the recurrent cell (paper eq. 2 with A.1.2's sharing).

    Node i (1..steps) has one W_i shared by all its predecessors j < i; edge (j -> i) contributes
    ``sum_k softmax(alpha[e])_k * (s_j + c_j (f_k(h_j) - s_j))`` with 'none' contributing 0. BatchNorm without affine
    is applied to s0 and to every node (as the reference, one set of statistics for all of them: batch statistics
    in training; in inference the moving averages, updated once per call with the mean batch moments of the
    sequence). Output = mean of the ``steps`` intermediate nodes. ``call(..., alpha=[num_search_edges(steps), 5])``.
    """

    def __init__(self, units: int, steps: int = RNN_STEPS, dropoutx: float = 0.0, dropouth: float = 0.0,
                 init_range: float = INIT_RANGE, primitives: Sequence[str] = RNN_PRIMITIVES,
                 seed: Optional[int] = None, skip_padding: bool = True, **kwargs):
        super().__init__(units, dropoutx=dropoutx, dropouth=dropouth, init_range=init_range, seed=seed,
                         skip_padding=skip_padding, **kwargs)
        if int(steps) <= 0:
            raise ValueError(f"steps must be a positive integer. Received: steps={steps}")
        self.steps = int(steps)
        unknown = [p for p in primitives if p != "none" and p not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"Unknown recurrent primitives {unknown}; known: none, {', '.join(ACTIVATIONS)}. "
                             f"Received: primitives={list(primitives)}")
        self.primitives = tuple(primitives)

    @property
    def num_nodes(self) -> int:
        return self.steps

    @property
    def num_edges(self) -> int:
        return num_search_edges(self.steps)

    def build(self, input_shape):
        super().build(input_shape)
        self.moving_mean = self.add_weight(shape=(self.units,), initializer="zeros", trainable=False,
                                           name="moving_mean")
        self.moving_variance = self.add_weight(shape=(self.units,), initializer="ones", trainable=False,
                                               name="moving_variance")

    def _initial_aux(self, training):
        if not training:
            return ()
        zeros = ops.zeros((self.units,), dtype=self.variable_dtype)
        return zeros, zeros

    def _batch_norm(self, s, training, moments):
        if training:
            mean, var = bn_moments(s, axes=[0])  # exact second derivatives (the exact architecture gradient)
            moments.append((mean, var))
        else:
            mean, var = self.moving_mean, self.moving_variance
        return (s - mean) * ops.rsqrt(var + BN_EPSILON)

    def _nodes(self, s0, h_mask, training, alpha=None):
        if alpha is None:
            raise ValueError("RNNSearchCell needs the architecture weights: call(..., alpha=<[edges, ops] tensor>).")
        probs = ops.softmax(ops.cast(alpha, s0.dtype), axis=-1)
        op_index = [k for k, name in enumerate(self.primitives) if name != "none"]
        # a constant mask rather than a gather along axis 1, whose second-order gradient XLA cannot compile in the loop
        not_none = ops.convert_to_tensor([float(name != "none") for name in self.primitives], dtype=probs.dtype)
        moments = []
        states = [self._batch_norm(s0, training, moments)]
        offset = 0
        for i, kernel in enumerate(self.node_kernels):
            n = i + 1
            prev = ops.stack(states, axis=0)  # [n, B, H]
            inp = prev if h_mask is None else prev * h_mask[None]
            # [n, B, H] x [H, 2H] as one 2-D matmul: an einsum becomes a broadcasting BatchMatMul whose second-order
            # gradient (exact mode) needs run-time shapes that XLA cannot compile inside the time loop
            mapped = ops.reshape(ops.matmul(ops.reshape(inp, (-1, self.units)), kernel), (n, -1, 2 * self.units))
            c, h = ops.split(mapped, 2, axis=-1)
            c = ops.sigmoid(c)
            p = probs[offset:offset + n]  # [n, ops]
            # sum_k p_k (s + c (f_k(h) - s)) = p_sum s + c (sum_k p_k f_k(h) - p_sum s), k over non-'none' ops
            p_sum = ops.sum(p * not_none, axis=1)[:, None, None]
            mixed = sum(p[:, k, None, None] * ACTIVATIONS[self.primitives[k]](h) for k in op_index)
            s = ops.sum(p_sum * prev + c * (mixed - p_sum * prev), axis=0)
            states.append(self._batch_norm(s, training, moments))
            offset += n
        output = ops.mean(ops.stack(states[1:], axis=0), axis=0)
        if not moments:
            return output, ()
        mean = ops.mean(ops.stack([m for m, _ in moments]), axis=0)
        var = ops.mean(ops.stack([v for _, v in moments]), axis=0)
        return output, (mean, var)

    def call(self, inputs, hidden, step_mask=None, training=False, alpha=None):
        return super().call(inputs, hidden, step_mask=step_mask, training=training, alpha=alpha)

    def _finish_aux(self, aux, training, real_steps):
        if not training or not aux:
            return
        # aux holds sum_t (real fraction_t) * moments_t; normalise by the number of real steps.
        # (The unbiased correction of torch's running_var is negligible for batch >= 64 and omitted.)
        mean_sum, var_sum = aux
        total = ops.cast(real_steps, mean_sum.dtype)
        self.moving_mean.assign((1 - BN_MOMENTUM) * self.moving_mean + BN_MOMENTUM * mean_sum / total)
        self.moving_variance.assign((1 - BN_MOMENTUM) * self.moving_variance + BN_MOMENTUM * var_sum / total)

    def get_config(self):
        config = super().get_config()
        config.update(steps=self.steps, primitives=list(self.primitives))
        return config
