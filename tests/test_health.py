"""darts_tf.health (architecture health, the dominant Hessian eigenvalue) and darts_tf.early_stop (DARTS+ and
RobustDARTS decisions), on hand-built alphas, scripted histories, a known quadratic and a tiny supernet."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import early_stop as es
from darts_tf import genotypes as gt
from darts_tf import health as hl
from darts_tf.bilevel import BilevelSearchModel

PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")


# ---------------------------------------------------------------------------------------- health of hand-built alphas

# softmax(log p) = p: each row is the op weights of one edge (n2 <- c_{k-2}, n2 <- c_{k-1}, n3 <- c_{k-2}, ...)
NORMAL_P = np.array([[0.1, 0.1, 0.7, 0.1],     # skip_connect
                     [0.25, 0.25, 0.25, 0.25],  # a tie: the first non-'none' op, max_pool_3x3
                     [0.1, 0.2, 0.6, 0.1],     # skip_connect
                     [0.4, 0.1, 0.1, 0.4],     # sep_conv_3x3 ('none' is never chosen)
                     [0.7, 0.1, 0.1, 0.1]])    # strongest non-'none' weight 0.1: n3's weakest input
REDUCE_P = np.full((5, 4), 0.25)


def _alphas():
    return {"alpha_normal": np.log(NORMAL_P), "alpha_reduce": np.log(REDUCE_P)}


def test_edges_are_named_node_from_input():
    assert hl.edge_names(5, "normal") == ["n2 <- c_{k-2}", "n2 <- c_{k-1}", "n3 <- c_{k-2}", "n3 <- c_{k-1}",
                                          "n3 <- n2"]
    assert hl.edge_names(3, "recurrent", sep="<-") == ["n1<-n0", "n2<-n0", "n2<-n1"]
    with pytest.raises(ValueError, match="4 edges is not the edge count of any normal cell"):
        hl.edge_names(4, "normal")


def test_health_of_hand_built_alphas():
    alphas = _alphas()
    genotype = gt.derive_from_alphas(alphas, primitives=PRIMITIVES)
    assert genotype.normal == (("skip_connect", 0), ("max_pool_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1))
    # the previous epoch chose n2's edges in the other order (no change) and n3 <- n2 instead of n3 <- c_{k-1}
    previous = gt.Genotype(normal=[("max_pool_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("sep_conv_3x3", 2)],
                           normal_concat=[2, 3], reduce=genotype.reduce, reduce_concat=[2, 3])
    health = hl.architecture_health(alphas, genotype, previous)
    ln = np.log
    entropies = [-(0.7 * ln(0.7) + 3 * 0.1 * ln(0.1)), ln(4), -(2 * 0.1 * ln(0.1) + 0.2 * ln(0.2) + 0.6 * ln(0.6)),
                 -(2 * 0.4 * ln(0.4) + 2 * 0.1 * ln(0.1)), -(0.7 * ln(0.7) + 3 * 0.1 * ln(0.1))]
    np.testing.assert_allclose(health.per_edge["normal"]["entropy"], entropies, rtol=1e-12)
    np.testing.assert_allclose(health.per_edge["normal"]["max_weight"], [0.7, 0.25, 0.6, 0.4, 0.7], rtol=1e-12)
    expected = {"entropy/normal": 1.1099280, "max_weight/normal": 0.53, "entropy/reduce": ln(4),
                "max_weight/reduce": 0.25, "skip_connects/normal": 2, "skip_connects/reduce": 0,
                "genotype_changes/normal": 1, "genotype_changes/reduce": 0, "genotype_changes": 1}
    assert health.scalars == pytest.approx(expected, rel=1e-6)
    # the first epoch of a search without a previous genotype counts no change
    assert "genotype_changes" not in hl.architecture_health(alphas, genotype).scalars


def test_health_of_a_recurrent_cell_counts_identity_as_the_skip():
    p = np.array([[0.1, 0.1, 0.1, 0.1, 0.6], [0.1, 0.5, 0.2, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]])
    alphas = {"alpha_recurrent": np.log(p)}
    genotype = gt.derive_from_alphas(alphas)
    assert genotype.recurrent == (("identity", 0), ("tanh", 0))  # n2: n0's strongest op (0.5) beats n1's (0.2)
    previous = gt.RecurrentGenotype(recurrent=[("identity", 0), ("tanh", 1)], concat=[1, 2])
    scalars = hl.architecture_health(alphas, genotype, previous).scalars
    assert scalars["skip_connects/recurrent"] == 1 and scalars["genotype_changes"] == 1
    assert scalars["max_weight/recurrent"] == pytest.approx((0.6 + 0.5 + 0.2) / 3)
    assert scalars["entropy/recurrent"] == pytest.approx(np.mean(-(p * np.log(p)).sum(-1)))


# ------------------------------------------------------------------------------------------- the dominant eigenvalue

def _symmetric(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigenvalues),) * 2))
    return q @ np.diag(eigenvalues) @ q.T


@pytest.mark.parametrize("eigenvalues, dominant", [((5.0, -2.0, 1.0, 0.5, 0.1, 0.0), 5.0),
                                                   ((-7.0, 3.0, 1.0, 0.2, 0.0, 0.0), -7.0)])
def test_power_iteration_finds_the_dominant_eigenvalue_of_a_known_matrix(eigenvalues, dominant):
    a = tf.constant(_symmetric(eigenvalues))
    found = hl.power_iteration(lambda v: [tf.linalg.matvec(a, v[0])], [np.ones(6)], iterations=200, tol=1e-12)
    assert found.converged and found.eigenvalue == pytest.approx(dominant, rel=1e-9)


class Quadratic(BilevelSearchModel):
    """L_val = 0.5 a^T A a + b.a with a = alpha flattened: the Hessian w.r.t. alpha is A, whatever the batch."""

    def __init__(self, a, **kwargs):
        super().__init__(**kwargs)
        self.a = tf.constant(a, tf.float32)
        self.dense = keras.layers.Dense(1)
        self.alpha = self.add_weight(shape=(2, 3), initializer="ones", name="alpha")

    @property
    def arch_variables(self):
        return [self.alpha]

    def call(self, x, training=False):
        a = tf.reshape(self.alpha, [-1])
        return self.dense(x) * 0.0 + 0.5 * tf.tensordot(a, tf.linalg.matvec(self.a, a), 1) + tf.reduce_sum(a)

    def search_loss(self, batch, outputs, stream):
        return tf.reduce_mean(outputs)


def test_dominant_hessian_eigenvalue_of_a_quadratic_validation_loss():
    eigenvalues = (3.0, 1.5, -1.0, 0.5, 0.25, 0.1)
    model = Quadratic(_symmetric(eigenvalues, seed=1))
    x = np.ones((4, 2), np.float32)
    model(x)
    model.compile(optimizer=keras.optimizers.SGD(0.1), arch_optimizer=keras.optimizers.Adam(0.1))
    value = hl.dominant_hessian_eigenvalue(model, (x, np.zeros(4, np.int32)), iterations=200, tol=1e-7)
    assert value == pytest.approx(3.0, rel=1e-4)


def test_dominant_hessian_eigenvalue_of_a_tiny_supernet_matches_the_dense_hessian(float64):
    """Against eigvalsh of the float64 Hessian built column by column from Hessian-vector products on unit vectors,
    which is symmetric, and whose product with a random direction is the central difference of the gradient.

    avg_pool, not max_pool: on CPU, TensorFlow's second derivative through max pooling varies from call to call
    while other ops run concurrently (inter-op threads > 1; by up to a third of the product): the darts_tf.health
    docstring."""
    from darts_tf.cnn.search_space import build_cnn_search_network

    keras.utils.set_random_seed(0)
    model = build_cnn_search_network((8, 8, 3), 10, C=2, num_layers=3, steps=1, multiplier=1,
                                     primitives=("none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"))
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), arch_optimizer=keras.optimizers.Adam(3e-4))
    rng = np.random.default_rng(0)
    for alpha in model.arch_variables:  # away from the uniform start, so that the Hessian has some structure
        alpha.assign(rng.standard_normal(alpha.shape))
    batch = (tf.constant(rng.random((16, 8, 8, 3))), tf.constant(rng.integers(0, 10, 16)))
    weights = [w.value for w in model.weight_variables]
    arch = [a.value for a in model.arch_variables]
    shapes = [tuple(a.shape) for a in arch]
    n = sum(int(np.prod(s)) for s in shapes)

    def split(flat):
        parts, at = [], 0
        for shape in shapes:
            parts.append(tf.constant(np.reshape(flat[at:at + int(np.prod(shape))], shape)))
            at += int(np.prod(shape))
        return parts

    probe = hl.HessianEigenvalue(model, batch, iterations=500, tol=1e-12)
    hvp = probe._hvp  # one trace for the dense Hessian and both power iterations
    hessian = np.stack([np.concatenate([np.ravel(c) for c in hvp(weights, arch, batch, split(e))])
                        for e in np.eye(n)], axis=1)
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-12)

    def gradient(at):
        with tf.GradientTape() as tape:
            tape.watch(at)
            loss, _ = model.loss_at(weights, at, batch, "validation")
        return np.concatenate([np.ravel(g) for g in tape.gradient(loss, at)])

    direction, eps = rng.standard_normal(n), 1e-5
    shifted = [[a + sign * eps * d for a, d in zip(arch, split(direction))] for sign in (1.0, -1.0)]
    np.testing.assert_allclose(hessian @ direction, (gradient(shifted[0]) - gradient(shifted[1])) / (2 * eps),
                               rtol=1e-6, atol=1e-9)
    eigenvalues = np.linalg.eigvalsh(hessian)
    dominant = eigenvalues[np.argmax(np.abs(eigenvalues))]
    found = probe()
    assert found.converged and found.eigenvalue == pytest.approx(dominant, rel=1e-8), (found, eigenvalues)
    probe.iterations, probe.tol = 20, 1e-3  # the search's defaults
    assert probe().eigenvalue == pytest.approx(dominant, rel=0.02)


# ------------------------------------------------------------------------------------------- early-stop decisions

def _history(**columns):
    n = len(next(iter(columns.values())))
    return [{"epoch": i + 1, **{k.replace("__", "/"): v[i] for k, v in columns.items()}} for i in range(n)]


def test_darts_plus_stops_at_two_skip_connects_and_keeps_the_epoch_before():
    history = _history(skip_connects__normal=[0, 1, 1, 2, 3], genotype_changes=[4, 2, 1, 1, 0])
    found = es.first_stop(es.EarlyStopConfig("darts_plus"), history)
    assert (found.stop_epoch, found.kept_epoch) == (4, 3)
    assert "the normal cell holds 2 skip-connects (>= 2) after epoch 4" in found.reason
    assert es.first_stop(es.EarlyStopConfig("darts_plus", max_skip_connects=3), history).kept_epoch == 4
    first = es.darts_plus_decision(_history(skip_connects__normal=[2]))
    assert (first.stop_epoch, first.kept_epoch) == (1, 1) and "the first is kept" in first.reason


def test_darts_plus_stops_when_the_genotype_is_stable_for_k_epochs():
    history = _history(skip_connects__normal=[0] * 7, genotype_changes=[5, 0, 0, 2, 0, 0, 0])
    found = es.first_stop(es.EarlyStopConfig("darts_plus", stable_epochs=3), history)
    assert (found.stop_epoch, found.kept_epoch) == (7, 7) and "not changed for 3 epochs (epochs 5-7)" in found.reason
    assert es.first_stop(es.EarlyStopConfig("darts_plus", stable_epochs=2), history).stop_epoch == 3
    assert es.first_stop(es.EarlyStopConfig("darts_plus", stable_epochs=0), history) is None
    # a recurrent cell has no normal cell: only the stability rule
    recurrent = _history(skip_connects__recurrent=[3, 3, 3], genotype_changes=[1, 0, 0])
    assert es.first_stop(es.EarlyStopConfig("darts_plus", stable_epochs=2), recurrent).stop_epoch == 3


EIGENVALUES = [1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 2.0, 3.0]


def test_robust_darts_compares_windowed_eigenvalue_averages():
    """window 3 (half 1), lag 2: after epoch t the average centred on epoch t-1 is compared with the one centred on
    epoch t-3. By hand, epochs 4..7: 1.0/1.0, 1.0333/1.0, 1.1/1.0, 1.4333/1.0333 = 1.387 > 1.3: stop after epoch 7,
    keep epoch 4."""
    history = _history(hessian_eigenvalue=EIGENVALUES)
    config = es.EarlyStopConfig("robust_darts", ratio=1.3, window=3, lag=2, start_epoch=1)
    found = es.first_stop(config, history)
    assert (found.stop_epoch, found.kept_epoch) == (7, 4)
    assert "rose 1.387x (> 1.3) from epoch 4 (1.033) to epoch 6 (1.433)" in found.reason
    assert [es.decide(config, history[:n]) for n in range(1, 7)] == [None] * 6
    # not before the kept epoch reaches start_epoch: then after epoch 8, 2.0667 / 1.1 = 1.88, keeping epoch 5
    later = es.first_stop(dataclasses.replace(config, start_epoch=5), history)
    assert (later.stop_epoch, later.kept_epoch) == (8, 5)
    assert es.first_stop(dataclasses.replace(config, ratio=2.0), history) is None
    assert es.windowed_mean(EIGENVALUES, 0, 3) == 1.0 and es.windowed_mean(EIGENVALUES, 6, 3) == pytest.approx(2.0667,
                                                                                                             abs=1e-4)


def test_robust_darts_without_eigenvalues_never_stops():
    history = _history(hessian_eigenvalue=[1.0, None, 5.0, 9.0])
    assert es.first_stop(es.EarlyStopConfig("robust_darts", window=1, lag=1, start_epoch=1), history) is None


@pytest.mark.parametrize("flags, message", [
    ({"early_stop": "sometimes"}, r"--early_stop must be one of none, darts_plus, robust_darts\. Received: "
                                  r"early_stop='sometimes'"),
    ({"es_ratio": 0.75}, r"--es_ratio must be > 1 .* Received: es_ratio=0.75"),
    ({"es_window": 0}, r"--es_window must be an integer >= 1\. Received: es_window=0"),
    ({"hessian_iterations": 0}, r"--hessian_iterations must be an integer >= 1"),
])
def test_bad_early_stop_flags_are_refused_with_the_fix(flags, message):
    with pytest.raises(ValueError, match=message):
        es.check_monitor_flags(flags)


def test_the_search_configs_declare_the_flags_with_their_help():
    from darts_tf.cnn.search import SearchConfig
    from darts_tf.rnn.search import SearchConfig as RNNSearchConfig

    for config in (SearchConfig, RNNSearchConfig):
        fields = {f.name: f for f in dataclasses.fields(config)}
        assert fields["early_stop"].metadata["choices"] == es.EARLY_STOP_RULES
        assert fields["hessian_eigenvalue"].default is False and "power iteration" in \
            fields["hessian_eigenvalue"].metadata["help"]
        assert fields["es_ratio"].default == 1.3 and fields["es_lag"].default == 5
    assert es.EarlyStopConfig.from_flags(dataclasses.asdict(SearchConfig(early_stop="robust_darts"))).needs_eigenvalue
