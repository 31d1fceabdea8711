"""Numerics shared by every network: dtype handling under mixed precision, batch statistics whose second
derivatives are right (what the exact second-order architecture gradient differentiates), and the means over the
replicas of a ``tf.distribute`` step (``replica_mean``), which make a distributed search step equal the one-device
step on the same global batch.

Inside a step that a strategy runs on R replicas (``strategy.run``, which Keras' ``fit`` does for a model built in
``strategy.scope()``), every replica holds an equal share of the global batch. A mean over the global batch is then
the mean over the replicas of the replicas' means, and so is its gradient (the all-reduce is differentiable, its
gradient is the same all-reduce, so second derivatives go through it); batch statistics are the global batch's
(``moments``: synchronised batch normalisation). Outside such a step (one device, or the cross-replica context of a
strategy's scope) these functions do what the one-device code does.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import List, Sequence

import keras
import tensorflow as tf
from keras import ops


def at_least_float32(x):
    """`x` in float32 when it is a half type (mixed precision: logits and losses in float32), else unchanged (a float64
    network stays float64 end to end, which the gradient checks rely on)."""
    return ops.cast(x, "float32") if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16") else x


_STATISTICS = threading.local()


@contextlib.contextmanager
def untracked_statistics():
    """Within it, the CNN's BatchNorm layers (``cnn.ops.FusedBatchNorm``) in training mode leave their moving
    statistics alone (the RNN search cell's BatchNorm still updates its own): the passes of the bilevel
    step that ``stateless_call`` evaluates at other weights (``BilevelSearchModel.loss_at``) discard every
    non-trainable update anyway, so building them would only add graph ops (about 2/3 of a search cell's forward ops
    were BatchNorm's moving-average bookkeeping). Nests; per thread (tracing runs in the caller's)."""
    depth = getattr(_STATISTICS, "untracked", 0)
    _STATISTICS.untracked = depth + 1
    try:
        yield
    finally:
        _STATISTICS.untracked = depth


def tracks_statistics() -> bool:
    """False inside ``untracked_statistics``: whether a training-mode BatchNorm updates its moving statistics."""
    return not getattr(_STATISTICS, "untracked", 0)


_GRAPH_CONSTANTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # graph -> {key: tensor}


def graph_constant(value: float, shape: Sequence[int] = (), dtype=tf.float32) -> tf.Tensor:
    """A constant made once per graph being traced and shared by every caller in it: the search supernet's hundreds
    of BatchNorms without affine parameters (ones and zeros) and thousands of optimizer updates (the momentum), in
    up to five network passes per step, would otherwise each add their own Const, every one an op to trace and
    optimise. Eagerly, a new constant."""
    if tf.executing_eagerly():
        return tf.constant(value, dtype, shape)
    graph = tf.compat.v1.get_default_graph()
    cache = _GRAPH_CONSTANTS.setdefault(graph, {})
    key = (float(value), tuple(int(d) for d in shape), tf.as_dtype(dtype).name)
    if key not in cache:
        with tf.control_dependencies(None), tf.name_scope("graph_constants/"):  # outside any control context
            cache[key] = tf.constant(value, dtype, shape)
    return cache[key]


def replicas_in_step() -> int:
    """R, the replicas that run the current step together (1 outside a multi-replica ``strategy.run``)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def replica_rows(full, local_batch):
    """This replica's rows of `full`, a per-row tensor drawn for the global batch ([R * local_batch, ...]) alike on
    every replica: rows [r * local_batch, (r + 1) * local_batch) on replica r, the rows of the global batch that
    replica r holds (``distribute.distribute_row_streams`` deals them so). `full` unchanged
    with one replica. How a random per-row draw (a dropout mask) is the one-device draw on the global batch."""
    if replicas_in_step() == 1:
        return full
    replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32)
    return full[replica * local_batch:(replica + 1) * local_batch]


def replica_mean(values: Sequence[tf.Tensor]) -> List[tf.Tensor]:
    """The mean over the replicas of each per-replica value (one batched all-reduce; unchanged with one replica).

    Of per-replica means of a global batch split into equal shares, it is the global batch's mean; of per-replica
    gradients, the gradient of the global mean (with synchronised ``moments``, replica r's gradient already holds the
    other replicas' losses through the statistics, and the mean is still the global gradient). Differentiable.
    """
    values = list(values)
    if replicas_in_step() == 1 or not values:
        return values
    return list(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, values))


def replica_sum(values: Sequence[tf.Tensor]) -> List[tf.Tensor]:
    """The sum over the replicas of each per-replica value (unchanged with one replica). Differentiable."""
    values = list(values)
    if replicas_in_step() == 1 or not values:
        return values
    return list(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values))


def moments(x, axes):
    """Batch mean and (biased) variance whose second derivatives are right; the global batch's under a multi-replica
    step (synchronised: sums and centred squared sums all-reduced over the replicas, two passes as on one device).

    ``tf.nn.moments`` (and so ``keras.ops.moments``) computes the variance around ``stop_gradient(mean)``: its first
    derivative is exact (the path through the mean contributes zero), but the second is not (the Hessian of the
    variance loses its -2/N^2 term, ~1.6% of a BatchNorm Hessian). The exact second-order architecture gradient
    differentiates the gradient, so every BatchNorm in a search network takes its statistics from here.
    """
    if replicas_in_step() == 1:
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        variance = tf.reduce_mean(tf.square(x - mean), axis=axes, keepdims=True)
        return tf.squeeze(mean, axis=axes), tf.squeeze(variance, axis=axes)
    shape = tf.shape(x)
    count = tf.cast(tf.reduce_prod(tf.gather(shape, axes)), x.dtype)
    total, n = replica_sum([tf.reduce_sum(x, axis=axes, keepdims=True), count])
    mean = total / n
    (squares,) = replica_sum([tf.reduce_sum(tf.square(x - mean), axis=axes, keepdims=True)])
    return tf.squeeze(mean, axis=axes), tf.squeeze(squares / n, axis=axes)
