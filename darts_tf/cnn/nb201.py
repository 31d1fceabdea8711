"""The NAS-Bench-201 cell search space (Dong & Yang, ICLR 2020) and its fixed macro skeleton, as Keras 3 layers.

Cell: 4 nodes; node 0 is the cell input, node j (1..3) = sum over i < j of op_{j<-i}(node i), the output is
node 3. Six edges, each one of ``NB201_PRIMITIVES``. Architectures are written in NAS-Bench-201's string form
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (one ``+``-separated group per node j, listing its inputs 0..j-1).

Skeleton (``NB201Network``, NAS-Bench-201's TinyNetwork): 3x3 conv stem to C + BN, N cells at C, a residual
reduction block, N cells at 2C, a reduction block, N cells at 4C, then BN + ReLU, global average pool, linear.

Follows the official structure in D-X-Y/AutoDL-Projects: ``xautodl/models/cell_operations.py`` (ReLUConvBN with
affine BN and a bias-free conv, ResNetBasicblock, avg pool with count_include_pad=False) and
``xautodl/models/cell_infers/cells.py`` (InferCell). With C=16, N=5 the trainable parameter counts equal the
``params`` NAS-Bench-201 publishes (see tests/cnn/test_nb201.py).

The genotype class and the architecture string live in ``darts_tf.genotypes`` (kind 'nb201'), re-exported here.
The supernet (``NB201SearchNetwork``, ``darts-search --search_space nb201``) is the same skeleton with
``NB201SearchCell``s sharing one alpha of shape (6, 5) (AutoDL-Projects' ``search_model_darts.py``); its genotype is
the top-1 op per edge. ``NB201Network`` trains from scratch with ``darts-train --preset nb201``.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import keras
import numpy as np
from keras import layers, ops

from darts_tf import genotypes as gt
from darts_tf.bilevel import BilevelConfig, BilevelSearchModel
from darts_tf.collapse import CollapseGuards
from darts_tf.cnn.networks import _CellNetwork
from darts_tf.cnn.ops import Identity, Pool, ReLUConvBN, Zero, batch_norm
from darts_tf.genotypes import NB201_EDGES, NB201_NODES, NB201_PRIMITIVES, NB201Genotype
from darts_tf.numerics import at_least_float32

__all__ = ["NB201_EDGES", "NB201_NODES", "NB201_PRIMITIVES", "NB201Genotype", "NB201Cell", "NB201Network",
           "NB201SearchCell", "NB201SearchNetwork", "ResNetBasicBlock", "as_nb201_genotype",
           "build_nb201_search_network", "make_nb201_op", "nb201_parameter_count"]

def as_nb201_genotype(genotype: Union[str, dict, NB201Genotype, Sequence[str]]) -> NB201Genotype:
    """A NB201Genotype from itself, its architecture string, a name of ``genotypes.NB201_GENOTYPES``, a genotype JSON
    file or dict (kind 'nb201'), or a sequence of six op names."""
    if isinstance(genotype, (str, dict, NB201Genotype)):
        return gt.as_genotype(genotype, "nb201")
    return NB201Genotype(tuple(genotype))


def make_nb201_op(name: str, C: int) -> layers.Layer:
    """The op on one cell edge (stride 1, C -> C, affine BN as NAS-Bench-201's evaluated networks)."""
    if name == "none":
        return Zero(C, 1, True)
    if name == "skip_connect":
        return Identity(C, 1, True)
    if name == "nor_conv_1x1":
        return ReLUConvBN(C, 1, True, kernel_size=1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(C, 1, True, kernel_size=3)
    if name == "avg_pool_3x3":
        return Pool(C, 1, True, kind="avg")
    raise ValueError(f"Unknown NAS-Bench-201 op {name!r}; known: {', '.join(NB201_PRIMITIVES)}. "
                     f"Received: name={name!r}")


@keras.saving.register_keras_serializable(package="darts_tf")
class NB201Cell(layers.Layer):
    """A derived NAS-Bench-201 cell on C channels (input and output C channels, same spatial size)."""

    def __init__(self, genotype: Union[str, NB201Genotype], C: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(C, int) or C < 1:
            raise ValueError(f"Channel count must be a positive integer. Received: C={C!r}")
        self.genotype = as_nb201_genotype(genotype)
        self.C = C
        self.edge_ops = [make_nb201_op(op, C) for op in self.genotype.ops]

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.C:
            raise ValueError(f"NB201Cell keeps its channel count; input must have C={self.C} channels. "
                             f"Received: input_shape={tuple(input_shape)}")
        self.built = True  # children build on first call

    def call(self, x, training=False):
        nodes = [x]
        for j in range(1, NB201_NODES):
            s = None
            for k, (to, i) in enumerate(NB201_EDGES):
                if to == j:
                    h = self.edge_ops[k](nodes[i], training=training)
                    s = h if s is None else s + h
            nodes.append(s)
        return nodes[-1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "genotype": self.genotype.to_string(), "C": self.C}


@keras.saving.register_keras_serializable(package="darts_tf")
class ResNetBasicBlock(layers.Layer):
    """NAS-Bench-201's reduction block (``ResNetBasicblock``): ReLU-Conv3x3(stride)-BN, ReLU-Conv3x3-BN, plus a
    shortcut: 2x2 avg pool + bias-free 1x1 conv at stride 2, ReLU-Conv1x1-BN when only the width changes, else
    identity. Convs pad by 1 explicitly, so stride 2 samples the same positions as PyTorch's padding=1."""

    def __init__(self, C_out: int, stride: int = 2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(C_out, int) or C_out < 1:
            raise ValueError(f"Channel count must be a positive integer. Received: C_out={C_out!r}")
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicBlock stride must be 1 or 2. Received: stride={stride!r}")
        self.C_out, self.stride = C_out, stride
        self.pad = layers.ZeroPadding2D(1)
        self.conv_a = layers.Conv2D(C_out, 3, strides=stride, padding="valid", use_bias=False)
        self.bn_a = batch_norm(True)
        self.conv_b = layers.Conv2D(C_out, 3, padding="same", use_bias=False)
        self.bn_b = batch_norm(True)
        self.down_pool = layers.AveragePooling2D(2, strides=2, padding="valid") if stride == 2 else None
        self.down_conv = None
        self.down_bn = None

    def build(self, input_shape):
        C_in = input_shape[-1]
        if self.stride == 2 and any(d is not None and d % 2 for d in input_shape[1:3]):
            raise ValueError("ResNetBasicBlock at stride 2 needs even spatial sizes (its conv and 2x2-pool shortcut "
                             "disagree on odd ones, as in the official code). "
                             f"Received: input_shape={tuple(input_shape)}")
        if self.stride == 2:
            self.down_conv = layers.Conv2D(self.C_out, 1, use_bias=False)
        elif C_in != self.C_out:
            self.down_conv = layers.Conv2D(self.C_out, 1, use_bias=False)
            self.down_bn = batch_norm(True)
        self.built = True

    def call(self, x, training=False):
        y = self.bn_a(self.conv_a(self.pad(ops.relu(x))), training=training)
        y = self.bn_b(self.conv_b(ops.relu(y)), training=training)
        if self.stride == 2:
            residual = self.down_conv(self.down_pool(x))
        elif self.down_conv is not None:
            residual = self.down_bn(self.down_conv(ops.relu(x)), training=training)
        else:
            residual = x
        return residual + y

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.stride
        return (n, None if h is None else h // s, None if w is None else w // s, self.C_out)

    def get_config(self):
        return {**super().get_config(), "C_out": self.C_out, "stride": self.stride}


def _make_skeleton(model, C: int, N: int, num_classes: int, make_cell) -> None:
    """NAS-Bench-201's TinyNetwork layers on `model`: stem conv + BN to C, three stages of N cells
    (``make_cell(width, name)``) at C, 2C, 4C with a residual reduction block before the second and third, the
    last BN, global pool and classifier (the evaluation network and the supernet share it)."""
    model.stem_conv = layers.Conv2D(C, 3, padding="same", use_bias=False, name="stem_conv")
    model.stem_bn = batch_norm(True, name="stem_bn")
    model.blocks = []
    for stage, width in enumerate((C, 2 * C, 4 * C)):
        if stage:
            model.blocks.append(ResNetBasicBlock(width, 2, name=f"reduction_{stage}"))
        model.blocks.extend(make_cell(width, f"cell_{stage}_{k}") for k in range(N))
    model.last_bn = batch_norm(True, name="last_bn")
    model.global_pooling = layers.GlobalAveragePooling2D()
    model.classifier = layers.Dense(num_classes, name="classifier")


@keras.saving.register_keras_serializable(package="darts_tf")
class NB201Network(_CellNetwork):
    """NAS-Bench-201's evaluation network (TinyNetwork) for one cell genotype; ``call`` returns logits.

    Trained by the evaluation networks' step (``darts_tf.cnn.networks._CellNetwork``: cross-entropy, L2 weight decay
    added to the gradient, optional clip); it has no auxiliary head and no drop-path (NAS-Bench-201 uses neither).
    """

    genotype_kind = "nb201"

    def __init__(self, genotype: Union[str, NB201Genotype] = "ResNet", C: int = 16, N: int = 5,
                 num_classes: int = 10, **kwargs):
        for key, value in (("C", C), ("N", N), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer. Received: {key}={value!r}")
        super().__init__(genotype, num_classes, num_layers=N, auxiliary=False, **kwargs)
        self.C, self.N = C, N
        _make_skeleton(self, C, N, num_classes, lambda width, name: NB201Cell(self.genotype, width, name=name))

    def build(self, input_shape):
        """Builds every weight by one inference pass on zeros (Keras calls this when reloading a `.keras` file)."""
        if self.built:
            return
        self.forward(ops.zeros((1,) + tuple(input_shape[1:])), training=False)
        self.built = True

    def forward(self, x, training=False):
        """(logits, None): no auxiliary head."""
        x = self.stem_bn(self.stem_conv(x), training=training)
        for block in self.blocks:
            x = block(x, training=training)
        x = ops.relu(self.last_bn(x, training=training))
        return at_least_float32(self.classifier(self.global_pooling(x))), None

    def get_config(self):
        return {"genotype": self.genotype.to_string(), "C": self.C, "N": self.N, "num_classes": self.num_classes,
                "name": self.name}


def nb201_parameter_count(genotype: Union[str, NB201Genotype], C: int = 16, N: int = 5,
                          num_classes: int = 10) -> int:
    """Closed form of ``count_parameters(NB201Network(...))`` (conv weights, BN gamma/beta, classifier), no build."""
    g = as_nb201_genotype(genotype)
    per_op: Dict[str, int] = {"nor_conv_1x1": 1, "nor_conv_3x3": 9}
    total = 3 * 9 * C + 2 * C  # stem
    for width in (C, 2 * C, 4 * C):
        total += N * sum(per_op[op] * width * width + 2 * width for op in g.ops if op in per_op)
    for c_in in (C, 2 * C):  # reduction blocks c_in -> 2 c_in
        c_out = 2 * c_in
        total += 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out + c_in * c_out
    return total + 2 * 4 * C + 4 * C * num_classes + num_classes


def _search_op(name: str, C: int) -> layers.Layer:
    """A candidate op of the NAS-Bench-201 supernet: as ``make_nb201_op`` but BN without affine parameters (the
    official search cells build their ops with affine=False); pools get no BN, as there."""
    if name in ("nor_conv_1x1", "nor_conv_3x3"):
        return ReLUConvBN(C, 1, False, kernel_size=1 if name == "nor_conv_1x1" else 3)
    return make_nb201_op(name, C)


@keras.saving.register_keras_serializable(package="darts_tf")
class NB201SearchCell(layers.Layer):
    """The NAS-Bench-201 supernet cell: every edge is the softmax-weighted sum of all ``NB201_PRIMITIVES``.

    ``call(x, weights)`` takes the mixing weights of shape (6, 5) (rows: edges in ``NB201_EDGES`` order, columns:
    ops in ``NB201_PRIMITIVES`` order), already softmaxed by the caller, who owns the architecture parameters.
    ``derive(alphas)`` keeps the top-1 op per edge ('none' included, as the official DARTS-on-NAS-Bench-201 code).
    """

    def __init__(self, C: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(C, int) or C < 1:
            raise ValueError(f"Channel count must be a positive integer. Received: C={C!r}")
        self.C = C
        self.edge_candidates = [[_search_op(name, C) for name in NB201_PRIMITIVES] for _ in NB201_EDGES]

    def build(self, *args, **kwargs):
        self.built = True  # candidates build on first call

    def call(self, x, weights, training=False):
        if tuple(weights.shape) != (len(NB201_EDGES), len(NB201_PRIMITIVES)):
            raise ValueError(f"NB201SearchCell mixing weights have shape ({len(NB201_EDGES)}, {len(NB201_PRIMITIVES)})."
                             f" Received: weights.shape={tuple(weights.shape)}")
        nodes = [x]
        for j in range(1, NB201_NODES):
            s = None
            for k, (to, i) in enumerate(NB201_EDGES):
                if to != j:
                    continue
                for o, (name, op) in enumerate(zip(NB201_PRIMITIVES, self.edge_candidates[k])):
                    if name == "none":  # exactly zero, and zero gradient to its weight
                        continue
                    h = weights[k, o] * op(nodes[i], training=training)
                    s = h if s is None else s + h
            nodes.append(s)
        return nodes[-1]

    @staticmethod
    def derive(alphas) -> NB201Genotype:
        """The discrete cell: the op with the largest architecture weight on each edge."""
        return gt.derive_nb201_genotype(keras.ops.convert_to_numpy(alphas))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "C": self.C}


# The collapse guards that act inside the DARTS supernet's mixed ops or on its normal cell's derivation: the
# NAS-Bench-201 supernet has neither (SDARTS-RS and beta-decay act on alpha alone and do apply).
_UNSUPPORTED_GUARDS = ("skip_dropout", "aux_skip_beta", "max_skip_connects")


class NB201SearchNetwork(BilevelSearchModel):
    """The NAS-Bench-201 supernet (AutoDL-Projects' TinyNetworkDarts): 3x3 conv stem to C + BN, N search cells at C,
    a ``ResNetBasicBlock`` reduction, N cells at 2C, a reduction, N cells at 4C, BN + ReLU, global pool, linear.
    One architecture variable ``alpha_cell`` of shape (6, 5) is shared by every cell (NAS-Bench-201 searches one
    cell); ``genotype()`` is its top-1 op per edge. The official DARTS-on-NAS-Bench-201 search uses C=16, N=5."""

    primitives = NB201_PRIMITIVES  # the alpha's column names (TensorBoard views)

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, bilevel: Optional[BilevelConfig] = None,
                 guards: Optional[CollapseGuards] = None, **kwargs):
        for key, value in (("C", C), ("N", N), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer. Received: {key}={value!r}")
        used = [name for name in _UNSUPPORTED_GUARDS if guards is not None and getattr(guards, name)]
        if used:
            raise ValueError(f"The NAS-Bench-201 supernet has no mixed-op skip connection to drop or to add beside "
                             f"the softmax, nor a DARTS normal cell to cap: leave {', '.join(used)} off. Received: "
                             + ", ".join(f"{name}={getattr(guards, name)}" for name in used))
        super().__init__(bilevel=bilevel, guards=guards, **kwargs)
        self.C, self.N, self.num_classes = C, N, num_classes
        _make_skeleton(self, C, N, num_classes, lambda width, name: NB201SearchCell(width, name=name))
        self.alpha_cell = self.add_weight(shape=(len(NB201_EDGES), len(NB201_PRIMITIVES)),
                                          initializer=keras.initializers.RandomNormal(stddev=1e-3),
                                          name=gt.NB201_ALPHA)

    @property
    def arch_variables(self):
        return [self.alpha_cell]

    def call(self, x, training=False):
        x = self.stem_bn(self.stem_conv(x), training=training)
        weights = ops.cast(ops.softmax(self.alpha_cell, axis=-1), x.dtype)
        for block in self.blocks:
            x = block(x, weights, training=training) if isinstance(block, NB201SearchCell) else \
                block(x, training=training)
        x = ops.relu(self.last_bn(x, training=training))
        return at_least_float32(self.classifier(self.global_pooling(x)))

    def genotype(self) -> NB201Genotype:
        """The discrete cell the current alpha encodes: the top-1 op per edge ('none' included)."""
        return gt.derive_nb201_genotype(np.asarray(self.alpha_cell.numpy()))

    def alphas_numpy(self):
        return {gt.NB201_ALPHA: np.asarray(self.alpha_cell.numpy())}

    def get_config(self):
        return {**super().get_config(), "C": self.C, "N": self.N, "num_classes": self.num_classes}


def build_nb201_search_network(input_shape, num_classes: int, **kwargs) -> NB201SearchNetwork:
    """A built NAS-Bench-201 supernet for images of `input_shape` (H, W, channels; H and W divisible by 4)."""
    model = NB201SearchNetwork(num_classes=num_classes, **kwargs)
    model(np.zeros((1,) + tuple(input_shape), np.float32))
    return model
