"""The DARTS recurrent cell (paper sect. 2.1 and A.1.2) as Keras 3 layers.

Every cell starts from node 0, a highway node built from the input and the previous hidden state::

    [c, h] = [x_t * mask_x, h_{t-1} * mask_h] W0,    s0 = h_{t-1} + sigmoid(c) * (tanh(h) - h_{t-1})

and node i (i >= 1) reads a predecessor state s_j through its own linear map W_i (nhid x 2 nhid)::

    [c, h] = (s_j * mask_h) W_i,    s_i = s_j + sigmoid(c) * (f(h) - s_j),    f in tanh / relu / sigmoid / identity.

``RNNSearchCell`` mixes all predecessors and activations with softmax(alpha) (one W_i per node shared by all of its
incoming edges, BatchNorm without affine on every node); ``DARTSCell`` is the discrete cell of a
``RecurrentGenotype``. Both run the time loop as one ``tf.while_loop`` over ``TensorArray``s with a fixed length and
honour a step mask: where ``mask == 0`` (padding) the hidden state is carried unchanged.

The building blocks of the recurrent search space and of the derived cell (``darts_tf.rnn.search_space``,
``darts_tf.rnn.networks``): node 0 and the time loop (``RecurrentCellBase``), the tied embedding, locked dropout,
the hidden state carried across windows, the losses, and the language-model forward pass both networks share::

    tokens -> embedding (token dropout `dropoute`) -> locked dropout `dropouti` -> cell -> locked dropout `dropout`
           -> tied decoder (logits = h E^T + b)

``call({'tokens' [B, T] int, 'mask' [B, T] (optional), 'hidden' [B, nhid] (optional)}, training)`` returns
``{'logits' [B, T, V], 'hidden' [B, nhid], 'rnn_outputs' [B, T, nhid]}`` and is a pure function of its inputs and
variables (``stateless_call`` evaluates it at other weights for the unrolled architecture gradient). The hidden
state carried from one BPTT window to the next lives outside the saved model (``CarriedHiddenState``) and is reset
where a window starts at column 0 (the start of an epoch in ``darts_tf.data.text``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import keras
import tensorflow as tf
from keras import ops

from darts_tf.bilevel import TRAIN, VALIDATION
from darts_tf.genotypes import RNN_STEPS
from darts_tf.numerics import at_least_float32, replica_rows, replicas_in_step

INIT_RANGE = 0.04  # the reference's uniform(-0.04, 0.04) initialisation of every recurrent matrix
BN_EPSILON = 1e-5  # torch.nn.BatchNorm1d defaults, as the reference search cell
BN_MOMENTUM = 0.1
EVAL = "eval"


ACTIVATIONS: Dict[str, Callable[[Any], Any]] = {
    "tanh": ops.tanh,
    "relu": ops.relu,
    "sigmoid": ops.sigmoid,
    "identity": lambda x: x,
}


def num_search_edges(steps: int = RNN_STEPS) -> int:
    """Edges of a search cell: node i (1-based) has i predecessors (states 0..i-1), so 1 + 2 + ... + steps."""
    return steps * (steps + 1) // 2


def check_rate(name: str, rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} is a dropout rate in [0, 1). Received: {name}={rate}")
    return rate


def variational_mask(shape, rate: float, seed_generator, dtype="float32"):
    """A locked (variational) dropout mask, Gal & Ghahramani 2016: Bernoulli(1 - rate) / (1 - rate), drawn once."""
    keep = 1.0 - rate
    noise = keras.random.uniform(shape, dtype=dtype, seed=seed_generator)
    return ops.cast(noise < keep, dtype) / keep


def row_masks(batch, units: int, rate: float, seed_generator, dtype="float32"):
    """``variational_mask`` of shape [batch, units], one row per batch row. In a step of R replicas every replica draws
    the mask of the global batch ([R * batch, units], the same draw on each: the seed state is mirrored) and keeps its
    own rows (``numerics.replica_rows``), so that the distributed step masks every row as the one-device step does."""
    return replica_rows(variational_mask((batch * replicas_in_step(), units), rate, seed_generator, dtype), batch)


def run_recurrence(step_fn, x_proj, step_mask, h0, aux0: Tuple = (), skip_padding: bool = True,
                   unroll: bool = False):
    """The time loop: ``h_t = m_t * h_new + (1 - m_t) * h_{t-1}`` with ``h_new, aux_inc = step_fn(x_proj_t, h_{t-1})``.

    ``x_proj`` [T, B, K] and ``step_mask`` [T, B, 1] are time-major; ``aux`` accumulators (e.g. BatchNorm moments)
    add ``aux_inc`` weighted by the fraction of real rows at that step. One ``tf.while_loop`` over
    ``TensorArray``s (gradients, including second order, stay O(T)), at most T iterations (XLA's static bound).
    With ``skip_padding`` the loop stops after the last step that has a real row: the reference's variable-length
    windows (about bptt) are padded to bptt + 20, and that all-padding tail would otherwise cost as much as real
    steps. The tail's states are the last real state, as the mask would have made them. (A per-step ``tf.cond``
    did the same before; TF 2.21 cannot take the second-order gradient of a cond inside a while loop, which the
    exact unrolled mode needs, while a data-dependent trip count differentiates twice.)
    With `unroll` the steps are a Python loop over the static T instead, every step run (the padded ones leave the
    state and the accumulators exactly unchanged): what a step of several replicas needs, whose synchronised BatchNorm
    all-reduces inside every time step, which TensorFlow's distribution strategies cannot do inside a while loop
    ("merge_call called while defining a new graph", or collectives captured in the loop's gradient).
    Returns (states [T, B, H], last state [B, H], aux).
    """
    if unroll:
        return _unrolled_recurrence(step_fn, x_proj, step_mask, h0, aux0)
    steps = x_proj.shape[0]
    if steps is None:
        steps = tf.shape(x_proj)[0]
    x_ta = tf.TensorArray(x_proj.dtype, size=steps, element_shape=x_proj.shape[1:]).unstack(x_proj)
    m_ta = tf.TensorArray(step_mask.dtype, size=steps, element_shape=step_mask.shape[1:]).unstack(step_mask)
    out_ta = tf.TensorArray(h0.dtype, size=steps, element_shape=h0.shape)

    def body(t, h, aux, out):
        h, aux = _masked_step(step_fn, x_ta.read(t), m_ta.read(t), h, aux)
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


def _masked_step(step_fn, x_t, m, h, aux):
    """One step of ``run_recurrence``: (h_t, aux_t) from h_{t-1} and aux_{t-1} with the step mask m [B, 1]."""
    h_new, aux_inc = step_fn(x_t, h)
    weight = tf.reduce_mean(m)
    return m * h_new + (1.0 - m) * h, tuple(a + weight * inc for a, inc in zip(aux, aux_inc))


def _unrolled_recurrence(step_fn, x_proj, step_mask, h0, aux0):
    """``run_recurrence``'s loop in Python over the T static steps (the same step)."""
    steps = x_proj.shape[0]
    if steps is None:
        raise ValueError("The recurrence runs unrolled under a distribution strategy and needs a static number of time "
                         "steps: give the windows a fixed length (darts_tf.data.text pads every window to max_len).")
    h, aux, states = h0, tuple(aux0), []
    for t in range(steps):
        h, aux = _masked_step(step_fn, x_proj[t], step_mask[t], h, aux)
        states.append(h)
    return tf.stack(states), h, aux


class RecurrentCellBase(keras.layers.Layer):
    """Node 0, the variational dropout masks and the time loop shared by the search and the derived cell.

    ``call(inputs [B, T, ninp], hidden [B, nhid], step_mask [B, T] or None, training)`` returns
    (outputs [B, T, nhid], last hidden [B, nhid]). Subclasses define ``num_nodes`` and ``_nodes``.
    """

    # whether a time step all-reduces over the replicas (synchronised BatchNorm): the loop then runs unrolled under
    # several replicas (``run_recurrence``)
    synchronises_per_step = False

    def __init__(self, units: int, dropoutx: float = 0.0, dropouth: float = 0.0, init_range: float = INIT_RANGE,
                 seed: Optional[int] = None, skip_padding: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.skip_padding = bool(skip_padding)
        if int(units) <= 0:
            raise ValueError(f"units must be a positive integer. Received: units={units}")
        self.units = int(units)
        self.dropoutx = check_rate("dropoutx", dropoutx)
        self.dropouth = check_rate("dropouth", dropouth)
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
            x_mask = row_masks(batch, self.input_dim, self.dropoutx, self.seed_generator, inputs.dtype)
        if training and self.dropouth > 0:
            h_mask = row_masks(batch, self.units, self.dropouth, self.seed_generator, inputs.dtype)
        x = inputs if x_mask is None else inputs * x_mask[:, None, :]
        # The input half of node 0's map does not depend on the recurrence: one matmul for all time steps.
        x_proj = ops.einsum("btd,dk->tbk", x, self.w0[: self.input_dim])
        if step_mask is None:
            step_mask = ops.ones(ops.shape(inputs)[:2], dtype=inputs.dtype)
        mask_tm = ops.transpose(ops.cast(step_mask, inputs.dtype))[:, :, None]

        def step(x_proj_t, h_prev):
            return self._nodes(self._init_state(x_proj_t, h_prev, h_mask), h_mask, training, **cell_args)

        states, last, aux = run_recurrence(step, x_proj, mask_tm, ops.cast(hidden, inputs.dtype),
                                              self._initial_aux(training), skip_padding=self.skip_padding,
                                              unroll=self.synchronises_per_step and replicas_in_step() > 1)
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



# ----------------------------------------------------------------------------------------------- losses
def masked_cross_entropy(targets, logits, mask):
    """(sum of token cross-entropies over real positions, number of real positions); mask 1 = real, 0 = padding."""
    ce = ops.sparse_categorical_crossentropy(ops.cast(targets, "int32"), at_least_float32(logits),
                                             from_logits=True)
    mask = ops.cast(mask, ce.dtype)
    return ops.sum(ce * mask), ops.sum(mask)


def masked_mean_cross_entropy(targets, logits, mask):
    """Mean token cross-entropy over real positions (0 for a window with none)."""
    total, count = masked_cross_entropy(targets, logits, mask)
    return total / ops.maximum(count, 1.0)


def temporal_activation_penalty(rnn_outputs, mask):
    """TAR (Merity et al. 2018): mean of (h_t - h_{t-1})^2 over consecutive real positions and units."""
    mask = ops.cast(mask, rnn_outputs.dtype)
    pair = mask[:, 1:] * mask[:, :-1]
    diff = ops.square(rnn_outputs[:, 1:] - rnn_outputs[:, :-1])
    units = ops.cast(ops.shape(rnn_outputs)[-1], rnn_outputs.dtype)
    return ops.sum(diff * pair[..., None]) / ops.maximum(ops.sum(pair) * units, 1.0)


# ----------------------------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="darts_tf")
class TiedEmbedding(keras.layers.Layer):
    """One matrix E [V, D] for the word lookup and the decoder, logits = h E^T + b (weight tying).

    ``call`` applies embedding (token) dropout as awd-lstm-lm's ``embedded_dropout``: whole word types are dropped
    with probability ``token_dropout`` for the batch and the rest scaled by 1 / (1 - p); the decoder uses E unmasked.
    """

    def __init__(self, vocab_size: int, output_dim: int, token_dropout: float = 0.0, init_range: float = INIT_RANGE,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if int(vocab_size) < 2 or int(output_dim) < 1:
            raise ValueError(f"vocab_size must be >= 2 and output_dim >= 1. Received: vocab_size={vocab_size}, "
                             f"output_dim={output_dim}")
        self.vocab_size, self.output_dim = int(vocab_size), int(output_dim)
        self.token_dropout = check_rate("token_dropout", token_dropout)
        self.init_range = float(init_range)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(shape=(self.vocab_size, self.output_dim), name="embeddings",
                                          initializer=keras.initializers.RandomUniform(-self.init_range, self.init_range,
                                                                                       seed=self.seed))
        self.bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="decoder_bias")

    def call(self, tokens, training=False):
        table = self.embeddings
        if training and self.token_dropout > 0:
            table = table * variational_mask((self.vocab_size, 1), self.token_dropout, self.seed_generator, table.dtype)
        return ops.take(table, ops.cast(tokens, "int32"), axis=0)

    def decode(self, x):
        return ops.matmul(x, ops.transpose(self.embeddings)) + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, output_dim=self.output_dim, token_dropout=self.token_dropout,
                      init_range=self.init_range, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="darts_tf")
class LockedDropout(keras.layers.Dropout):
    """Keras' ``Dropout`` with the noise shape [B, 1, units] (its variables, seed and one-device draws unchanged); in a
    step of R replicas each replica takes its rows of the mask drawn for the global batch (``numerics.replica_rows``),
    which Keras' layer would draw for the replica's share alone, alike on every replica."""

    def call(self, inputs, training=False):
        replicas = replicas_in_step()
        if not training or self.rate == 0 or replicas == 1:
            return super().call(inputs, training=training)
        batch = ops.shape(inputs)[0]
        scaled_keep = keras.random.dropout(ops.ones((batch * replicas, 1, ops.shape(inputs)[-1]), dtype=inputs.dtype),
                                           self.rate, seed=self.seed_generator)  # Keras' draw for the global batch
        return inputs * replica_rows(scaled_keep, batch)


def locked_dropout(rate: float, units: int, seed: Optional[int], name: str) -> keras.layers.Dropout:
    """Variational (locked) dropout over [B, T, units]: one mask per sequence, shared by all time steps."""
    return LockedDropout(rate, noise_shape=(None, 1, units), seed=seed, name=name)


def child_seed(seed: Optional[int], offset: int) -> Optional[int]:
    return None if seed is None else int(seed) + offset


class CarriedHiddenState:
    """Hidden state carried across consecutive BPTT windows, one per stream (train / validation / eval).

    Plain ``tf.Variable``s with a dynamic batch dimension, kept out of Keras' tracking so that they are neither
    saved with the model nor counted as its variables. ``read`` gives zeros at the first window of a stream (batch
    mismatch, e.g. right after ``reset``) and where the window starts at column 0 (``start == 0``).
    """

    def __init__(self, units: int, streams: Sequence[str]):
        self.units = int(units)
        # ON_READ: under a distribution strategy each replica keeps its own rows (its value is never all-reduced;
        # MEAN only makes a cross-replica reset set every replica's copy); a plain variable without one
        self._vars = {s: tf.Variable(tf.zeros([0, self.units]), shape=tf.TensorShape([None, self.units]),
                                     trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                                     aggregation=tf.VariableAggregation.MEAN, name=f"carried_hidden_{s}")
                      for s in streams}

    def read(self, stream: str, tokens, start=None):
        var = self._vars[stream]
        batch = tf.shape(tokens)[0]
        fresh = tf.not_equal(tf.shape(var)[0], batch)
        if start is not None:
            fresh = tf.logical_or(fresh, tf.equal(tf.reshape(tf.cast(start, tf.int32), [-1])[0], 0))
        h = tf.cond(fresh, lambda: tf.zeros([batch, self.units]), lambda: tf.identity(var))
        return tf.stop_gradient(tf.ensure_shape(h, [tokens.shape[0], self.units]))

    def assign(self, stream: str, value) -> None:
        self._vars[stream].assign(tf.stop_gradient(tf.cast(value, tf.float32)))

    def reset(self, stream: Optional[str] = None, batch_size: int = 0) -> None:
        """Zeros; give the batch size before an XLA-compiled ``fit`` (XLA cannot change a variable's shape): under a
        distribution strategy, each replica's share of the global batch."""
        for s in ([stream] if stream else list(self._vars)):
            self._vars[s].assign(tf.zeros([batch_size, self.units]))


def batch_mask(batch):
    if "mask" in batch:
        return batch["mask"]
    return ops.ones(ops.shape(batch["inputs"]), dtype="float32")


class LanguageModelForward:
    """embedding -> dropouti -> cell -> dropout -> tied decoder, shared by the search and evaluation networks."""

    def _make_layers(self, vocab_size, units, dropout, dropouti, dropoute, seed):
        self.embedding = TiedEmbedding(vocab_size, units, token_dropout=dropoute, seed=child_seed(seed, 0),
                                       name="embedding")
        self.input_dropout = locked_dropout(dropouti, units, child_seed(seed, 1), "input_dropout")
        self.output_dropout = locked_dropout(dropout, units, child_seed(seed, 2), "output_dropout")
        object.__setattr__(self, "carried", CarriedHiddenState(units, (TRAIN, VALIDATION, EVAL)))

    def _build_layers(self):
        self.embedding.build()
        self.cell.build((None, None, self.embedding.output_dim))

    def _forward(self, inputs, training, **cell_args):
        tokens = inputs["tokens"]
        mask = inputs.get("mask")
        hidden = inputs.get("hidden")
        if hidden is None:
            hidden = ops.zeros((ops.shape(tokens)[0], self.cell.units), dtype=self.compute_dtype)
        emb = self.input_dropout(self.embedding(tokens, training=training), training=training)
        outputs, last = self.cell(emb, hidden, mask, training=training, **cell_args)
        dropped = self.output_dropout(outputs, training=training)
        return {"logits": self.embedding.decode(dropped), "hidden": last, "rnn_outputs": outputs}

    def window_inputs(self, batch, stream: str):
        """The ``call`` inputs for a window dict of ``darts_tf.data.text`` with the stream's carried hidden state."""
        return {"tokens": batch["inputs"], "mask": batch_mask(batch),
                "hidden": self.carried.read(stream, batch["inputs"], batch.get("start"))}
