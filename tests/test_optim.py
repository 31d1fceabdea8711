"""The shared weight step (darts_tf.optim) against a NumPy reference of PyTorch's clip + L2 + SGD."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.optim import apply_weight_step


def _variables():
    return [keras.Variable(np.array([1.0, -2.0], np.float32)), keras.Variable(np.array([[0.5]], np.float32)),
            keras.Variable(np.array([3.0], np.float32))]


@pytest.mark.parametrize("grad_clip", [None, 0.0, 1.0, 100.0])
def test_step_is_clip_then_weight_decay_then_scale(grad_clip):
    variables = _variables()
    before = [v.numpy().copy() for v in variables]
    grads = [tf.constant([3.0, 4.0]), tf.constant([[12.0]]), None]  # the last variable gets no gradient
    lr, wd, scale = 0.1, 0.01, 0.5
    norm = apply_weight_step(keras.optimizers.SGD(lr), grads, variables, grad_clip, wd, scale=tf.constant(scale))
    g = [np.array([3.0, 4.0]), np.array([[12.0]]), np.zeros(1)]
    total = np.sqrt(sum((x ** 2).sum() for x in g))  # 13
    assert float(norm) == pytest.approx(total)
    c = min(1.0, grad_clip / total) if grad_clip else 1.0
    for v, w, x in zip(variables, before, g):
        np.testing.assert_allclose(v.numpy(), w - lr * scale * (c * x + wd * w), rtol=1e-6)


def test_step_is_skipped_where_the_condition_is_false():
    for when, moved in ((tf.constant(False), False), (tf.constant(True), True)):
        variables = _variables()
        optimizer = keras.optimizers.SGD(0.1)
        apply_weight_step(optimizer, [tf.ones((2,)), tf.ones((1, 1)), tf.ones((1,))], variables, 0.25, 0.0, when=when)
        assert bool(variables[0].numpy()[0] != 1.0) is moved
        assert int(optimizer.iterations.numpy()) == int(moved)
