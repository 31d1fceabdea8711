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


def _two_optimizers_three_steps(fused_kwargs, in_function=True):
    """The same three gradients through Keras' SGD and darts_tf's MomentumSGD (one variable each, same start)."""
    from darts_tf.optim import MomentumSGD

    rs = np.random.RandomState(0)
    start = rs.randn(3, 4).astype(np.float32)
    keras_var, fused_var = keras.Variable(start), keras.Variable(start)
    reference = keras.optimizers.SGD(0.1, **fused_kwargs)
    fused = MomentumSGD(0.1, **fused_kwargs)
    reference.build([keras_var])
    fused.build([fused_var])

    def step(g):
        reference.apply([g], [keras_var])
        fused.apply([g], [fused_var])

    step = tf.function(step) if in_function else step
    grads = [tf.constant(rs.randn(3, 4).astype(np.float32)) for _ in range(3)]
    for g in grads:
        step(g)
    return reference, fused, keras_var, fused_var, step, grads[0]


@pytest.mark.parametrize("kwargs", [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.0}])
def test_momentum_sgd_is_keras_sgd_with_one_op_per_variable(kwargs):
    """MomentumSGD (the search's weight optimizer) ends where Keras' SGD does, momentum buffers and step count
    included; heavy-ball momentum is one ResourceApplyKerasMomentum op per variable and no assignment of Keras'."""
    reference, fused, keras_var, fused_var, step, g = _two_optimizers_three_steps(kwargs)
    np.testing.assert_allclose(fused_var.numpy(), keras_var.numpy(), rtol=1e-6, atol=1e-7)
    if kwargs["momentum"]:
        np.testing.assert_allclose(fused.momentums[0].numpy(), reference.momentums[0].numpy(), rtol=1e-6, atol=1e-7)
    assert int(fused.iterations.numpy()) == 3
    from darts_tf.optim import MomentumSGD

    lone = MomentumSGD(0.1, **kwargs)
    lone.build([fused_var])
    types = [op.type for op in tf.function(lambda x: lone.apply([x], [fused_var])).get_concrete_function(g)
             .graph.get_operations()]
    fused_path = bool(kwargs["momentum"]) and not kwargs.get("nesterov")
    assert types.count("ResourceApplyKerasMomentum") == int(fused_path)
    if fused_path:  # Keras' reads, products and two assignments per variable are gone
        assert not {"Mul", "Sub", "AssignAddVariableOp"} & set(types)
    config = lone.get_config()
    assert MomentumSGD.from_config(config).get_config() == config
    assert keras.saving.get_registered_object("darts_tf>MomentumSGD") is MomentumSGD


def test_momentum_sgd_steps_eagerly_too():
    _, _, keras_var, fused_var, _, _ = _two_optimizers_three_steps({"momentum": 0.9}, in_function=False)
    np.testing.assert_allclose(fused_var.numpy(), keras_var.numpy(), rtol=1e-6, atol=1e-7)


_MOMENTUM_UNDER_REPLICAS = r"""
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from darts_tf.optim import apply_weight_step
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    variable = keras.Variable([1.0, 2.0])
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build([variable])
try:
    strategy.run(tf.function(lambda: apply_weight_step(optimizer, [tf.ones(2)], [variable], None, 0.0,
                                                       when=tf.constant(True))))
except ValueError as error:
    print("REFUSED", error)
    sys.exit(0)
sys.exit("not refused")
"""


def test_a_conditional_step_with_momentum_under_two_replicas_is_refused():
    """apply_weight_step(when=...) steps with zero gradients under several replicas (a tf.cond cannot hold the
    all-reduce), which momentum would not leave neutral: refused with the reason (two logical CPUs, a child process:
    logical devices must be set before TensorFlow starts)."""
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", _MOMENTUM_UNDER_REPLICAS], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": repo, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.startswith("REFUSED")  # tf.function puts the traceback of the user code before the message
    assert ("A step applied only `when` it is true cannot use momentum under a distribution strategy (it is applied "
            "with zero gradients instead, which momentum would not leave neutral).") in run.stdout
