"""Candidate operations of the convolutional search space (paper sect. 3.1.1), as Keras 3 layers.

Each op keeps its input's channel count ``C`` (the cell's width), preserves the spatial size at
stride 1 and halves it at stride 2. ``OPS[name](C, stride, affine)`` builds one; it is the only table
from op name to constructor. Order inside an op is ReLU-Conv-BN, as the reference.
"""

from __future__ import annotations

from typing import Callable, Dict

import keras
import tensorflow as tf
from keras import layers, ops

from darts_tf.numerics import at_least_float32, graph_constant, moments, replicas_in_step, tracks_statistics

_BN_EPSILON = 1e-5  # PyTorch's default, which the reference uses
_BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 == Keras momentum 0.9


@keras.saving.register_keras_serializable(package="darts_tf")
class FusedBatchNorm(layers.BatchNormalization):
    """Keras BatchNormalization whose training-mode call on NHWC images is one ``FusedBatchNormV3`` op.

    Same variables, config and outputs as the parent, but one op forward and one backward instead of ~40 and ~60
    small ones, and the moving averages updated by the same op: the search supernet holds hundreds of BNs and every
    search step evaluates it up to five times, so the decomposed form dominated both the graph size (tracing and
    Grappler time, memory) and the per-op runtime overhead. The moving variance averages the unbiased batch variance,
    as PyTorch's BatchNorm (the reference's) and the fused kernel do (Keras' own averages the biased one; the two
    differ by the factor n / (n - 1), n = batch x height x width); momentum is Keras' (0.9 = PyTorch's 0.1).
    Inside ``numerics.untracked_statistics`` the moving statistics are not updated. Other cases fall back to the
    parent.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm or self.synchronized:
            return super().call(inputs, training=training, mask=mask)
        if len(inputs.shape) != 4 or self.axis not in (-1, 3) or inputs.dtype not in (tf.float32, tf.float16, tf.bfloat16):
            return self._decomposed_training_call(inputs)
        if replicas_in_step() > 1:  # the global batch's statistics (synchronised BN), which the fused op cannot take
            return self._decomposed_training_call(inputs)
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else graph_constant(1.0, [channels])
        offset = tf.cast(self.beta, tf.float32) if self.center else graph_constant(0.0, [channels])
        # with exponential_avg_factor f < 1 the op also returns (1 - f) * moving + f * batch statistic
        tracked = tracks_statistics()
        factor = 1.0 - self.momentum if tracked else 1.0
        mean, variance = ((tf.cast(self.moving_mean, tf.float32), tf.cast(self.moving_variance, tf.float32)) if tracked
                          else (graph_constant(0.0, [0]),) * 2)
        y, moving_mean, moving_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=mean, variance=variance, epsilon=self.epsilon,
            exponential_avg_factor=factor, data_format="NHWC", is_training=True)
        if tracked:
            self.moving_mean.assign(tf.cast(moving_mean, self.moving_mean.dtype))
            self.moving_variance.assign(tf.cast(moving_variance, self.moving_variance.dtype))
        return ops.cast(y, self.compute_dtype)

    def _decomposed_training_call(self, inputs):
        """Training mode for the shapes and dtypes FusedBatchNormV3 does not take (float64, other axes) and under a
        multi-replica step: the same arithmetic with ``moments`` (exact second derivatives, the global batch's
        statistics across replicas) instead of ``tf.nn.moments``."""
        axis = self.axis % len(inputs.shape)
        x = at_least_float32(inputs)
        reduced = [i for i in range(len(inputs.shape)) if i != axis]
        mean, variance = moments(x, reduced)
        shape = [1] * len(inputs.shape)
        shape[axis] = inputs.shape[axis]
        y = (x - tf.reshape(mean, shape)) * tf.reshape(tf.math.rsqrt(variance + self.epsilon), shape)
        if self.scale:
            y = y * tf.reshape(tf.cast(self.gamma, y.dtype), shape)
        if self.center:
            y = y + tf.reshape(tf.cast(self.beta, y.dtype), shape)
        if tracks_statistics():
            # the global batch's count: every replica holds an equal share (bilevel.check_replica_batch)
            n = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), reduced)) * replicas_in_step(), variance.dtype)
            unbiased = variance * n / tf.maximum(n - 1.0, 1.0)
            rate = 1.0 - self.momentum
            for var, value in ((self.moving_mean, mean), (self.moving_variance, unbiased)):
                var.assign(var * self.momentum + tf.cast(tf.stop_gradient(value), var.dtype) * rate)
        return ops.cast(y, self.compute_dtype)


def batch_norm(affine: bool, name=None) -> layers.BatchNormalization:
    """BatchNorm as in the reference; `affine=False` (search) drops gamma and beta."""
    return FusedBatchNorm(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, center=affine, scale=affine, name=name)


def _check(C: int, stride: int) -> None:
    if not isinstance(C, int) or C < 1:
        raise ValueError(f"Channel count must be a positive integer. Received: C={C!r}")
    if stride not in (1, 2):
        raise ValueError(f"Op stride must be 1 or 2. Received: stride={stride!r}")


@keras.saving.register_keras_serializable(package="darts_tf")
class Op(layers.Layer):
    """Base for ops: stores (C, stride, affine) and serialises exactly those."""

    def __init__(self, C: int, stride: int = 1, affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        _check(C, stride)
        self.C, self.stride, self.affine = C, stride, affine

    def build(self, input_shape):
        self.built = True  # sub-layers build on first call

    def get_config(self):
        return {**super().get_config(), "C": self.C, "stride": self.stride, "affine": self.affine}

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.stride
        return (n, None if h is None else -(-h // s), None if w is None else -(-w // s), self.C)


@keras.saving.register_keras_serializable(package="darts_tf")
class ReLUConvBN(Op):
    """ReLU -> Conv(kernel, stride) -> BN: the cell preprocessing and the 1x1 channel adapters."""

    def __init__(self, C, stride=1, affine=True, kernel_size: int = 1, **kwargs):
        super().__init__(C, stride, affine, **kwargs)
        self.kernel_size = kernel_size
        self.conv = layers.Conv2D(C, kernel_size, strides=stride, padding="same", use_bias=False)
        self.bn = batch_norm(affine)

    def call(self, x, training=False):
        return self.bn(self.conv(ops.relu(x)), training=training)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="darts_tf")
class DilConv(Op):
    """ReLU -> depthwise conv (dilated) -> 1x1 conv -> BN.

    Keras convolutions refuse dilation together with stride > 1, so a strided dilated op runs the
    depthwise conv at stride 1 and keeps every second output: the same function and parameters.
    """

    def __init__(self, C, stride=1, affine=True, kernel_size: int = 3, dilation: int = 2, **kwargs):
        super().__init__(C, stride, affine, **kwargs)
        self.kernel_size, self.dilation = kernel_size, dilation
        direct = dilation == 1
        self.depthwise = layers.DepthwiseConv2D(kernel_size, strides=stride if direct else 1, padding="same",
                                                dilation_rate=dilation, use_bias=False)
        self.pointwise = layers.Conv2D(C, 1, use_bias=False)
        self.bn = batch_norm(affine)

    def call(self, x, training=False):
        y = self.depthwise(ops.relu(x))
        if self.dilation != 1 and self.stride != 1:
            y = y[:, :: self.stride, :: self.stride, :]
        return self.bn(self.pointwise(y), training=training)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "dilation": self.dilation}


@keras.saving.register_keras_serializable(package="darts_tf")
class SepConv(Op):
    """Separable conv applied twice (the reference's SepConv): (ReLU-DW-1x1-BN) at `stride`, then at 1."""

    def __init__(self, C, stride=1, affine=True, kernel_size: int = 3, **kwargs):
        super().__init__(C, stride, affine, **kwargs)
        self.kernel_size = kernel_size
        self.first = DilConv(C, stride, affine, kernel_size=kernel_size, dilation=1)
        self.second = DilConv(C, 1, affine, kernel_size=kernel_size, dilation=1)

    def call(self, x, training=False):
        return self.second(self.first(x, training=training), training=training)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="darts_tf")
class Conv7x1_1x7(Op):
    """ReLU -> 1x7 conv -> 7x1 conv -> BN (AmoebaNet's factorised 7x7)."""

    def __init__(self, C, stride=1, affine=True, **kwargs):
        super().__init__(C, stride, affine, **kwargs)
        self.conv1 = layers.Conv2D(C, (1, 7), strides=(1, stride), padding="same", use_bias=False)
        self.conv2 = layers.Conv2D(C, (7, 1), strides=(stride, 1), padding="same", use_bias=False)
        self.bn = batch_norm(affine)

    def call(self, x, training=False):
        return self.bn(self.conv2(self.conv1(ops.relu(x))), training=training)


@keras.saving.register_keras_serializable(package="darts_tf")
class Pool(Op):
    """3x3 max or average pooling ('same' padding; the average excludes padding as count_include_pad=False)."""

    def __init__(self, C, stride=1, affine=True, kind: str = "max", **kwargs):
        super().__init__(C, stride, affine, **kwargs)
        if kind not in ("max", "avg"):
            raise ValueError(f"Pool kind must be 'max' or 'avg'. Received: kind={kind!r}")
        self.kind = kind
        cls = layers.MaxPooling2D if kind == "max" else layers.AveragePooling2D
        self.pool = cls(3, strides=stride, padding="same")

    def call(self, x, training=False):
        return self.pool(x)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


@keras.saving.register_keras_serializable(package="darts_tf")
class Identity(Op):
    def call(self, x, training=False):
        return x


@keras.saving.register_keras_serializable(package="darts_tf")
class Zero(Op):
    """The 'none' op: zeros, strided. Built from the start (no weights): mixed ops skip calling it, and Keras' fit
    under a distribution strategy rebuilds a model symbolically when any of its layers is unbuilt."""

    def __init__(self, C, stride=1, affine=True, **kwargs):
        super().__init__(C, stride, affine, **kwargs)
        self.built = True

    def call(self, x, training=False):
        return ops.zeros_like(x[:, :: self.stride, :: self.stride, :])


@keras.saving.register_keras_serializable(package="darts_tf")
class FactorizedReduce(Op):
    """Halves the spatial size with two offset 1x1 stride-2 convs (C/2 channels each), concatenated, then BN."""

    def __init__(self, C, stride=2, affine=True, **kwargs):
        super().__init__(C, stride, affine, **kwargs)
        if C % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count. Received: C={C}")
        self.conv1 = layers.Conv2D(C // 2, 1, strides=2, use_bias=False)
        self.conv2 = layers.Conv2D(C // 2, 1, strides=2, use_bias=False)
        self.bn = batch_norm(affine)

    def call(self, x, training=False):
        x = ops.relu(x)
        shifted = ops.pad(x[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])  # keeps odd sizes in step
        return self.bn(ops.concatenate([self.conv1(x), self.conv2(shifted)], axis=-1), training=training)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else -(-h // 2), None if w is None else -(-w // 2), self.C)


def _skip(C, stride, affine):
    return Identity(C, 1, affine) if stride == 1 else FactorizedReduce(C, 2, affine)


OPS: Dict[str, Callable[[int, int, bool], layers.Layer]] = {
    "none": lambda C, stride, affine: Zero(C, stride, affine),
    "max_pool_3x3": lambda C, stride, affine: Pool(C, stride, affine, kind="max"),
    "avg_pool_3x3": lambda C, stride, affine: Pool(C, stride, affine, kind="avg"),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, stride, affine, kernel_size=3),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, stride, affine, kernel_size=5),
    "sep_conv_7x7": lambda C, stride, affine: SepConv(C, stride, affine, kernel_size=7),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, stride, affine, kernel_size=3, dilation=2),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, stride, affine, kernel_size=5, dilation=2),
    "conv_7x1_1x7": lambda C, stride, affine: Conv7x1_1x7(C, stride, affine),
}


def make_op(name: str, C: int, stride: int, affine: bool = True) -> layers.Layer:
    if name not in OPS:
        raise ValueError(f"Unknown op {name!r}. Known: {', '.join(OPS)}.")
    return OPS[name](C, stride, affine)
