"""The continuous relaxation of the CNN search space (paper sect. 2.2, eq. 2): mixed ops, search cells
and the supernet whose architecture variables alpha_normal / alpha_reduce are trained by the bilevel step.

Two collapse guards (``darts_tf.collapse``) live in the mixed op: P-DARTS' dropout on the identity skip_connect
candidate, and DARTS-' auxiliary skip connection beside the softmax; their per-epoch values come from the network's
``guard_values``.

PC-DARTS (Xu et al., ICLR 2020) adds two options: partial channel connections (`partial_channels` K: the candidates
of every edge see 1/K of its channels, the others bypass them, then a channel shuffle) and edge normalisation
(`edge_normalization`: per cell type a vector beta over the edges, softmax over each node's incoming edges, which
weighs the edges' outputs in the node sum and their strength in ``genotype()``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from darts_tf import genotypes as gt
from darts_tf.bilevel import BilevelConfig, BilevelSearchModel
from darts_tf.collapse import CollapseGuards
from darts_tf.cnn.ops import FactorizedReduce, Identity, ReLUConvBN, batch_norm, make_op
from darts_tf.numerics import at_least_float32


@keras.saving.register_keras_serializable(package="darts_tf")
class MixedOp(layers.Layer):
    """o_bar(x) = sum_o softmax(alpha)_o * o(x) over the primitives (eq. 2); BN affine off, pools followed by BN.

    Partial channels (PC-DARTS, `partial_channels` K > 1): the candidates are built on C/K channels and see the first
    C/K channels of x; the other channels bypass them (on a stride-2 edge through a 2x2 max pool of stride 2), the two
    parts are concatenated and channel-shuffled with K groups (``channel_shuffle``). K = 1 is the plain mixed op.

    Collapse guards (off by default): `skip_dropout` drops the identity skip_connect's output elementwise at the rate
    given to ``call`` in training (P-DARTS: ``Identity`` candidates only, so a reduction edge's FactorizedReduce skip
    is left alone; inverted dropout, a seeded stream); `aux_skip` adds beta * skip(x) outside the softmax (DARTS-:
    the identity, or on a reduction edge its own FactorizedReduce, as DARTS-' code), with beta given to ``call``.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str] = gt.CNN_PRIMITIVES, skip_dropout: bool = False,
                 aux_skip: bool = False, partial_channels: int = 1, **kwargs):
        super().__init__(**kwargs)
        check_partial_channels(partial_channels, C)
        self.C, self.stride, self.primitives = C, stride, tuple(primitives)
        self.skip_dropout, self.aux_skip = bool(skip_dropout), bool(aux_skip)
        self.partial_channels = int(partial_channels)
        C = C // self.partial_channels  # the channels the candidates see
        self.candidates = []
        for name in self.primitives:
            op = make_op(name, C, stride, affine=False)
            if "pool" in name:
                op = keras.Sequential([op, batch_norm(affine=False)])
            self.candidates.append(op)
        self.drops_skip = self.skip_dropout and stride == 1 and "skip_connect" in self.primitives
        self.dropout_seed = keras.random.SeedGenerator(name="skip_dropout_seed") if self.drops_skip else None
        self.aux_op = (FactorizedReduce(C, 2, affine=False) if stride == 2 else Identity(C, 1, affine=False)) \
            if self.aux_skip else None

    def build(self, input_shape):
        self.built = True  # candidates build on first call

    def call(self, x, weights, training=False, skip_dropout=None, aux_beta=None):
        if self.partial_channels == 1:
            return self.mixed(x, weights, training, skip_dropout, aux_beta)
        # one Split (gradient: one Concat) rather than two StridedSlices with full-size gradients
        selected, bypassed = ops.split(x, [self.C // self.partial_channels], axis=-1)
        out = self.mixed(selected, weights, training, skip_dropout, aux_beta)
        if self.stride == 2:
            bypassed = ops.max_pool(bypassed, 2, 2, padding="same")  # "same": odd sizes match the candidates' ceil
        return channel_shuffle(ops.concatenate([out, bypassed], axis=-1), self.partial_channels)

    def mixed(self, x, weights, training=False, skip_dropout=None, aux_beta=None):
        """The weighted sum of the candidates (and the DARTS- auxiliary skip) on `x`."""
        outputs, used = [], []
        for i, (name, op) in enumerate(zip(self.primitives, self.candidates)):
            if name == "none":  # contributes exactly zero (and zero gradient to its alpha), so skip the work
                continue
            y = op(x, training=training)
            if name == "skip_connect" and self.drops_skip and training and skip_dropout is not None:
                y = self.drop_skip(y, skip_dropout)
            outputs.append(y)
            used.append(i)
        out = weighted_sum(weights, used, outputs)
        if self.aux_op is not None and aux_beta is not None:
            out = out + ops.cast(aux_beta, out.dtype) * self.aux_op(x, training=training)
        return out

    def drop_skip(self, y, rate):
        """Inverted dropout at `rate` (a tensor): each element kept with probability 1 - rate and scaled by
        1 / (1 - rate); the mask from the op's seeded stream (``stateless_call`` evaluations of one step share it)."""
        rate = ops.cast(rate, y.dtype)
        keep = ops.cast(keras.random.uniform(ops.shape(y), dtype=y.dtype, seed=self.dropout_seed) >= rate, y.dtype)
        return y * keep / (1.0 - rate)

    def get_config(self):
        return {**super().get_config(), "C": self.C, "stride": self.stride, "primitives": list(self.primitives),
                "skip_dropout": self.skip_dropout, "aux_skip": self.aux_skip, "partial_channels": self.partial_channels}


def weighted_sum(weights, indices: Sequence[int], values):
    """sum_k weights[indices[k]] * values[k] as one matrix product of the weights with the stacked values.

    The same sum as a product and an addition per candidate, but its gradient is a few ops instead of half a dozen per
    candidate (the gradient of a scalar times an image: broadcast shapes, a product, a reduction, a reshape), and the
    supernet has seven candidates on each of its 112 edges in each of up to five passes a step (the first-order
    step's gradient ops fell by 29%: benchmarks/RESULTS.md, issue 23). `weights` is one edge's row (or its entries as
    a list).
    """
    if isinstance(weights, (list, tuple)) or list(indices) != list(range(weights.shape[0])):
        # one Unpack and one Pack (gradients: one each) rather than a gather, whose gradient is sparse
        rows = weights if isinstance(weights, (list, tuple)) else ops.unstack(weights, num=weights.shape[0])
        weights = ops.stack([rows[i] for i in indices])
    shape = values[0].shape
    flat = tf.reshape(tf.stack(values, axis=0), [len(values), -1])
    total = tf.matmul(tf.cast(weights, flat.dtype)[None, :], flat)
    return tf.reshape(total, shape if shape.is_fully_defined() else tf.shape(values[0]))


def check_partial_channels(partial_channels, C: int, flags: bool = False) -> None:
    """A ValueError unless `partial_channels` (K) is an integer >= 1 that divides the channel count `C`; with `flags`
    the message names the command-line flags (`C` is then --init_channels)."""
    dash = "--" if flags else ""
    if isinstance(partial_channels, bool) or not isinstance(partial_channels, (int, np.integer)) or partial_channels < 1:
        raise ValueError(f"{dash}partial_channels must be an integer >= 1 (1: every channel through the mixed op). "
                         f"Received: partial_channels={partial_channels!r}")
    if C % partial_channels:
        raise ValueError(
            f"--partial_channels must divide --init_channels (then it divides every cell's channel count too: C, 2C, "
            f"4C). Received: partial_channels={partial_channels}, init_channels={C}" if flags else
            f"partial_channels must divide the channel count of every mixed op. Received: "
            f"partial_channels={partial_channels}, C={C}")


def channel_shuffle(x, groups: int):
    """ShuffleNet's channel shuffle on NHWC: channel g * (C / groups) + j goes to j * groups + g (a permutation;
    the channels of each group end up interleaved with the others')."""
    if groups == 1:
        return x
    shape = ops.shape(x)
    channels = shape[-1]
    x = ops.reshape(x, (-1, shape[1], shape[2], groups, channels // groups))
    return ops.reshape(ops.transpose(x, (0, 1, 2, 4, 3)), (-1, shape[1], shape[2], channels))


def node_softmax(beta, steps: int, num_inputs: int = 2):
    """The edge weights of edge normalisation: softmax of `beta` (one entry per edge, in the cell's edge order) over
    the incoming edges of each node (``genotypes.normalize_edge_weights`` is the NumPy twin)."""
    pieces, start = [], 0
    for node in range(steps):
        n = num_inputs + node
        pieces.append(ops.softmax(beta[start:start + n], axis=-1))
        start += n
    return ops.concatenate(pieces, axis=0)


@keras.saving.register_keras_serializable(package="darts_tf")
class SearchCell(layers.Layer):
    """A cell of the supernet: inputs are the two previous cells' outputs, `steps` nodes, every edge a MixedOp
    (on 1/`partial_channels` of the channels), output = concat of the last `multiplier` nodes."""

    def __init__(self, C: int, reduction: bool, reduction_prev: bool, steps: int = gt.CNN_STEPS,
                 multiplier: int = gt.CNN_STEPS, primitives: Sequence[str] = gt.CNN_PRIMITIVES,
                 skip_dropout: bool = False, aux_skip: bool = False, partial_channels: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.C, self.reduction, self.reduction_prev = C, reduction, reduction_prev
        self.steps, self.multiplier, self.primitives = steps, multiplier, tuple(primitives)
        self.skip_dropout, self.aux_skip = bool(skip_dropout), bool(aux_skip)
        self.partial_channels = int(partial_channels)
        self.preprocess0 = FactorizedReduce(C, 2, affine=False) if reduction_prev else ReLUConvBN(C, 1, affine=False)
        self.preprocess1 = ReLUConvBN(C, 1, affine=False)
        self.edges = []
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(C, stride, self.primitives, skip_dropout, aux_skip, partial_channels))

    def build(self, *args, **kwargs):
        self.built = True  # children build on first call (their input shapes depend on the graph)

    def call(self, s0, s1, weights, training=False, skip_dropout=None, aux_beta=None, edge_weights=None):
        """`skip_dropout` and `aux_beta`: the guards' values for every edge (``MixedOp``), None when off;
        `edge_weights`: edge normalisation's weight of every edge (``node_softmax``), None when off."""
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        weights = ops.unstack(weights, num=len(self.edges))  # per-edge rows without a StridedSlice(+Grad) each
        if edge_weights is not None:
            edge_weights = ops.unstack(edge_weights, num=len(self.edges))
        offset = 0
        for _ in range(self.steps):
            s = None
            for j, h in enumerate(states):
                y = self.edges[offset + j](h, weights[offset + j], training=training, skip_dropout=skip_dropout,
                                           aux_beta=aux_beta)
                if edge_weights is not None:
                    y = edge_weights[offset + j] * y
                s = y if s is None else s + y
            offset += len(states)
            states.append(s)
        return ops.concatenate(states[-self.multiplier:], axis=-1)

    def get_config(self):
        return {**super().get_config(), "C": self.C, "reduction": self.reduction, "reduction_prev": self.reduction_prev,
                "steps": self.steps, "multiplier": self.multiplier, "primitives": list(self.primitives),
                "skip_dropout": self.skip_dropout, "aux_skip": self.aux_skip, "partial_channels": self.partial_channels}


def reduction_layers(num_layers: int):
    """Cells that reduce: at 1/3 and 2/3 of the depth (as the reference)."""
    return {num_layers // 3, 2 * num_layers // 3}


class CNNSearchNetwork(BilevelSearchModel):
    """The DARTS supernet for image classification (8 cells, C=16 in the paper's search); `bilevel` is the search
    step's settings (``BilevelSearchModel``), `guards` its collapse guards (``darts_tf.collapse``; the skip_connect
    cap applies to ``genotype()``). PC-DARTS: `partial_channels` K (``MixedOp``; K must divide C, and so every
    cell's C, 2C, 4C) and `edge_normalization` (architecture variables beta_normal, beta_reduce beside the alphas)."""

    def __init__(self, C: int = 16, num_classes: int = 10, num_layers: int = 8, steps: int = gt.CNN_STEPS,
                 multiplier: int = gt.CNN_STEPS, stem_multiplier: int = 3, primitives: Sequence[str] = gt.CNN_PRIMITIVES,
                 bilevel: Optional[BilevelConfig] = None, guards: Optional[CollapseGuards] = None,
                 partial_channels: int = 1, edge_normalization: bool = False, **kwargs):
        super().__init__(bilevel=bilevel, guards=guards, **kwargs)
        if num_layers < 3:
            raise ValueError(f"The supernet needs at least 3 cells (reductions at 1/3 and 2/3). Received: num_layers={num_layers}")
        if C < 2 or C % 2:
            raise ValueError(f"Initial channels must be an even integer >= 2. Received: C={C}")
        check_partial_channels(partial_channels, C)
        self.partial_channels, self.edge_normalization = int(partial_channels), bool(edge_normalization)
        self.C, self.num_classes, self.num_layers = C, num_classes, num_layers
        self.steps, self.multiplier, self.primitives = steps, multiplier, tuple(primitives)
        self.stem_multiplier = stem_multiplier
        self.stem = keras.Sequential([layers.Conv2D(stem_multiplier * C, 3, padding="same", use_bias=False),
                                      batch_norm(affine=True)], name="stem")
        self.cells = []
        reduction_prev, C_curr = False, C
        for i in range(num_layers):
            reduction = i in reduction_layers(num_layers)
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(C_curr, reduction, reduction_prev, steps, multiplier, self.primitives,
                                         skip_dropout=bool(self.guards.skip_dropout),
                                         aux_skip=bool(self.guards.aux_skip_beta),
                                         partial_channels=self.partial_channels, name=f"cell_{i}"))
            reduction_prev = reduction
        self.global_pooling = layers.GlobalAveragePooling2D()
        self.classifier = layers.Dense(num_classes, name="classifier")
        num_edges = gt.CNN_SPACE.num_edges(steps)
        init = keras.initializers.RandomNormal(stddev=1e-3)
        self.alpha_normal = self.add_weight(shape=(num_edges, len(self.primitives)), initializer=init, name="alpha_normal")
        self.alpha_reduce = self.add_weight(shape=(num_edges, len(self.primitives)), initializer=init, name="alpha_reduce")
        self.beta_normal = self.beta_reduce = None
        if self.edge_normalization:  # PC-DARTS' edge weights, initialised as its alphas and betas (1e-3 * N(0, 1))
            self.beta_normal = self.add_weight(shape=(num_edges,), initializer=init, name="beta_normal")
            self.beta_reduce = self.add_weight(shape=(num_edges,), initializer=init, name="beta_reduce")

    def build(self, input_shape):
        # every layer builds on the first (eager) call; Keras' default would first trace the whole supernet
        # symbolically to build it, which took most of the build time (benchmarks/RESULTS.md, issue 23)
        self.built = True

    @property
    def arch_variables(self):
        betas = [self.beta_normal, self.beta_reduce] if self.edge_normalization else []
        return [self.alpha_normal, self.alpha_reduce, *betas]

    def call(self, x, training=False):
        w_normal = ops.softmax(self.alpha_normal, axis=-1)
        w_reduce = ops.softmax(self.alpha_reduce, axis=-1)
        e_normal = e_reduce = None
        if self.edge_normalization:
            e_normal, e_reduce = (node_softmax(b, self.steps) for b in (self.beta_normal, self.beta_reduce))
        s0 = s1 = self.stem(x, training=training)
        guards = {"skip_dropout": self.guard_values.get("skip_dropout"),
                  "aux_beta": self.guard_values.get("aux_skip_beta")}  # None where a guard is off
        for cell in self.cells:
            weights, edges = (w_reduce, e_reduce) if cell.reduction else (w_normal, e_normal)
            edges = None if edges is None else ops.cast(edges, s1.dtype)
            s0, s1 = s1, cell(s0, s1, ops.cast(weights, s1.dtype), training=training, edge_weights=edges, **guards)
        return at_least_float32(self.classifier(self.global_pooling(s1)))

    def genotype(self) -> gt.Genotype:
        """The discrete cell the current alphas encode (top-2 per node; at most ``guards.max_skip_connects``
        skip_connects in the normal cell when that is set; with edge normalisation, PC-DARTS' rule: every edge's op
        weights times its edge weight)."""
        return gt.derive_from_alphas(self.alphas_numpy(), primitives=self.primitives, k=2,
                                     max_skip_connects=self.guards.max_skip_connects)

    def alphas_numpy(self):
        """The architecture variables by name: alpha_normal, alpha_reduce (and beta_normal, beta_reduce with edge
        normalisation), as alphas.npz saves them."""
        return {v.name: np.asarray(v.numpy()) for v in self.arch_variables}

    def get_config(self):
        return {**super().get_config(), "C": self.C, "num_classes": self.num_classes, "num_layers": self.num_layers,
                "steps": self.steps, "multiplier": self.multiplier, "stem_multiplier": self.stem_multiplier,
                "primitives": list(self.primitives), "partial_channels": self.partial_channels,
                "edge_normalization": self.edge_normalization}


def build_cnn_search_network(input_shape, num_classes: int, **kwargs) -> CNNSearchNetwork:
    """A built supernet for images of `input_shape` (H, W, channels)."""
    model = CNNSearchNetwork(num_classes=num_classes, **kwargs)
    model(np.zeros((1,) + tuple(input_shape), np.float32))
    return model
