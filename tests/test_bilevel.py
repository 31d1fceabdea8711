"""The architecture gradient (paper eq. 5-8) against analytic values and between modes."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf.bilevel import ARCH_GRADIENTS, ARCH_MODES, BilevelConfig, BilevelSearchModel
from darts_tf.cnn.search_space import build_cnn_search_network

from tests.helpers import cosine


class ToyBilevel(BilevelSearchModel):
    """Paper Figure 2: L_val = a*w - 2a + 1, L_train = w^2 - 2a*w + a^2 (optimum (w, a) = (1, 1))."""

    def __init__(self, w0, a0, **bilevel):
        super().__init__(bilevel=BilevelConfig(**{"weight_decay": 0.0, "arch_weight_decay": 0.0, "grad_clip": None,
                                                  **bilevel}))
        self.w = self.add_weight(shape=(), initializer=keras.initializers.Constant(w0), name="w")
        self.a = self.add_weight(shape=(), initializer=keras.initializers.Constant(a0), name="a")
        self.built = True

    @property
    def arch_variables(self):
        return [self.a]

    def call(self, x, training=False):
        return self.w + 0.0 * x, self.a + 0.0 * x

    def search_inputs(self, batch, stream):
        return tf.zeros(())

    def search_loss(self, batch, outputs, stream):
        w, a = outputs
        return a * w - 2 * a + 1 if stream == "validation" else w * w - 2 * a * w + a * a

    def search_accuracy(self, batch, outputs):
        return None


def _toy(mode, w0=2.0, a0=-1.0, xi=0.1, lr=0.1, momentum=0.0):
    m = ToyBilevel(w0, a0, mode=mode, xi=xi)
    m.compile(optimizer=keras.optimizers.SGD(lr, momentum=momentum), arch_optimizer=keras.optimizers.SGD(lr))
    return m


@pytest.mark.parametrize("w, a, xi", [(2.0, -1.0, 0.1), (0.3, 0.7, 0.05), (-1.0, 2.0, 0.5)])
def test_toy_problem_gradients_match_the_analytic_unrolled_gradient(w, a, xi):
    # w' = w - xi * dL_train/dw = w - xi (2w - 2a);  d/da L_val(w'(a), a) = w' + a * 2 xi - 2
    w_prime = w - xi * (2 * w - 2 * a)
    analytic = w_prime + 2 * xi * a - 2
    exact = float(_toy("second_order_exact", w, a, xi).unrolled_alpha_gradient(None, None)[0][0])
    fd = float(_toy("second_order_fd", w, a, xi).unrolled_alpha_gradient(None, None)[0][0])
    first = float(_toy("first_order", w, a, xi).unrolled_alpha_gradient(None, None)[0][0])
    assert exact == pytest.approx(analytic, abs=1e-5)
    assert fd == pytest.approx(analytic, abs=1e-3)
    assert first == pytest.approx(w - 2, abs=1e-6)  # xi = 0
    # inside tf.function too
    m = _toy("second_order_exact", w, a, xi)
    assert float(tf.function(lambda: m.unrolled_alpha_gradient(None, None)[0][0])()) == pytest.approx(analytic, abs=1e-5)


def test_momentum_buffer_enters_the_unrolled_step():
    m = _toy("second_order_exact", 2.0, -1.0, xi=0.1, momentum=0.9)
    ds = tf.data.Dataset.from_tensors({"train": 0.0, "validation": 0.0}).repeat()
    m.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)  # one step fills the momentum buffer
    w, a = float(m.w.numpy()), float(m.a.numpy())
    buf = float(m.optimizer.momentums[0].numpy())  # Keras keeps m = 0.9 m - lr g; w += m
    w_prime = w + 0.9 * buf - 0.1 * (2 * w - 2 * a)
    analytic = w_prime + 2 * 0.1 * a - 2
    assert float(m.unrolled_alpha_gradient(None, None)[0][0]) == pytest.approx(analytic, abs=1e-5)


def test_toy_problem_iterates_converge_as_in_figure_2():
    """From (alpha, w) = (2, -2): with xi = 0.5 (the unrolled step lands on the feasible set w = alpha) the
    second-order iterates reach the bilevel optimum (1, 1); first order (xi = 0) settles at (2, 2) instead."""
    ds = tf.data.Dataset.from_tensors({"train": 0.0, "validation": 0.0}).repeat()
    expected = {"second_order_exact": 1.0, "second_order_fd": 1.0, "first_order": 2.0}
    for mode, target in expected.items():
        m = _toy(mode, w0=-2.0, a0=2.0, xi=0.5, lr=0.1)
        m.fit(ds, steps_per_epoch=400, epochs=1, verbose=0)
        assert float(m.w.numpy()) == pytest.approx(target, abs=0.02), mode
        assert float(m.a.numpy()) == pytest.approx(target, abs=0.02), mode


def _tiny_supernet_gradients(dtype, xi, fd_epsilon, seed=1):
    model = build_cnn_search_network((16, 16, 3), 10, C=4, num_layers=3, steps=2, multiplier=2,
                                     bilevel=BilevelConfig(fd_epsilon=fd_epsilon),
                                     primitives=["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                                                 "sep_conv_3x3", "dil_conv_3x3"])
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), arch_optimizer=keras.optimizers.Adam(3e-4))
    rng = np.random.RandomState(seed)  # a fixed point, independent of Keras' global RNG and of test order
    for v in model.trainable_variables:
        shape = tuple(v.shape)
        if len(shape) >= 2 and "alpha" not in v.path:  # kernels: He-normal
            v.assign(rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape))
        elif "alpha" in v.path:
            v.assign(1e-3 * rng.standard_normal(shape))
    def batch():
        return (tf.constant(rng.rand(32, 16, 16, 3).astype(dtype)), tf.constant(rng.randint(0, 10, 32).astype("int64")))
    train, val = batch(), batch()
    grads = {mode: [np.asarray(g) for g in model.unrolled_alpha_gradient(train, val, mode=mode, xi=tf.constant(xi, dtype))[0]]
             for mode in ARCH_MODES}
    return model, train, val, grads


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_exact_and_finite_difference_agree_on_a_tiny_supernet(float64, seed):  # ~40 s a seed; seeds 2, 3 --runslow
    """Exact (nested tapes) vs finite difference of the Hessian-vector product (eq. 7-8).

    ReLU masks and max-pool routing make grad_w L_train piecewise constant in its kinks, so a finite difference
    whose step crosses kinks is biased; with a small step in float64 it converges to the exact value.
    Measured (xi = 0.5, fd_epsilon = 1e-6, seeds 0-5): cosine(exact, fd) = 0.99991, 0.99997, 0.9999, 0.99994 at
    seeds 1, 2, 3, 5, while first order has cosine 0.69-0.88 with exact. At seeds 0 and 4 a kink lies inside the
    finite-difference step and the two disagree (cosine -0.05 / -0.15): the finite difference, not the exact
    gradient, is what breaks there (it is the exact gradient that the nested tapes compute by construction).
    """
    model, train, val, grads = _tiny_supernet_gradients(float64, xi=0.5, fd_epsilon=1e-6, seed=seed)
    for g in grads.values():
        assert all(np.isfinite(x).all() for x in g)
        assert sum(np.abs(x).sum() for x in g) > 0
    exact, fd, first = grads["second_order_exact"], grads["second_order_fd"], grads["first_order"]
    cos_exact_fd = cosine(exact, fd)
    cos_second = cosine([e - f for e, f in zip(exact, first)], [d - f for d, f in zip(fd, first)])
    cos_first = cosine(exact, first)
    print(f"cosine(exact, fd) = {cos_exact_fd:.6f}; second-order parts {cos_second:.6f}; cosine(exact, first) = {cos_first:.4f}")
    assert cos_exact_fd > 0.999 and cos_second > 0.999
    assert cos_first < 0.9  # first order differs from both
    assert cosine(fd, first) < 0.9
    # no variable was changed by computing the unrolled gradients
    before = [np.asarray(v.numpy()) for v in model.trainable_variables]
    model.unrolled_alpha_gradient(train, val, mode="second_order_exact")
    model.unrolled_alpha_gradient(train, val, mode="second_order_fd")
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())


def test_exact_mode_equals_eq6_differentiated_end_to_end(float64):
    """The exact mode takes grad_alpha L_val(w'(alpha), alpha) in two parts (the validation gradient at w', then
    (dw'/dalpha)^T of it through the virtual step, recorded or recomputed); by the chain rule that is eq. 6
    differentiated through one tape around the virtual step *and* the validation pass. Pinned to float64 round-off on a supernet with
    BatchNorm, momentum and weight decay, for both variants (recomputed, the default, and recorded) on one model."""
    model, train, val, _ = _tiny_supernet_gradients(float64, xi=0.5, fd_epsilon=1e-6, seed=2)
    model.train_step({"train": train, "validation": val})  # fills the SGD momentum buffers used by the virtual step
    variants = []
    for recompute in (True, False):
        model.bilevel = dataclasses.replace(model.bilevel, exact_recompute=recompute)
        variants.append(model.unrolled_alpha_gradient(train, val, mode="second_order_exact",
                                                      xi=tf.constant(0.5, float64))[0])
    arch = [a.value for a in model.arch_variables]
    weights = [w.value for w in model.weight_variables]
    with tf.GradientTape() as tape:
        tape.watch(arch)
        w_prime, _ = model.virtual_step(weights, arch, train, tf.constant(0.5, float64))
        loss, _ = model.loss_at(w_prime, arch, val, "validation")
    nested = tape.gradient(loss, arch)
    for exact in variants:
        for e, n in zip(exact, nested):
            np.testing.assert_allclose(np.asarray(e), np.asarray(n), rtol=1e-9, atol=1e-12)
    first = model.unrolled_alpha_gradient(train, val, mode="first_order")[0]
    assert cosine(variants[0], first) < 0.99  # the Hessian term is there


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_exact_mode_equals_forward_over_reverse_hessian_vector_product(float64, seed):  # seed 2 --runslow
    """The Hessian term two ways: reverse over reverse through the virtual step (the exact mode) and forward over
    reverse (the JVP of grad_alpha L_train along grad_w' L_val, ``exact_hvp='forward'``). Mixed partials commute,
    so they agree to float64 round-off exactly when every op's second derivatives are right. Before this test, the
    two differed by ~1e-8 of the Hessian term: float32 logits inside the float64 network, and tf.nn.moments in
    BatchNorm (whose variance Hessian is wrong)."""
    model, train, val, grads = _tiny_supernet_gradients(float64, xi=0.5, fd_epsilon=1e-6, seed=seed)
    model.train_step({"train": train, "validation": val})  # fills the SGD momentum buffers used by the virtual step
    xi = tf.constant(0.5, float64)
    reverse = [np.asarray(g) for g in model.unrolled_alpha_gradient(train, val, mode="second_order_exact", xi=xi)[0]]
    model.bilevel = dataclasses.replace(model.bilevel, exact_hvp="forward")
    forward = [np.asarray(g) for g in model.unrolled_alpha_gradient(train, val, mode="second_order_exact", xi=xi)[0]]
    model.bilevel = dataclasses.replace(model.bilevel, exact_hvp="reverse")
    first = [np.asarray(g) for g in model.unrolled_alpha_gradient(train, val, mode="first_order")[0]]
    for r, f, g in zip(reverse, forward, first):
        scale = np.abs(r - g).max()
        assert scale > 1e-3 * np.abs(r).max()  # a Hessian term to compare
        np.testing.assert_allclose(f, r, rtol=0, atol=1e-11 * scale)


def test_paper_settings_float32_gradients_are_finite_and_close():
    """At the paper's eps = 0.01/||grad|| in float32 the two second-order modes still point the same way."""
    _, _, _, grads = _tiny_supernet_gradients("float32", xi=0.025, fd_epsilon=0.01)
    for g in grads.values():
        assert all(np.isfinite(x).all() for x in g)
    assert cosine(grads["second_order_exact"], grads["second_order_fd"]) > 0.95


def test_bad_mode_and_compile_errors():
    with pytest.raises(ValueError, match="Unknown architecture-gradient mode 'second'. Known: first_order"):
        ToyBilevel(0.0, 0.0, mode="second")
    m = ToyBilevel(0.0, 0.0)
    with pytest.raises(ValueError, match="arch_optimizer="):
        m.compile(optimizer=keras.optimizers.SGD(0.1))


def test_unrolled_step_clips_the_inner_gradient_as_the_rnn_reference():
    """With unrolled_grad_clip, w' = w - xi * (c * g + wd * w), c = min(1, clip / ||g||) held constant."""
    w, a, xi, clip = 2.0, -1.0, 0.1, 1.0
    g = 2 * w - 2 * a  # 6 -> c = 1/6
    c = clip / g
    analytic = (w - xi * c * g) + 2 * xi * c * a - 2
    for mode in ("second_order_exact", "second_order_fd"):
        m = ToyBilevel(w, a, mode=mode, xi=xi, unrolled_grad_clip=clip)
        m.compile(optimizer=keras.optimizers.SGD(0.1), arch_optimizer=keras.optimizers.SGD(0.1))
        assert float(m.unrolled_alpha_gradient(None, None)[0][0]) == pytest.approx(analytic, abs=1e-3), mode


@pytest.mark.parametrize("settings, message", [
    (dict(mode="second"), r"Unknown architecture-gradient mode 'second'. Known: first_order, second_order_exact, "
                          r"second_order_fd."),
    (dict(xi=-0.1), r"xi must be >= 0 \(the unrolled step size\). Received: xi=-0.1"),
    (dict(fd_epsilon=0.0), r"fd_epsilon must be > 0 \(eps = fd_epsilon / \|\|grad_w' L_val\|\|\). Received: 0.0"),
    (dict(exact_hvp="sideways"), r"--exact_hvp must be one of reverse, forward. Received: exact_hvp='sideways'"),
])
def test_bilevel_config_is_validated_once_when_made(settings, message):
    with pytest.raises(ValueError, match=message):
        BilevelConfig(**settings)


def test_every_mode_has_its_gradient_function():
    assert tuple(ARCH_GRADIENTS) == ARCH_MODES
    assert [f.__name__ for f in ARCH_GRADIENTS.values()] == ["first_order_gradient", "exact_gradient",
                                                             "finite_difference_gradient"]


def test_search_network_carries_its_bilevel_config_through_get_config():
    bilevel = BilevelConfig(mode="second_order_fd", xi=0.01, weight_decay=1e-4, fd_epsilon=0.02, exact_recompute=False)
    model = build_cnn_search_network((8, 8, 3), 10, C=2, num_layers=3, steps=1, multiplier=1, bilevel=bilevel,
                                     primitives=["none", "skip_connect"])
    assert model.bilevel is bilevel
    clone = type(model).from_config(model.get_config())
    assert clone.bilevel == bilevel and clone.get_config() == model.get_config()
