"""The recurrent search space (paper sect. 2.1-2.2, A.1.2): the continuous relaxation of the cell
(``RNNSearchCell``) and the supernet language model with its architecture variables (``RNNSearchNetwork``)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from darts_tf.bilevel import TRAIN, BilevelConfig, BilevelSearchModel
from darts_tf.genotypes import RNN_PRIMITIVES, RNN_STEPS, RecurrentGenotype, derive_from_alphas
from darts_tf.numerics import moments as bn_moments
from darts_tf.rnn.ops import (ACTIVATIONS, BN_EPSILON, BN_MOMENTUM, INIT_RANGE, LanguageModelForward, RecurrentCellBase,
                              batch_mask, child_seed, masked_mean_cross_entropy, num_search_edges,
                              temporal_activation_penalty)


class RNNSearchCell(RecurrentCellBase):
    """The continuous relaxation of the recurrent cell (paper eq. 2 with A.1.2's sharing).

    Node i (1..steps) has one W_i shared by all its predecessors j < i; edge (j -> i) contributes
    ``sum_k softmax(alpha[e])_k * (s_j + c_j (f_k(h_j) - s_j))`` with 'none' contributing 0. BatchNorm without affine
    is applied to s0 and to every node (as the reference, one set of statistics for all of them: batch statistics
    in training; in inference the moving averages, updated once per call with the mean batch moments of the
    sequence). Output = mean of the ``steps`` intermediate nodes. ``call(..., alpha=[num_search_edges(steps), len(primitives)])``.
    """

    synchronises_per_step = True  # BatchNorm's batch statistics on every node of every time step

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


# ----------------------------------------------------------------------------------------------- search network
class RNNSearchNetwork(LanguageModelForward, BilevelSearchModel):
    """The recurrent supernet of the architecture search (paper A.1.2, reference ``RNNModelSearch``).

    alpha [1 + 2 + ... + steps, len(primitives)] is initialised to 1e-3 N(0, 1) as the reference; batches are the
    ``{'train': window, 'validation': window}`` dicts of ``darts_tf.data.text.lm_search_dataset``.
    Compile with ``optimizer=SGD(20)`` (no momentum) and ``arch_optimizer=Adam(3e-3, 0.9, 0.999)``.
    With ``bptt`` set, every step runs at learning rate lr * seq_len / bptt (the reference rescales lr per
    window in rnn/train_search.py, and the unrolled step xi follows it); the learning rate must then be a float.
    `bilevel` is the search step's settings (default: the reference's, ``darts_tf.rnn.search.SearchConfig``'s).
    """

    # = darts_tf.rnn.search.SearchConfig().bilevel_config(): the reference's RNN architect clips the virtual step too
    default_bilevel = BilevelConfig(weight_decay=5e-7, grad_clip=0.25, unrolled_grad_clip=0.25)

    def __init__(self, vocab_size: int, units: int = 300, steps: int = RNN_STEPS,
                 primitives: Sequence[str] = RNN_PRIMITIVES, dropout: float = 0.75,
                 dropouth: float = 0.25, dropoutx: float = 0.75, dropouti: float = 0.2, dropoute: float = 0.0,
                 tar_beta: float = 1e-3, seed: Optional[int] = None, bptt: Optional[int] = None,
                 bilevel: Optional[BilevelConfig] = None, **kwargs):
        super().__init__(bilevel=bilevel, **kwargs)
        if bptt is not None and int(bptt) < 1:
            raise ValueError(f"bptt must be >= 1 (or None: no per-window learning-rate scaling). Received: bptt={bptt}")
        self.bptt = None if bptt is None else int(bptt)
        self.vocab_size, self.units, self.steps = int(vocab_size), int(units), int(steps)
        self.dropout, self.dropouth, self.dropoutx = dropout, dropouth, dropoutx
        self.dropouti, self.dropoute = dropouti, dropoute
        self.tar_beta, self.seed = float(tar_beta), seed
        self._make_layers(self.vocab_size, self.units, dropout, dropouti, dropoute, seed)
        self.cell = RNNSearchCell(self.units, steps=self.steps, dropoutx=dropoutx, dropouth=dropouth,
                                  primitives=primitives, seed=child_seed(seed, 3), name="search_cell")
        self.primitives = self.cell.primitives  # alpha's columns, in this order
        self._alpha_seed = seed

    def build(self, input_shape=None):
        if self.built:
            return
        self._build_layers()
        self.alpha = self.add_weight(shape=(num_search_edges(self.steps), len(self.primitives)), name="alpha",
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
        mask = batch_mask(batch)
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
        """The architecture variables by name (what ``darts_tf.search`` logs and saves)."""
        return {"alpha_recurrent": ops.convert_to_numpy(self.alpha)}

    def genotype(self) -> RecurrentGenotype:
        """The discrete cell (k = 1 predecessor per node) from softmax(alpha), as the reference's ``genotype()``."""
        # the one derivation (softmax once, in float64)
        return derive_from_alphas(self.alphas_numpy(), primitives=self.primitives, k=1)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "units": self.units, "steps": self.steps,
                "primitives": list(self.primitives),
                "dropout": self.dropout, "dropouth": self.dropouth, "dropoutx": self.dropoutx,
                "dropouti": self.dropouti, "dropoute": self.dropoute, "tar_beta": self.tar_beta, "seed": self.seed,
                "bptt": self.bptt}
