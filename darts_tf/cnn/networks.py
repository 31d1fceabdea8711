"""Networks built from a discrete `Genotype` for architecture evaluation (paper sect. 3.2, A.2.1, A.2.3):
`NetworkCIFAR` (20 cells, C=36) and `NetworkImageNet` (14 cells, C=48, mobile setting), with the
auxiliary head at 2/3 depth and drop-path. ``call`` returns logits only; the training step also uses the
auxiliary logits, so they and drop-path are active in training and absent at inference.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from darts_tf import genotypes as gt
from darts_tf.cnn.ops import FactorizedReduce, Identity, ReLUConvBN, batch_norm, make_op
from darts_tf.cnn.search_space import reduction_layers
from darts_tf.numerics import at_least_float32
from darts_tf.optim import apply_weight_step


@keras.saving.register_keras_serializable(package="darts_tf")
class Cell(layers.Layer):
    """A derived cell: each node sums two ops applied to earlier states; output = concat of `concat` states."""

    def __init__(self, edges: Sequence[Sequence[Any]], concat: Sequence[int], C: int, reduction: bool,
                 reduction_prev: bool, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.edge_list = [(str(op), int(j)) for op, j in edges]
        self.concat = [int(i) for i in concat]
        self.C, self.reduction, self.reduction_prev, self.seed = C, reduction, reduction_prev, seed
        self.preprocess0 = FactorizedReduce(C, 2) if reduction_prev else ReLUConvBN(C, 1)
        self.preprocess1 = ReLUConvBN(C, 1)
        self.edge_ops = [make_op(op, C, 2 if reduction and j < 2 else 1) for op, j in self.edge_list]
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _drop_path(self, x, drop_prob):
        """Zeroes whole examples of one path with probability drop_prob and rescales the rest (FractalNet)."""
        keep = 1.0 - ops.cast(drop_prob, x.dtype)
        batch = ops.shape(x)[0]
        mask = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator, dtype=x.dtype) < keep
        return ops.where(mask, x / keep, ops.zeros_like(x))

    def build(self, *args, **kwargs):
        self.built = True  # children build on first call

    def call(self, s0, s1, drop_prob=0.0, training=False):
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        for node in range(len(self.edge_list) // 2):
            s = None
            for e in (2 * node, 2 * node + 1):
                op = self.edge_ops[e]
                h = op(states[self.edge_list[e][1]], training=training)
                if training and not isinstance(op, Identity):
                    h = ops.cond(drop_prob > 0.0, lambda: self._drop_path(h, drop_prob), lambda: h)
                s = h if s is None else s + h
            states.append(s)
        return ops.concatenate([states[i] for i in self.concat], axis=-1)

    def get_config(self):
        return {**super().get_config(), "edges": [list(e) for e in self.edge_list], "concat": self.concat, "C": self.C,
                "reduction": self.reduction, "reduction_prev": self.reduction_prev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="darts_tf")
class AuxiliaryHead(layers.Layer):
    """Auxiliary classifier at 2/3 depth: ReLU, 5x5 avg-pool, 1x1 conv 128, BN, ReLU, 2x2 conv 768, [BN], ReLU, linear.

    `pool_stride` 3 for CIFAR (8x8 -> 2x2), 2 for ImageNet (7x7 -> 2x2; the reference omits the second BN there).
    On maps smaller than 5x5 (tiny images) the pool and conv shrink to fit.
    """

    def __init__(self, num_classes: int, pool_stride: int = 3, second_bn: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.pool_stride, self.second_bn = num_classes, pool_stride, second_bn
        self.conv1 = layers.Conv2D(128, 1, use_bias=False)
        self.bn1 = batch_norm(True)
        self.bn2 = batch_norm(True) if second_bn else None
        self.classifier = layers.Dense(num_classes)

    def build(self, input_shape):
        h = input_shape[1]
        pool = min(5, h)
        self.pool = layers.AveragePooling2D(pool, strides=self.pool_stride, padding="valid")
        pooled = (h - pool) // self.pool_stride + 1
        self.conv2 = layers.Conv2D(768, min(2, pooled), use_bias=False)

    def call(self, x, training=False):
        x = self.pool(ops.relu(x))
        x = ops.relu(self.bn1(self.conv1(x), training=training))
        x = self.conv2(x)
        if self.bn2 is not None:
            x = self.bn2(x, training=training)
        x = ops.relu(x)
        return self.classifier(ops.mean(x, axis=(1, 2)))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "pool_stride": self.pool_stride,
                "second_bn": self.second_bn}


class _CellNetwork(keras.Model):
    """Shared training step of the evaluation networks: CE (+ label smoothing) + auxiliary_weight * CE(aux),
    gradient clipping, L2 weight decay added to the gradient (PyTorch semantics, as the reference)."""

    genotype_kind = "cnn"  # the genotype kind the network is built from (darts_tf.cnn.nb201.NB201Network: 'nb201')

    def __init__(self, genotype, num_classes: int, num_layers: int, auxiliary: bool, drop_path_prob: float = 0.0,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.genotype = gt.as_genotype(genotype, self.genotype_kind)
        self.num_classes, self.num_layers, self.auxiliary, self.seed = num_classes, num_layers, auxiliary, seed
        self.drop_path_prob = self.add_weight(shape=(), initializer=keras.initializers.Constant(drop_path_prob),
                                              trainable=False, name="drop_path_prob")
        self._initial_drop_path_prob = float(drop_path_prob)
        self.train_config = dict(auxiliary_weight=0.4, weight_decay=3e-4, grad_clip=5.0, label_smoothing=0.0)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.acc = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.top5 = keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy")

    def _make_cells(self, C_curr, reduction_prev):
        """The cells (reductions at 1/3 and 2/3 depth double the width); Keras infers each cell's input channels."""
        cells = []
        reductions = reduction_layers(self.num_layers)
        g = self.genotype
        for i in range(self.num_layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            edges, concat = (g.reduce, g.reduce_concat) if reduction else (g.normal, g.normal_concat)
            seed = None if self.seed is None else self.seed + i
            cells.append(Cell(edges, concat, C_curr, reduction, reduction_prev, seed=seed, name=f"cell_{i}"))
            reduction_prev = reduction
        return cells

    def stem_forward(self, x, training):
        raise NotImplementedError

    def forward(self, x, training=False):
        """(logits, auxiliary logits or None); auxiliary logits only when training."""
        s0, s1 = self.stem_forward(x, training)
        aux = None
        drop = self.drop_path_prob
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop, training=training)
            if i == 2 * self.num_layers // 3 and self.auxiliary and training:
                aux = at_least_float32(self.auxiliary_head(s1, training=training))
        logits = self.classifier(self.global_pooling(s1))
        return at_least_float32(logits), aux

    def build(self, input_shape):
        """Builds every weight, the auxiliary head included, by one inference pass on zeros (no state changes).

        Keras calls this when it reloads a `.keras` file; without it the auxiliary head (used only in training)
        stays unbuilt and its saved weights are silently dropped.
        """
        if self.built:
            return
        s0, s1 = self.stem_forward(ops.zeros((1,) + tuple(input_shape[1:])), False)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop_prob=0.0, training=False)
            if i == 2 * self.num_layers // 3 and self.auxiliary:
                self.auxiliary_head(s1, training=False)
        self.classifier(self.global_pooling(s1))
        self.built = True

    def call(self, x, training=False):
        return self.forward(x, training=training)[0]

    def compile(self, optimizer="sgd", auxiliary_weight: float = 0.4, weight_decay: float = 3e-4,
                grad_clip: Optional[float] = 5.0, label_smoothing: float = 0.0, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.train_config = dict(auxiliary_weight=auxiliary_weight, weight_decay=weight_decay, grad_clip=grad_clip,
                                 label_smoothing=label_smoothing)

    @property
    def metrics(self):
        return [self.loss_tracker, self.acc, self.top5]

    def _ce(self, y, logits, smoothing):
        if smoothing:
            onehot = tf.one_hot(tf.cast(y, tf.int32), self.num_classes)
            return tf.reduce_mean(keras.losses.categorical_crossentropy(onehot, logits, from_logits=True,
                                                                        label_smoothing=smoothing))
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    def train_step(self, data):
        x, y = data[0], data[1]
        cfg = self.train_config
        weights = self.trainable_variables
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits, aux = self.forward(x, training=True)
            loss = self._ce(y, logits, cfg["label_smoothing"])
            if aux is not None and cfg["auxiliary_weight"]:
                loss = loss + cfg["auxiliary_weight"] * self._ce(y, aux, cfg["label_smoothing"])
            scaled = loss / replicas
        apply_weight_step(self.optimizer, tape.gradient(scaled, weights), weights, cfg["grad_clip"],
                          cfg["weight_decay"])
        return self._update_metrics(loss, y, logits)

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self(x, training=False)
        return self._update_metrics(self._ce(y, logits, 0.0), y, logits)

    def _update_metrics(self, loss, y, logits):
        self.loss_tracker.update_state(loss)
        self.acc.update_state(y, logits)
        self.top5.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {"genotype": self.genotype.to_dict(), "num_classes": self.num_classes, "num_layers": self.num_layers,
                "auxiliary": self.auxiliary, "drop_path_prob": self._initial_drop_path_prob, "seed": self.seed,
                "name": self.name}


@keras.saving.register_keras_serializable(package="darts_tf")
class NetworkCIFAR(_CellNetwork):
    """The CIFAR evaluation network: 3x3 stem to 3C channels, `num_layers` cells, global pool, linear."""

    def __init__(self, genotype="DARTS_V2", C: int = 36, num_classes: int = 10, num_layers: int = 20,
                 auxiliary: bool = True, drop_path_prob: float = 0.0, stem_multiplier: int = 3,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(genotype, num_classes, num_layers, auxiliary, drop_path_prob, seed, **kwargs)
        self.C, self.stem_multiplier = C, stem_multiplier
        self.stem = keras.Sequential([layers.Conv2D(stem_multiplier * C, 3, padding="same", use_bias=False),
                                      batch_norm(True)], name="stem")
        self.cells = self._make_cells(C, reduction_prev=False)
        self.auxiliary_head = AuxiliaryHead(num_classes, pool_stride=3, name="auxiliary_head") if auxiliary else None
        self.global_pooling = layers.GlobalAveragePooling2D()
        self.classifier = layers.Dense(num_classes, name="classifier")

    def stem_forward(self, x, training):
        s = self.stem(x, training=training)
        return s, s

    def get_config(self):
        return {**super().get_config(), "C": self.C, "stem_multiplier": self.stem_multiplier}


@keras.saving.register_keras_serializable(package="darts_tf")
class NetworkImageNet(_CellNetwork):
    """The ImageNet (mobile) network: two stride-2 stems (224 -> 56 -> 28), `num_layers` cells, global pool, linear."""

    def __init__(self, genotype="DARTS_V2", C: int = 48, num_classes: int = 1000, num_layers: int = 14,
                 auxiliary: bool = True, drop_path_prob: float = 0.0, seed: Optional[int] = None, **kwargs):
        super().__init__(genotype, num_classes, num_layers, auxiliary, drop_path_prob, seed, **kwargs)
        self.C = C
        self.stem0 = keras.Sequential([
            layers.Conv2D(C // 2, 3, strides=2, padding="same", use_bias=False), batch_norm(True), layers.ReLU(),
            layers.Conv2D(C, 3, strides=2, padding="same", use_bias=False), batch_norm(True)], name="stem0")
        self.stem1 = keras.Sequential([
            layers.ReLU(), layers.Conv2D(C, 3, strides=2, padding="same", use_bias=False), batch_norm(True)], name="stem1")
        self.cells = self._make_cells(C, reduction_prev=True)
        self.auxiliary_head = (AuxiliaryHead(num_classes, pool_stride=2, second_bn=False, name="auxiliary_head")
                               if auxiliary else None)
        self.global_pooling = layers.GlobalAveragePooling2D()
        self.classifier = layers.Dense(num_classes, name="classifier")

    def stem_forward(self, x, training):
        s0 = self.stem0(x, training=training)
        return s0, self.stem1(s0, training=training)

    def get_config(self):
        return {**super().get_config(), "C": self.C}


def build_network(model: keras.Model, input_shape) -> keras.Model:
    """Builds every weight (auxiliary head included) by one training-mode call on zeros."""
    model.forward(np.zeros((1,) + tuple(input_shape), np.float32), training=True)
    model(np.zeros((1,) + tuple(input_shape), np.float32), training=False)
    return model


def count_parameters(model: keras.Model, include_auxiliary: bool = False) -> int:
    """Trainable parameters, by default without the auxiliary head (how the reference reports model size)."""
    total = 0
    aux = getattr(model, "auxiliary_head", None)
    aux_ids = {id(v) for v in aux.trainable_variables} if (aux is not None and not include_auxiliary) else set()
    for v in model.trainable_variables:
        if id(v) not in aux_ids:
            total += int(np.prod(v.shape))
    return total


def count_multiply_adds(model: keras.Model, input_shape) -> int:
    """Multiply-adds of one inference pass (batch 1): convolutions, depthwise convolutions and matmuls,
    read from the traced graph (auxiliary head excluded since it only runs in training)."""
    spec = tf.TensorSpec((1,) + tuple(input_shape), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    total = 0
    for op in graph.get_operations():
        if op.type == "Conv2D":
            kh, kw, cin, _ = op.inputs[1].shape
            total += int(np.prod(op.outputs[0].shape)) * kh * kw * cin
        elif op.type == "DepthwiseConv2dNative":
            kh, kw, _, _ = op.inputs[1].shape
            total += int(np.prod(op.outputs[0].shape)) * kh * kw
        elif op.type in ("MatMul", "BatchMatMulV2"):
            total += int(np.prod(op.outputs[0].shape)) * int(op.inputs[0].shape[-1])
    return total


def set_drop_path_prob(model: keras.Model, prob: float) -> None:
    model.drop_path_prob.assign(prob)
