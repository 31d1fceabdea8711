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
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Sequence, Tuple, Union

import keras
from keras import layers, ops

from darts_tf.cnn.ops import Identity, Pool, ReLUConvBN, Zero, batch_norm

NB201_PRIMITIVES: Tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_NODES = 4  # node 0 is the input, node 3 the output
NB201_EDGES: Tuple[Tuple[int, int], ...] = tuple((j, i) for j in range(1, NB201_NODES) for i in range(j))
"""(to, from) of the six edges, in the order of the architecture string: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""


@dataclasses.dataclass(frozen=True)
class NB201Genotype:
    """One NAS-Bench-201 cell: ``ops[k]`` is the op on edge ``NB201_EDGES[k]``."""

    ops: Tuple[str, ...]

    def __post_init__(self):
        ops_ = tuple(self.ops) if not isinstance(self.ops, str) else None
        if ops_ is None or len(ops_) != len(NB201_EDGES):
            raise ValueError(f"A NAS-Bench-201 cell has {len(NB201_EDGES)} edge ops. Received: ops={self.ops!r}")
        for op in ops_:
            if op not in NB201_PRIMITIVES:
                raise ValueError(f"Unknown NAS-Bench-201 op {op!r}; known: {', '.join(NB201_PRIMITIVES)}. "
                                 f"Received: ops={self.ops!r}")
        object.__setattr__(self, "ops", ops_)

    @classmethod
    def from_string(cls, arch: str) -> "NB201Genotype":
        """Parses ``|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|``."""
        if not isinstance(arch, str):
            raise ValueError(f"A NAS-Bench-201 architecture string is a str. Received: arch={arch!r}")
        nodes = arch.split("+")
        if len(nodes) != NB201_NODES - 1:
            raise ValueError(f"A NAS-Bench-201 architecture string has {NB201_NODES - 1} '+'-separated nodes. "
                             f"Received: arch={arch!r}")
        ops_ = []
        for j, node in enumerate(nodes, start=1):
            if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
                raise ValueError(f"Node {j} must be written '|op~i|...|'. Received: node={node!r} in arch={arch!r}")
            tokens = node[1:-1].split("|")
            if len(tokens) != j:
                raise ValueError(f"Node {j} takes {j} inputs (0..{j - 1}). Received: node={node!r} in arch={arch!r}")
            for i, token in enumerate(tokens):
                op, sep, src = token.partition("~")
                if not sep or src != str(i):
                    raise ValueError(f"Input {i} of node {j} must be written 'op~{i}'. "
                                     f"Received: token={token!r} in arch={arch!r}")
                if op not in NB201_PRIMITIVES:
                    raise ValueError(f"Unknown NAS-Bench-201 op {op!r}; known: {', '.join(NB201_PRIMITIVES)}. "
                                     f"Received: token={token!r} in arch={arch!r}")
                ops_.append(op)
        return cls(tuple(ops_))

    def to_string(self) -> str:
        groups, k = [], 0
        for j in range(1, NB201_NODES):
            groups.append("|" + "|".join(f"{self.ops[k + i]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(groups)

    def __str__(self):
        return self.to_string()

    def node_inputs(self, j: int) -> Tuple[Tuple[str, int], ...]:
        """(op, input node) pairs that sum into node ``j``."""
        return tuple((op, i) for op, (to, i) in zip(self.ops, NB201_EDGES) if to == j)


def as_nb201_genotype(genotype: Union[str, NB201Genotype, Sequence[str]]) -> NB201Genotype:
    if isinstance(genotype, NB201Genotype):
        return genotype
    if isinstance(genotype, str):
        return NB201Genotype.from_string(genotype)
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


@keras.saving.register_keras_serializable(package="darts_tf")
class NB201Network(keras.Model):
    """NAS-Bench-201's evaluation network (TinyNetwork) for one cell genotype; ``call`` returns logits."""

    def __init__(self, genotype: Union[str, NB201Genotype], C: int = 16, N: int = 5, num_classes: int = 10,
                 **kwargs):
        super().__init__(**kwargs)
        for key, value in (("C", C), ("N", N), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer. Received: {key}={value!r}")
        self.genotype = as_nb201_genotype(genotype)
        self.C, self.N, self.num_classes = C, N, num_classes
        self.stem_conv = layers.Conv2D(C, 3, padding="same", use_bias=False, name="stem_conv")
        self.stem_bn = batch_norm(True, name="stem_bn")
        self.blocks = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                self.blocks.append(ResNetBasicBlock(width, 2, name=f"reduction_{stage}"))
            self.blocks.extend(NB201Cell(self.genotype, width, name=f"cell_{stage}_{k}") for k in range(N))
        self.last_bn = batch_norm(True, name="last_bn")
        self.global_pooling = layers.GlobalAveragePooling2D()
        self.classifier = layers.Dense(num_classes, name="classifier")

    def build(self, input_shape):
        """Builds every weight by one inference pass on zeros (Keras calls this when reloading a `.keras` file)."""
        if self.built:
            return
        self.call(ops.zeros((1,) + tuple(input_shape[1:])), training=False)
        self.built = True

    def call(self, x, training=False):
        x = self.stem_bn(self.stem_conv(x), training=training)
        for block in self.blocks:
            x = block(x, training=training)
        x = ops.relu(self.last_bn(x, training=training))
        return self.classifier(self.global_pooling(x))

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
        a = keras.ops.convert_to_numpy(alphas)
        if a.shape != (len(NB201_EDGES), len(NB201_PRIMITIVES)):
            raise ValueError(f"NAS-Bench-201 architecture weights have shape ({len(NB201_EDGES)}, "
                             f"{len(NB201_PRIMITIVES)}). Received: alphas.shape={a.shape}")
        return NB201Genotype(tuple(NB201_PRIMITIVES[int(k)] for k in a.argmax(axis=1)))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "C": self.C}
