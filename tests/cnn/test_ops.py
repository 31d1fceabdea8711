import keras
import numpy as np
import pytest

from darts_tf import genotypes as gt
from darts_tf.cnn.ops import OPS, FactorizedReduce, ReLUConvBN, make_op
from darts_tf.cnn.search_space import MixedOp

ALL_OPS = list(gt.CNN_PRIMITIVES + gt.CNN_EXTRA_OPS)


def _param_count(layer):
    return sum(int(np.prod(v.shape)) for v in layer.trainable_variables)


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_keeps_shape_at_stride1_and_halves_at_stride2(name, stride):
    x = np.random.RandomState(0).randn(2, 8, 8, 6).astype("float32")
    op = make_op(name, 6, stride)
    y = op(x, training=True)
    assert tuple(y.shape) == (2, 8 // stride, 8 // stride, 6)
    assert op.compute_output_shape((2, 8, 8, 6)) == (2, 8 // stride, 8 // stride, 6)
    # config round trip rebuilds the same op
    clone = op.__class__.from_config(op.get_config())
    assert clone.get_config() == op.get_config()


@pytest.mark.parametrize("name, expected", [
    # sep_conv_3x3 at C=4: twice (depthwise 3*3*4 + pointwise 4*4 + BN 2*4)
    ("sep_conv_3x3", 2 * (9 * 4 + 16 + 8)),
    ("sep_conv_5x5", 2 * (25 * 4 + 16 + 8)),
    ("dil_conv_3x3", 9 * 4 + 16 + 8),
    ("dil_conv_5x5", 25 * 4 + 16 + 8),
    ("conv_7x1_1x7", 2 * 7 * 16 + 8),
    ("max_pool_3x3", 0), ("avg_pool_3x3", 0), ("none", 0),
])
def test_op_parameter_counts(name, expected):
    op = make_op(name, 4, 1)
    op(np.zeros((1, 8, 8, 4), "float32"))
    assert _param_count(op) == expected


def test_skip_connect_is_identity_at_stride1_and_factorized_reduce_at_stride2():
    x = np.random.RandomState(1).randn(2, 8, 8, 4).astype("float32")
    np.testing.assert_array_equal(make_op("skip_connect", 4, 1)(x), x)
    assert isinstance(make_op("skip_connect", 4, 2), FactorizedReduce)


def test_factorized_reduce_matches_numpy():
    x = np.random.RandomState(2).randn(1, 6, 6, 3).astype("float32")
    op = FactorizedReduce(4, affine=False)
    y = np.asarray(op(x, training=False))
    w1 = np.asarray(op.conv1.kernel)[0, 0]  # [3, 2]
    w2 = np.asarray(op.conv2.kernel)[0, 0]
    r = np.maximum(x, 0)
    a = r[:, ::2, ::2, :] @ w1
    b = r[:, 1::2, 1::2, :] @ w2
    bn = op.bn  # inference with fresh statistics: (v - 0) / sqrt(1 + eps)
    expected = np.concatenate([a, b], -1) / np.sqrt(1 + bn.epsilon)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_relu_conv_bn_and_zero():
    x = -np.ones((1, 4, 4, 2), "float32")
    assert np.allclose(make_op("none", 2, 2)(x), np.zeros((1, 2, 2, 2)))
    y = ReLUConvBN(3)(x, training=False)  # relu kills everything
    assert np.allclose(y, 0)


def test_unknown_op_and_bad_arguments():
    with pytest.raises(ValueError, match="Unknown op 'conv_3x3'. Known: none, max_pool_3x3"):
        make_op("conv_3x3", 4, 1)
    with pytest.raises(ValueError, match="stride must be 1 or 2. Received: stride=3"):
        make_op("sep_conv_3x3", 4, 3)
    with pytest.raises(ValueError, match="positive integer"):
        make_op("sep_conv_3x3", 0, 1)


def test_mixed_op_is_softmax_weighted_sum():
    x = np.random.RandomState(3).randn(2, 4, 4, 4).astype("float32")
    mixed = MixedOp(4, 1)
    w = keras.ops.softmax(np.random.RandomState(4).randn(len(gt.CNN_PRIMITIVES)).astype("float32"))
    y = np.asarray(mixed(x, w, training=True))
    expected = sum(float(w[i]) * np.asarray(op(x, training=True))
                   for i, op in enumerate(mixed.candidates))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    # a one-hot weight on skip_connect returns the input
    onehot = np.eye(len(gt.CNN_PRIMITIVES), dtype="float32")[gt.CNN_PRIMITIVES.index("skip_connect")]
    np.testing.assert_allclose(mixed(x, onehot, training=True), x, atol=1e-6)
    assert len(OPS) == len(ALL_OPS)


def test_moments_have_the_exact_variance_hessian_and_batch_norm_uses_them():
    """Var(x) = mean((x - mean x)^2) has Hessian 2/N (I - 11^T/N); tf.nn.moments (stop_gradient on the mean) gives
    2/N I, which made the exact architecture gradient of the RNN search ~10% wrong. The float64 BatchNorm (no fused
    kernel) must match the fused float32 one in second derivatives too."""
    import tensorflow as tf
    from darts_tf.cnn.ops import FusedBatchNorm
    from darts_tf.numerics import moments

    x = tf.constant(np.random.RandomState(0).randn(5, 3))
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            var = moments(x, [0])[1][1]
        g = inner.gradient(var, x)
    hessian = outer.jacobian(g, x).numpy()[:, 1, :, 1]
    np.testing.assert_allclose(hessian, 2 / 5 * (np.eye(5) - 1 / 5), atol=1e-12)

    def bn_hessian(dtype):
        rs = np.random.RandomState(1)
        x = tf.constant(rs.randn(3, 2, 2, 2), dtype)
        c = tf.constant(rs.randn(3, 2, 2, 2), dtype)
        bn = FusedBatchNorm(epsilon=1e-5, center=False, scale=False, dtype=dtype)
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(c * tf.tanh(bn(x, training=True)))
            g = inner.gradient(y, x)
        return outer.jacobian(g, x).numpy().reshape(24, 24)

    fused, decomposed = bn_hessian("float32"), bn_hessian("float64")
    np.testing.assert_allclose(decomposed, fused, atol=1e-5 * np.abs(fused).max())


def test_fused_batch_norm_is_registered_for_saved_models():
    from darts_tf.cnn.ops import FusedBatchNorm

    assert keras.saving.get_registered_object("darts_tf>FusedBatchNorm") is FusedBatchNorm


@pytest.mark.parametrize("dtype", ["float32", "float64"])  # the fused kernel, the decomposed form
def test_batch_norm_moving_statistics_are_pytorchs_update_and_untracked_passes_leave_them(dtype):
    """Training mode: moving <- 0.9 moving + 0.1 batch statistic, the variance the unbiased one (PyTorch's BatchNorm,
    the reference's); inside untracked_statistics (the bilevel step's stateless passes) nothing moves, the output
    is the same, and the traced pass assigns no variable."""
    import tensorflow as tf
    from darts_tf.cnn.ops import FusedBatchNorm
    from darts_tf.numerics import untracked_statistics

    rs = np.random.RandomState(0)
    x = rs.randn(4, 3, 3, 5)
    bn = FusedBatchNorm(momentum=0.9, epsilon=1e-5, center=False, scale=False, dtype=dtype)
    bn.build(x.shape)
    bn.moving_mean.assign(rs.randn(5))
    bn.moving_variance.assign(rs.rand(5) + 0.5)
    mean0, var0 = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
    y = bn(tf.constant(x, dtype), training=True).numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.9 * mean0 + 0.1 * x.mean((0, 1, 2)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 * var0 + 0.1 * x.var((0, 1, 2), ddof=1), rtol=1e-6)
    np.testing.assert_allclose(y, (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-5), atol=1e-5)
    moved = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
    with untracked_statistics():
        untracked = bn(tf.constant(x, dtype), training=True).numpy()
        graph = tf.function(lambda v: bn(v, training=True)).get_concrete_function(tf.constant(x, dtype)).graph
    np.testing.assert_array_equal(untracked, y)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moved[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), moved[1])
    assert not [op for op in graph.get_operations() if op.type.startswith("Assign")]
    bn(tf.constant(x, dtype), training=True)  # tracked again after the context
    assert not np.array_equal(bn.moving_mean.numpy(), moved[0])


def test_graph_constant_is_made_once_per_traced_graph():
    import tensorflow as tf
    from darts_tf.numerics import graph_constant

    def f():
        return [graph_constant(1.0, [3]), graph_constant(1.0, [3]), graph_constant(0.0, [3]),
                graph_constant(1.0, [3], tf.float64)]

    graph = tf.function(f).get_concrete_function().graph
    assert [op.type for op in graph.get_operations()].count("Const") == 3
    eager = f()
    np.testing.assert_array_equal(eager[0], np.ones(3, np.float32))
    assert eager[3].dtype == tf.float64


@pytest.mark.parametrize("indices", [[1, 2, 3, 4], [0, 1, 2, 3, 4], [3]])
def test_weighted_sum_is_the_sum_of_products_with_its_gradient(indices):
    """The mixed op's one-product weighted sum (issue 23's smaller graph) against sum_k w[i_k] * v_k, in float64,
    values and the gradient in the weights and in the values, for an edge row, a row without 'none' and a list."""
    import tensorflow as tf
    from darts_tf.cnn.search_space import weighted_sum

    rs = np.random.RandomState(0)
    w = tf.constant(rs.rand(5))
    values = [tf.constant(rs.randn(2, 3, 3, 4)) for _ in indices]
    for weights in (w, tf.unstack(w)):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([w, values])
            given = weighted_sum(weights if weights is w else tf.unstack(w), indices, values)
            expected = sum(w[i] * v for i, v in zip(indices, values))
            loss_given, loss_expected = (tf.reduce_sum(tf.sin(t)) for t in (given, expected))
        np.testing.assert_allclose(given.numpy(), expected.numpy(), atol=1e-12)
        for a, b in zip(tape.gradient(loss_given, [w] + values), tape.gradient(loss_expected, [w] + values)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-12)
