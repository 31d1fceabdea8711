"""DARTS recurrent language models: the search supernet (paper A.1.2) and the evaluation network (A.2.2).

Both are a single recurrent layer between a word embedding and a tied decoder (logits = h E^T + b)::

    tokens -> embedding (token dropout `dropoute`) -> locked dropout `dropouti` -> cell -> locked dropout `dropout`
           -> tied decoder

``call({'tokens' [B, T] int, 'mask' [B, T] (optional), 'hidden' [B, nhid] (optional)}, training)`` returns
``{'logits' [B, T, V], 'hidden' [B, nhid], 'rnn_outputs' [B, T, nhid]}`` and is a pure function of its inputs and
variables (``stateless_call`` evaluates it at other weights for the unrolled architecture gradient). The hidden
state carried from one BPTT window to the next lives outside the saved model (``CarriedHiddenState``) and is reset
where a window starts at column 0 (the start of an epoch in ``darts_tf.data.text``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from darts_tf.bilevel import TRAIN, VALIDATION, BilevelSearchModel
from darts_tf.ops import at_least_float32
from darts_tf.genotypes import RNN_PRIMITIVES, RNN_STEPS, RecurrentGenotype, derive_from_alphas
from darts_tf.rnn.cells import INIT_RANGE, DARTSCell, RNNSearchCell, _check_rate, as_recurrent_genotype, \
    num_search_edges, variational_mask

EVAL = "eval"


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
        self.token_dropout = _check_rate("token_dropout", token_dropout)
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


def locked_dropout(rate: float, units: int, seed: Optional[int], name: str) -> keras.layers.Dropout:
    """Variational (locked) dropout over [B, T, units]: one mask per sequence, shared by all time steps."""
    return keras.layers.Dropout(rate, noise_shape=(None, 1, units), seed=seed, name=name)


def _child_seed(seed: Optional[int], offset: int) -> Optional[int]:
    return None if seed is None else int(seed) + offset


class CarriedHiddenState:
    """Hidden state carried across consecutive BPTT windows, one per stream (train / validation / eval).

    Plain ``tf.Variable``s with a dynamic batch dimension, kept out of Keras' tracking so that they are neither
    saved with the model nor counted as its variables. ``read`` gives zeros at the first window of a stream (batch
    mismatch, e.g. right after ``reset``) and where the window starts at column 0 (``start == 0``).
    """

    def __init__(self, units: int, streams: Sequence[str]):
        self.units = int(units)
        self._vars = {s: tf.Variable(tf.zeros([0, self.units]), shape=tf.TensorShape([None, self.units]),
                                     trainable=False, name=f"carried_hidden_{s}") for s in streams}

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
        """Zeros; give the batch size before an XLA-compiled ``fit`` (XLA cannot change a variable's shape)."""
        for s in ([stream] if stream else list(self._vars)):
            self._vars[s].assign(tf.zeros([batch_size, self.units]))


def _batch_mask(batch):
    if "mask" in batch:
        return batch["mask"]
    return ops.ones(ops.shape(batch["inputs"]), dtype="float32")


class _LanguageModelForward:
    """embedding -> dropouti -> cell -> dropout -> tied decoder, shared by the search and evaluation networks."""

    def _make_layers(self, vocab_size, units, dropout, dropouti, dropoute, seed):
        self.embedding = TiedEmbedding(vocab_size, units, token_dropout=dropoute, seed=_child_seed(seed, 0),
                                       name="embedding")
        self.input_dropout = locked_dropout(dropouti, units, _child_seed(seed, 1), "input_dropout")
        self.output_dropout = locked_dropout(dropout, units, _child_seed(seed, 2), "output_dropout")
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
        return {"tokens": batch["inputs"], "mask": _batch_mask(batch),
                "hidden": self.carried.read(stream, batch["inputs"], batch.get("start"))}


# ----------------------------------------------------------------------------------------------- search network
class RNNSearchNetwork(_LanguageModelForward, BilevelSearchModel):
    """The recurrent supernet of the architecture search (paper A.1.2, reference ``RNNModelSearch``).

    alpha [1 + 2 + ... + steps, 5] is initialised to 1e-3 N(0, 1) as the reference; batches are the
    ``{'train': window, 'validation': window}`` dicts of ``darts_tf.data.text.lm_search_dataset``.
    Compile with ``optimizer=SGD(20)`` (no momentum) and ``arch_optimizer=Adam(3e-3, 0.9, 0.999)``.
    With ``bptt`` set, every step runs at learning rate lr * seq_len / bptt (the reference rescales lr per
    window in rnn/train_search.py, and the unrolled step xi follows it); the learning rate must then be a float.
    """

    def __init__(self, vocab_size: int, units: int = 300, steps: int = RNN_STEPS, dropout: float = 0.75,
                 dropouth: float = 0.25, dropoutx: float = 0.75, dropouti: float = 0.2, dropoute: float = 0.0,
                 tar_beta: float = 1e-3, seed: Optional[int] = None, arch_mode: str = "first_order", xi: Optional[float] = None, weight_decay: float = 5e-7,
                 arch_weight_decay: float = 1e-3, grad_clip: float = 0.25, bptt: Optional[int] = None, **kwargs):
        kwargs.setdefault("unrolled_grad_clip", grad_clip)  # the reference's RNN architect clips the virtual step
        super().__init__(arch_mode=arch_mode, xi=xi, weight_decay=weight_decay, arch_weight_decay=arch_weight_decay,
                         grad_clip=grad_clip, **kwargs)
        if bptt is not None and int(bptt) < 1:
            raise ValueError(f"bptt must be >= 1 (or None: no per-window learning-rate scaling). Received: bptt={bptt}")
        self.bptt = None if bptt is None else int(bptt)
        self.vocab_size, self.units, self.steps = int(vocab_size), int(units), int(steps)
        self.dropout, self.dropouth, self.dropoutx = dropout, dropouth, dropoutx
        self.dropouti, self.dropoute = dropouti, dropoute
        self.tar_beta, self.seed = float(tar_beta), seed
        self._make_layers(self.vocab_size, self.units, dropout, dropouti, dropoute, seed)
        self.cell = RNNSearchCell(self.units, steps=self.steps, dropoutx=dropoutx, dropouth=dropouth,
                                  seed=_child_seed(seed, 3), name="search_cell")
        self._alpha_seed = seed

    def build(self, input_shape=None):
        if self.built:
            return
        self._build_layers()
        self.alpha = self.add_weight(shape=(num_search_edges(self.steps), len(RNN_PRIMITIVES)), name="alpha",
                                     initializer=keras.initializers.RandomNormal(stddev=1e-3, seed=self._alpha_seed))
        self.built = True

    @property
    def arch_variables(self) -> List[keras.Variable]:
        return [self.alpha]

    def call(self, inputs, training=False):
        return self._forward(inputs, training, alpha=self.alpha)

    def search_inputs(self, batch, stream: str):
        return self.window_inputs(batch, stream)

    def search_loss(self, batch, outputs, stream: str):
        mask = _batch_mask(batch)
        loss = masked_mean_cross_entropy(batch["targets"], outputs["logits"], mask)
        if stream == TRAIN and self.tar_beta:
            loss = loss + self.tar_beta * temporal_activation_penalty(outputs["rnn_outputs"], mask)
        return loss

    reports_accuracy = False
    supports_forward_hvp = False  # ForwardAccumulator cannot differentiate the cell's while loop (TensorArray variants)

    def search_accuracy(self, batch, outputs):
        return None

    def update_stream_state(self, outputs, stream: str) -> None:
        self.carried.assign(stream, outputs["hidden"])

    def train_step(self, data):
        """The bilevel step, at learning rate lr * seq_len / bptt for this window when ``bptt`` is set."""
        if self.bptt is None:
            return super().train_step(data)
        lr = self.optimizer.learning_rate
        if not isinstance(lr, keras.Variable):
            raise ValueError("Per-window learning-rate scaling (bptt set) needs a float learning rate, not a schedule.")
        base = tf.identity(lr.value)
        seq_len = tf.cast(tf.reshape(self._split(data)[0]["seq_len"], [-1])[0], base.dtype)
        lr.assign(base * seq_len / float(self.bptt))
        logs = super().train_step(data)
        with tf.control_dependencies(list(logs.values())):
            lr.assign(base)
        return logs

    def arch_probabilities(self) -> np.ndarray:
        return ops.convert_to_numpy(ops.softmax(self.alpha, axis=-1))

    def alphas_numpy(self) -> Dict[str, np.ndarray]:
        """The architecture variables by name (what ``darts_tf.search_runner`` logs and saves)."""
        return {"alpha_recurrent": ops.convert_to_numpy(self.alpha)}

    def genotype(self) -> RecurrentGenotype:
        """The discrete cell (k = 1 predecessor per node) from softmax(alpha), as the reference's ``genotype()``."""
        return derive_from_alphas(self.alphas_numpy(), k=1)  # the one derivation (softmax once, in float64)

    def get_config(self):
        return {"vocab_size": self.vocab_size, "units": self.units, "steps": self.steps, "dropout": self.dropout,
                "dropouth": self.dropouth, "dropoutx": self.dropoutx, "dropouti": self.dropouti,
                "dropoute": self.dropoute, "tar_beta": self.tar_beta, "seed": self.seed,
                "arch_mode": self.arch_mode, "xi": self.xi, "weight_decay": self.weight_decay,
                "arch_weight_decay": self.arch_weight_decay, "grad_clip": self.grad_clip, "bptt": self.bptt,
                "exact_recompute": self.exact_recompute, "exact_hvp": self.exact_hvp, "name": self.name}


# ----------------------------------------------------------------------------------------------- evaluation network
@keras.saving.register_keras_serializable(package="darts_tf")
class RNNModel(_LanguageModelForward, keras.Model):
    """The evaluation language model with a derived ``DARTSCell`` (paper A.2.2, reference ``rnn/model.py``).

    Defaults are the reference ``train.py`` with the paper's token dropout 0.1 on the embedding. ``train_step``
    does one reference step on a window of ``darts_tf.data.text.lm_dataset``: the carried hidden state, loss = mean
    token cross-entropy + TAR, gradient clipped to ``grad_clip`` (global norm), weight decay added to the
    gradient (PyTorch style), the whole step scaled by seq_len / bptt (the reference rescales lr per window), and
    no step at all on an empty padding window. Configure those with ``compile(optimizer, grad_clip=..., ...)``.
    """

    def __init__(self, vocab_size: int, units: int = 850,
                 genotype: Union[str, Dict[str, Any], RecurrentGenotype] = "DARTS_V2", dropout: float = 0.75,
                 dropouth: float = 0.25, dropoutx: float = 0.75, dropouti: float = 0.2, dropoute: float = 0.1,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.units = int(vocab_size), int(units)
        self.genotype = as_recurrent_genotype(genotype)
        self.dropout, self.dropouth, self.dropoutx = dropout, dropouth, dropoutx
        self.dropouti, self.dropoute, self.seed = dropouti, dropoute, seed
        self._make_layers(self.vocab_size, self.units, dropout, dropouti, dropoute, seed)
        self.cell = DARTSCell(self.units, genotype=self.genotype, dropoutx=dropoutx, dropouth=dropouth,
                              seed=_child_seed(seed, 3), name="cell")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.grad_clip, self.weight_decay, self.bptt, self.tar_beta = 0.25, 8e-7, 35, 1e-3
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        self._build_layers()
        self.built = True

    def call(self, inputs, training=False):
        return self._forward(inputs, training)

    def compile(self, optimizer=None, *, grad_clip: float = 0.25, weight_decay: float = 8e-7, bptt: int = 35,
                tar_beta: float = 1e-3, **kwargs):
        """Keras compile plus the reference's step settings (train.py: --clip, --wdecay, --bptt, --beta; its AR
        --alpha defaults to 0 and is not implemented)."""
        if optimizer is None:
            raise ValueError("RNNModel.compile() needs optimizer= (the reference uses SGD lr 20, see "
                             "darts_tf.rnn.training.AveragedSGD).")
        super().compile(optimizer=optimizer, **kwargs)
        self.grad_clip, self.weight_decay, self.bptt = float(grad_clip), float(weight_decay), int(bptt)
        self.tar_beta = float(tar_beta)
        self.optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        if self.optimizer is None:
            return None
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer), "grad_clip": self.grad_clip,
                "weight_decay": self.weight_decay, "bptt": self.bptt, "tar_beta": self.tar_beta}

    def compile_from_config(self, config):
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(config.pop("optimizer"))
        self.compile(optimizer=optimizer, **config)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def window_loss(self, batch, outputs, regularize: bool):
        mask = _batch_mask(batch)
        raw = masked_mean_cross_entropy(batch["targets"], outputs["logits"], mask)
        loss = raw
        if regularize and self.tar_beta:
            loss = loss + self.tar_beta * temporal_activation_penalty(outputs["rnn_outputs"], mask)
        return raw, loss

    def train_step(self, data):
        mask = _batch_mask(data)
        seq_len = tf.cast(data["seq_len"], tf.float32) if "seq_len" in data else tf.reduce_max(tf.reduce_sum(mask, 1))
        seq_len = tf.reduce_max(tf.reshape(seq_len, [-1]))
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self(self.window_inputs(data, TRAIN), training=True)
            raw, loss = self.window_loss(data, outputs, regularize=True)
        grads = [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v)
                 for g, v in zip(tape.gradient(loss, variables), variables)]
        grads, grad_norm = tf.clip_by_global_norm(grads, self.grad_clip)
        scale = seq_len / float(self.bptt)
        grads = [scale * (g + self.weight_decay * v) for g, v in zip(grads, variables)]

        def apply():
            self.optimizer.apply(grads, variables)
            return tf.constant(True)

        tf.cond(seq_len > 0, apply, lambda: tf.constant(False))
        self.carried.assign(TRAIN, outputs["hidden"])
        self.loss_tracker.update_state(raw, sample_weight=tf.cast(seq_len > 0, tf.float32))
        loss_value = self.loss_tracker.result()
        return {"loss": loss_value, "ppl": tf.exp(loss_value), "grad_norm": grad_norm}

    def test_step(self, data):
        outputs = self(self.window_inputs(data, EVAL), training=False)
        total, count = masked_cross_entropy(data["targets"], outputs["logits"], _batch_mask(data))
        self.carried.assign(EVAL, outputs["hidden"])
        self.loss_tracker.update_state(total / tf.maximum(count, 1.0), sample_weight=count)
        loss_value = self.loss_tracker.result()
        return {"loss": loss_value, "ppl": tf.exp(loss_value)}

    def get_config(self):
        return {"vocab_size": self.vocab_size, "units": self.units, "genotype": self.genotype.to_dict(),
                "dropout": self.dropout, "dropouth": self.dropouth, "dropoutx": self.dropoutx,
                "dropouti": self.dropouti, "dropoute": self.dropoute, "seed": self.seed, "name": self.name}
