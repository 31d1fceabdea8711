"""The derived recurrent cell of a ``RecurrentGenotype`` (``DARTSCell``) and the evaluation language model
(``RNNModel``, paper A.2.2, reference ``rnn/model.py``)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import keras
import tensorflow as tf
from keras import ops

from darts_tf.bilevel import TRAIN, ZERO, optimizer_share
from darts_tf.genotypes import RecurrentGenotype, as_genotype
from darts_tf.numerics import replica_mean
from darts_tf.optim import apply_weight_step
from darts_tf.rnn.ops import (EVAL, INIT_RANGE, LanguageModelForward, RecurrentCellBase, batch_mask, child_seed,
                              masked_cross_entropy, masked_mean_cross_entropy, temporal_activation_penalty)


class DARTSCell(RecurrentCellBase):
    """The derived recurrent cell of a ``RecurrentGenotype``: one W_i per node, no BatchNorm; output = mean of the
    ``genotype.concat`` states (paper fig. 4 / A.2.2)."""

    def __init__(self, units: int, genotype: Union[str, Dict[str, Any], RecurrentGenotype] = "DARTS_V2",
                 dropoutx: float = 0.0, dropouth: float = 0.0, init_range: float = INIT_RANGE,
                 seed: Optional[int] = None, skip_padding: bool = True, **kwargs):
        super().__init__(units, dropoutx=dropoutx, dropouth=dropouth, init_range=init_range, seed=seed,
                         skip_padding=skip_padding, **kwargs)
        self.genotype = as_genotype(genotype, "rnn")

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


# ----------------------------------------------------------------------------------------------- evaluation network
@keras.saving.register_keras_serializable(package="darts_tf")
class RNNModel(LanguageModelForward, keras.Model):
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
        self.genotype = as_genotype(genotype, "rnn")
        self.dropout, self.dropouth, self.dropoutx = dropout, dropouth, dropoutx
        self.dropouti, self.dropoute, self.seed = dropouti, dropoute, seed
        self._make_layers(self.vocab_size, self.units, dropout, dropouti, dropoute, seed)
        self.cell = DARTSCell(self.units, genotype=self.genotype, dropoutx=dropoutx, dropouth=dropouth,
                              seed=child_seed(seed, 3), name="cell")
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
                             "darts_tf.rnn.train.AveragedSGD).")
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
        mask = batch_mask(batch)
        raw = masked_mean_cross_entropy(batch["targets"], outputs["logits"], mask)
        loss = raw
        if regularize and self.tar_beta:
            loss = loss + self.tar_beta * temporal_activation_penalty(outputs["rnn_outputs"], mask)
        return raw, loss

    def train_step(self, data):
        mask = batch_mask(data)
        seq_len = tf.cast(data["seq_len"], tf.float32) if "seq_len" in data else tf.reduce_max(tf.reduce_sum(mask, 1))
        seq_len = tf.reduce_max(tf.reshape(seq_len, [-1]))
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self(self.window_inputs(data, TRAIN), training=True)
            raw, loss = self.window_loss(data, outputs, regularize=True)
        # the global batch's gradient (every replica's share has the same real positions: the replicas' mean), clipped
        # as one; each replica hands the optimizer 1/R of it (Keras sums them)
        grads = tape.gradient(loss, variables, unconnected_gradients=ZERO)
        grads = replica_mean([tf.convert_to_tensor(g) for g in grads])
        scale = seq_len / float(self.bptt) * (optimizer_share() or 1.0)
        grad_norm = apply_weight_step(self.optimizer, grads, variables, self.grad_clip, self.weight_decay, scale=scale,
                                      when=seq_len > 0)
        self.carried.assign(TRAIN, outputs["hidden"])
        self.loss_tracker.update_state(raw, sample_weight=tf.cast(seq_len > 0, tf.float32))
        loss_value = self.loss_tracker.result()
        return {"loss": loss_value, "ppl": tf.exp(loss_value), "grad_norm": grad_norm}

    def test_step(self, data):
        outputs = self(self.window_inputs(data, EVAL), training=False)
        total, count = masked_cross_entropy(data["targets"], outputs["logits"], batch_mask(data))
        self.carried.assign(EVAL, outputs["hidden"])
        self.loss_tracker.update_state(total / tf.maximum(count, 1.0), sample_weight=count)
        loss_value = self.loss_tracker.result()
        return {"loss": loss_value, "ppl": tf.exp(loss_value)}

    def get_config(self):
        return {"vocab_size": self.vocab_size, "units": self.units, "genotype": self.genotype.to_dict(),
                "dropout": self.dropout, "dropouth": self.dropouth, "dropoutx": self.dropoutx,
                "dropouti": self.dropouti, "dropoute": self.dropoute, "seed": self.seed, "name": self.name}
