"""The weight step that the search (``darts_tf.bilevel``) and both trainings (``darts_tf.cnn.networks``,
``darts_tf.rnn.networks``) share: PyTorch's SGD semantics, as the reference."""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf

from darts_tf.numerics import graph_constant, replicas_in_step


def apply_weight_step(optimizer, grads: Sequence[Optional[tf.Tensor]], variables: Sequence, grad_clip: Optional[float],
                      weight_decay: float, scale: Optional[tf.Tensor] = None,
                      when: Optional[tf.Tensor] = None) -> tf.Tensor:
    """w <- optimizer(scale * (clip(grad_w) + weight_decay * w)); returns the gradients' global norm before the clip.

    A missing gradient (a variable the loss does not reach) is zero; `grad_clip` clips by global norm (None or 0: no
    clip); the weight decay is L2 added to the gradient, not decoupled; `scale` rescales the whole step (the RNN's
    seq_len / bptt per window); with `when` (a boolean tensor) the step is applied only if it is true (the RNN skips
    empty padding windows).

    Under a distribution strategy of several replicas a ``tf.cond`` cannot hold the optimizer's all-reduce
    ("merge_call" inside control flow), so there the step is applied with zero gradients where `when` is false: an
    SGD without momentum leaves w exactly as it is, and an optimizer that counts its steps takes ``active=when`` in its
    ``apply`` (``darts_tf.rnn.train.AveragedSGD``: its averages stay as they are). Momentum would move w: refused.
    """
    grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
    if grad_clip:
        grads, norm = tf.clip_by_global_norm(grads, grad_clip)
    else:
        norm = tf.linalg.global_norm(grads)
    grads = [g + weight_decay * v for g, v in zip(grads, variables)]
    if scale is not None:
        grads = [scale * g for g in grads]
    if when is None:
        optimizer.apply(grads, variables)
        return norm
    if replicas_in_step() > 1:
        if float(getattr(optimizer, "momentum", 0.0) or 0.0):
            raise ValueError("A step applied only `when` it is true cannot use momentum under a distribution strategy "
                             "(it is applied with zero gradients instead, which momentum would not leave neutral).")
        gate = tf.cast(when, grads[0].dtype)
        grads = [gate * g for g in grads]
        if getattr(optimizer, "takes_active", False):
            optimizer.apply(grads, variables, active=when)
        else:
            optimizer.apply(grads, variables)
        return norm

    def apply():
        optimizer.apply(grads, variables)
        return tf.constant(True)

    tf.cond(when, apply, lambda: tf.constant(False))
    return norm


@keras.saving.register_keras_serializable(package="darts_tf")
class MomentumSGD(keras.optimizers.SGD):
    """Keras' SGD with heavy-ball momentum (m <- momentum * m - lr * g; w <- w + m), each variable's update one
    ``ResourceApplyKerasMomentum`` op, TensorFlow's kernel of exactly that update, instead of Keras' eight or so ops
    (reads, casts, products, two assignments). The search supernet has thousands of weight variables, so the
    optimizer's ops were 15% of its traced step (benchmarks/RESULTS.md, issue 23). Same variables, config and
    checkpoints as ``keras.optimizers.SGD``; Nesterov, no momentum, and steps under a distribution strategy (whose
    per-replica variables the raw op does not take) fall back to Keras' update."""

    def update_step(self, gradient, variable, learning_rate):
        if not self.momentum or self.nesterov or tf.distribute.has_strategy() or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        weights = variable.value if isinstance(variable, keras.Variable) else variable
        m = self.momentums[self._get_variable_index(variable)]
        dtype = weights.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=weights.handle, accum=m.value.handle, lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype),
            momentum=graph_constant(self.momentum, (), dtype), use_locking=False, use_nesterov=False)
