"""Numerics shared by every network: dtype handling under mixed precision and batch statistics whose second
derivatives are right (what the exact second-order architecture gradient differentiates)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def at_least_float32(x):
    """`x` in float32 when it is a half type (mixed precision: logits and losses in float32), else unchanged (a float64
    network stays float64 end to end, which the gradient checks rely on)."""
    return ops.cast(x, "float32") if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16") else x


def moments(x, axes):
    """Batch mean and (biased) variance whose second derivatives are right.

    ``tf.nn.moments`` (and so ``keras.ops.moments``) computes the variance around ``stop_gradient(mean)``: its first
    derivative is exact (the path through the mean contributes zero), but the second is not (the Hessian of the
    variance loses its -2/N^2 term, ~1.6% of a BatchNorm Hessian). The exact second-order architecture gradient
    differentiates the gradient, so every BatchNorm in a search network takes its statistics from here.
    """
    mean = tf.reduce_mean(x, axis=axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axis=axes, keepdims=True)
    return tf.squeeze(mean, axis=axes), tf.squeeze(variance, axis=axes)
