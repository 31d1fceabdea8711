"""The collapse guards (darts_tf.collapse), each against hand-computed values: beta-DARTS' loss, P-DARTS' skip_connect
cap and skip dropout, DARTS-' auxiliary skip and its beta schedule, SDARTS-RS' perturbation of the weight step; the
exact architecture gradient against finite differences with the guards on; `darts-search --preset robust`."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import collapse
from darts_tf import genotypes as gt
from darts_tf.bilevel import ARCH_MODES, BilevelConfig
from darts_tf.cli.derive import derive_search_dir
from darts_tf.cnn.search import SEARCH_PRESETS, SearchConfig, get_search_preset
from darts_tf.cnn.search_space import MixedOp, build_cnn_search_network
from darts_tf.collapse import CollapseGuards, CollapseSchedule
from darts_tf.io_utils import write_json
from tests.helpers import cosine, ENV

SMALL_PRIMITIVES = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]


def _tiny_supernet(guards, primitives=SMALL_PRIMITIVES, arch_lr=3e-4, seed=0, run_eagerly=False):
    keras.utils.set_random_seed(seed)
    model = build_cnn_search_network((8, 8, 1), 10, C=4, num_layers=3, steps=1, multiplier=1, primitives=primitives,
                                     guards=guards)
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), arch_optimizer=keras.optimizers.Adam(arch_lr),
                  run_eagerly=run_eagerly)
    return model


def _batch(rng, n=16, shape=(8, 8, 1), dtype="float32"):
    return tf.constant(rng.rand(n, *shape).astype(dtype)), tf.constant(rng.randint(0, 10, n).astype("int64"))


# ------------------------------------------------------------------------------------------------ beta-DARTS


def test_beta_decay_loss_and_gradient_on_given_alphas():
    """L_beta = mean over the 3 edge rows of logsumexp: log 2, log 4, log 8 -> 2 log 2; gradient softmax / 3."""
    normal = tf.constant([[0.0, 0.0], [0.0, math.log(3.0)]])
    reduce = tf.constant([[math.log(2.0), math.log(6.0)]])
    assert float(collapse.beta_decay_loss([normal, reduce])) == pytest.approx(2 * math.log(2.0), abs=1e-6)
    g_normal, g_reduce = collapse.beta_decay_gradient([normal, reduce])
    np.testing.assert_allclose(g_normal, [[0.5 / 3, 0.5 / 3], [0.25 / 3, 0.75 / 3]], atol=1e-7)
    np.testing.assert_allclose(g_reduce, [[0.25 / 3, 0.75 / 3]], atol=1e-7)


def test_beta_decay_lambda_ramps_up_and_enters_the_architecture_gradient():
    guards = CollapseGuards(beta_decay=8.0)
    assert [guards.scheduled_values(e, 4)["beta_decay"] for e in range(4)] == [0.0, 2.0, 4.0, 6.0]
    model = _tiny_supernet(guards)
    collapse.set_guard_epoch(model, 3, 4)  # lambda = 6
    alphas = [np.asarray(a.numpy(), np.float64) for a in model.arch_variables]
    zeros = [tf.zeros_like(a) for a in model.arch_variables]
    rows = sum(a.shape[0] for a in alphas)
    expected = [6.0 * np.exp(a) / np.exp(a).sum(-1, keepdims=True) / rows for a in alphas]
    for got, want in zip(model.add_beta_decay_gradient(zeros), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    off = _tiny_supernet(CollapseGuards())
    assert off.add_beta_decay_gradient(zeros) is zeros and not off.guard_values


# ------------------------------------------------------------------------------------------------ P-DARTS' cap


def _row(**logits):
    row = np.zeros(len(gt.CNN_PRIMITIVES))
    for name, value in logits.items():
        row[gt.CNN_PRIMITIVES.index(name)] = value
    return row


def _four_skip_normal_cell():
    """14 edges (4 nodes). Chosen: node 0 rows 0, 1 (skip 3.0 / 2.5), node 1 rows 3 (sep3) and 2 (skip 2.0), node 2
    rows 5 (skip 1.0) and 6 (avg 0.5), node 3 rows 9, 10 (sep3 / dil5): four skip_connects."""
    alpha = np.zeros((14, len(gt.CNN_PRIMITIVES)))
    alpha[0] = _row(skip_connect=3.0, sep_conv_3x3=2.0)
    alpha[1] = _row(skip_connect=2.5, sep_conv_5x5=1.0)
    alpha[2] = _row(skip_connect=2.0, dil_conv_3x3=1.5)
    alpha[3] = _row(sep_conv_3x3=2.8)
    alpha[5] = _row(skip_connect=1.0, max_pool_3x3=0.9)
    alpha[6] = _row(avg_pool_3x3=0.5)
    alpha[9] = _row(sep_conv_3x3=1.2)
    alpha[10] = _row(dil_conv_5x5=1.1)
    return alpha


UNCAPPED = (("skip_connect", 0), ("skip_connect", 1), ("sep_conv_3x3", 1), ("skip_connect", 0),
            ("skip_connect", 0), ("avg_pool_3x3", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 1))


def test_skip_cap_replaces_the_weakest_skip_edges_by_their_next_best_op():
    """Softmax skip weights: row 0 e^3/(e^3+e^2+6) = 0.600, row 1 0.583, row 2 e^2/(e^2+e^1.5+6) = 0.414, row 5
    e/(e+e^0.9+6) = 0.243. Cap 2: row 5 loses skip -> max_pool (0.220 > row 6's avg 0.190: it keeps its place);
    then row 2 -> dil_conv_3x3 (0.251 > row 4's 0.125: kept). Rows 0, 1 keep their skip_connects."""
    alpha = _four_skip_normal_cell()
    assert gt.cap_skip_connects(alpha, 0)[0] == UNCAPPED == gt.cap_skip_connects(alpha, None)[0]
    assert gt.cap_skip_connects(alpha, 4)[0] == UNCAPPED
    capped = list(UNCAPPED)
    capped[3] = ("dil_conv_3x3", 0)  # node 1, row 2 (predecessor 0)
    capped[4] = ("max_pool_3x3", 0)  # node 2, row 5 (predecessor 0)
    assert gt.cap_skip_connects(alpha, 2)[0] == tuple(capped)
    capped_1 = list(capped)
    capped_1[1] = ("sep_conv_5x5", 1)  # then row 1 (0.583 < 0.600) -> sep_conv_5x5 (its second op)
    assert gt.cap_skip_connects(alpha, 1)[0] == tuple(capped_1)
    genotype = gt.derive_genotype(alpha, alpha, primitives=gt.CNN_PRIMITIVES, max_skip_connects=2)
    assert genotype.normal == tuple(capped) and genotype.reduce == UNCAPPED  # the normal cell only
    assert gt.derive_from_alphas({"alpha_normal": alpha, "alpha_reduce": alpha}, max_skip_connects=2) == genotype


def test_skip_cap_re_ranks_the_predecessors_of_the_weakened_edge():
    """Node 1 of a 2-node cell: rows 2 (skip 2.0: weight 0.711), 3 (skip 3.0: 0.870), 4 (max_pool 1.0: 0.475).
    Cap 1: row 2 loses skip, its best other op weighs e^0/(e^2+3) = 0.096 < 0.475, so row 4 takes its place."""
    primitives = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]
    alpha = np.zeros((5, 4))
    alpha[2, 2], alpha[3, 2], alpha[4, 1] = 2.0, 3.0, 1.0
    uncapped = (("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 1), ("skip_connect", 0))
    assert gt.cap_skip_connects(alpha, 0, primitives)[0] == uncapped
    assert gt.cap_skip_connects(alpha, 1, primitives)[0] == (("max_pool_3x3", 0), ("max_pool_3x3", 1),
                                                             ("skip_connect", 1), ("max_pool_3x3", 2))
    with pytest.raises(ValueError, match=r"other than 'none' and skip_connect.*Received: primitives="):
        gt.cap_skip_connects(np.zeros((5, 2)), 1, ["none", "skip_connect"])


def test_darts_derive_applies_the_searchs_cap_unless_told_otherwise(tmp_path):
    alpha = _four_skip_normal_cell()
    np.savez(tmp_path / "alphas.npz", alpha_normal=alpha, alpha_reduce=alpha)
    write_json(str(tmp_path / "run_config.json"), {"primitives": ",".join(gt.CNN_PRIMITIVES), "max_skip_connects": 2})
    genotype, _ = derive_search_dir(str(tmp_path))
    assert sum(op == "skip_connect" for op, _ in genotype.normal) == 2
    assert derive_search_dir(str(tmp_path), max_skip_connects=0)[0].normal == UNCAPPED


# ------------------------------------------------------------------------------------------------ P-DARTS' dropout


def test_skip_dropout_zeroes_the_skip_path_at_the_rate_and_decays_linearly():
    op = MixedOp(8, 1, ("none", "skip_connect"), skip_dropout=True)
    x = tf.ones((8, 8, 8, 8))
    weights = tf.constant([0.0, 1.0])
    y = np.asarray(op(x, weights, training=True, skip_dropout=tf.constant(0.3)))
    zeroed = float(np.mean(y == 0.0))
    assert zeroed == pytest.approx(0.3, abs=0.03)  # 4096 elements: standard error 0.007
    np.testing.assert_allclose(y[y != 0.0], 1.0 / 0.7, rtol=1e-6)  # inverted dropout: the mean is kept
    np.testing.assert_array_equal(op(x, weights, training=False, skip_dropout=tf.constant(0.3)), x)  # not at eval
    assert not MixedOp(8, 2, ("none", "skip_connect"), skip_dropout=True).drops_skip  # FactorizedReduce: left alone
    guards = CollapseGuards(skip_dropout=0.3)
    assert [guards.scheduled_values(e, 5)["skip_dropout"] for e in range(5)] == pytest.approx([0.3, 0.24, 0.18,
                                                                                                0.12, 0.06])


# ------------------------------------------------------------------------------------------------ DARTS-


def test_aux_skip_adds_beta_times_the_input_outside_the_softmax():
    x = tf.random.stateless_normal((2, 6, 6, 4), seed=[1, 2])
    op = MixedOp(4, 1, ("none", "skip_connect"), aux_skip=True)
    y = op(x, tf.constant([0.4, 0.6]), training=True, aux_beta=tf.constant(0.25))
    np.testing.assert_allclose(y, 0.85 * np.asarray(x), rtol=1e-6)  # 0.6 x + 0.25 x
    np.testing.assert_allclose(op(x, tf.constant([0.4, 0.6]), aux_beta=None), 0.6 * np.asarray(x), rtol=1e-6)
    reduce_op = MixedOp(4, 2, ("none", "max_pool_3x3"), aux_skip=True)
    assert type(reduce_op.aux_op).__name__ == "FactorizedReduce"
    assert tuple(reduce_op(x, tf.constant([0.5, 0.5]), training=True, aux_beta=tf.constant(1.0)).shape) == (2, 3, 3, 4)


def test_aux_skip_beta_decays_linearly_per_epoch_during_fit():
    """beta_e = beta0 * (1 - e / E): 1.0, 0.75, 0.5, 0.25 over 4 epochs, set by CollapseSchedule as each epoch
    starts."""
    guards = CollapseGuards(aux_skip_beta=1.0)
    assert [guards.scheduled_values(e, 4)["aux_skip_beta"] for e in range(4)] == [1.0, 0.75, 0.5, 0.25]
    model = _tiny_supernet(guards, run_eagerly=True)  # eager steps: no tracing, a second instead of ten
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(model.guard_values["aux_skip_beta"].numpy()))

    rng = np.random.RandomState(0)
    batch = {"train": _batch(rng, 8), "validation": _batch(rng, 8)}
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=1, epochs=4, verbose=0, shuffle=False,
              callbacks=[CollapseSchedule(4), Record()])
    assert seen == [1.0, 0.75, 0.5, 0.25]


# ------------------------------------------------------------------------------------------------ SDARTS-RS


def test_sdarts_perturbation_is_bounded_and_seeded():
    shapes = [(14, 8), (14, 8)]
    first = collapse.perturbation(shapes, 0.3, keras.random.SeedGenerator(7))
    again = collapse.perturbation(shapes, 0.3, keras.random.SeedGenerator(7))
    other = collapse.perturbation(shapes, 0.3, keras.random.SeedGenerator(8))
    for p, q, r in zip(first, again, other):
        p = np.asarray(p)
        assert np.abs(p).max() <= 0.3 and np.abs(p).max() > 0.25 and np.abs(p.mean()) < 0.05
        np.testing.assert_array_equal(p, q)  # the same seed, the same perturbation
        assert not np.array_equal(p, r)


def test_sdarts_weight_step_sees_perturbed_alphas_and_leaves_alpha_unchanged():
    """Eager train_step with the arch optimizer at lr 0 (so only the perturbation could move alpha): the architecture
    step's pass sees alpha, the weight step's pass alpha + U(-eps, eps), and alpha is bit-identical after the step."""
    eps = 0.5
    model = _tiny_supernet(CollapseGuards(sdarts_epsilon=eps), arch_lr=0.0)
    alpha0 = [np.asarray(a.numpy()) for a in model.arch_variables]
    seen = {"train": [], "validation": []}
    search_pass = model.search_pass

    def spy(batch, stream):
        seen[stream].append([np.asarray(a.numpy()) for a in model.arch_variables])
        return search_pass(batch, stream)

    model.search_pass = spy
    rng = np.random.RandomState(0)
    model.train_step({"train": _batch(rng), "validation": _batch(rng)})
    (val_alphas,), (train_alphas,) = seen["validation"], seen["train"]
    for a0, av, at, a1 in zip(alpha0, val_alphas, train_alphas, model.arch_variables):
        np.testing.assert_array_equal(av, a0)
        delta = at - a0
        assert np.abs(delta).max() <= eps + 1e-6 and np.abs(delta).max() > 0.1
        np.testing.assert_array_equal(np.asarray(a1.numpy()), a0)


# ------------------------------------------------------------------------------------------------ all modes


def test_exact_and_finite_difference_agree_with_the_guards_on(float64):
    """As tests/test_bilevel.py (float64, xi 0.5, fd_epsilon 1e-6; 8x8 images), with skip dropout (``stateless_call``:
    one mask for all the passes of a step), the DARTS- auxiliary skip, beta-decay and SDARTS on. Measured cosine
    (exact, fd) = 1.0 to 15 digits at seeds 1-3 (8x8); at 16x16 seed 1 a ReLU/max-pool kink inside the FD step
    breaks the finite difference (cosine 0.25), as tests/test_bilevel.py describes for its seeds 0 and 4."""
    guards = CollapseGuards(skip_dropout=0.3, aux_skip_beta=0.5, beta_decay=4.0, sdarts_epsilon=0.2)
    model = build_cnn_search_network((8, 8, 3), 10, C=4, num_layers=3, steps=2, multiplier=2,
                                     bilevel=BilevelConfig(fd_epsilon=1e-6), guards=guards,
                                     primitives=["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                                                 "sep_conv_3x3", "dil_conv_3x3"])
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), arch_optimizer=keras.optimizers.Adam(3e-4))
    collapse.set_guard_epoch(model, 1, 2)  # skip dropout 0.15, beta 0.25, lambda 2
    rng = np.random.RandomState(2)
    for v in model.trainable_variables:
        shape = tuple(v.shape)
        if len(shape) >= 2 and "alpha" not in v.path:
            v.assign(rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape))
        elif "alpha" in v.path:
            v.assign(1e-3 * rng.standard_normal(shape))
    train, val = _batch(rng, 32, (8, 8, 3), float64), _batch(rng, 32, (8, 8, 3), float64)
    grads = {}  # the second-order modes first: first order's stateful pass moves the dropout seeds on
    for mode in ARCH_MODES[1:]:
        g = model.unrolled_alpha_gradient(train, val, mode=mode, xi=tf.constant(0.5, tf.float64))[0]
        grads[mode] = [np.asarray(x) for x in model.add_beta_decay_gradient(g)]
    first = [np.asarray(x) for x in model.add_beta_decay_gradient(
        model.unrolled_alpha_gradient(train, val, mode="first_order")[0])]
    exact, fd = grads["second_order_exact"], grads["second_order_fd"]
    assert all(np.isfinite(x).all() for x in exact + fd)
    cos_second = cosine([e - f for e, f in zip(exact, first)], [d - f for d, f in zip(fd, first)])
    print(f"cosine(exact, fd) = {cosine(exact, fd):.6f}; second-order parts {cos_second:.6f}")
    assert cosine(exact, fd) > 0.999 and cos_second > 0.999


# ------------------------------------------------------------------------------------------------ config, preset, CLI


@pytest.mark.parametrize("field, value, message", [
    ("skip_dropout", 1.0, r"--skip_dropout must be in \[0, 1\).*Received: skip_dropout=1.0"),
    ("aux_skip_beta", -1.0, r"--aux_skip_beta must be a number >= 0.*Received: aux_skip_beta=-1.0"),
    ("sdarts_epsilon", -0.1, r"Received: sdarts_epsilon=-0.1"),
    ("beta_decay", -2.0, r"Received: beta_decay=-2.0"),
    ("max_skip_connects", -1, r"--max_skip_connects must be an integer >= 0.*Received: max_skip_connects=-1"),
])
def test_bad_guard_settings_are_refused_in_one_place(field, value, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(output_dir="x", **{field: value}).validate()


def test_the_robust_preset_turns_every_guard_on_and_darts_none():
    assert not SearchConfig().guards_config().any_on and not get_search_preset("darts").guards_config().any_on
    robust = get_search_preset("robust", epochs=3)
    assert robust.guards_config() == CollapseGuards(**collapse.ROBUST) and robust.epochs == 3
    assert all(getattr(robust, k) for k in collapse.ROBUST) and sorted(SEARCH_PRESETS) == ["darts", "nb201", "robust"]
    with pytest.raises(ValueError, match="Unknown search preset 'bogus'. Known presets: darts, nb201, robust"):
        get_search_preset("bogus")


def test_darts_search_preset_robust_console_script_on_digits(tmp_path):
    """`darts-search --preset robust` (a flag given on the command line overrides the preset); darts-derive's
    derivation gives the search's genotype (the same skip_connect cap)."""
    bin_dir = os.path.dirname(sys.executable)
    out = tmp_path / "search"
    subprocess.run([os.path.join(bin_dir, "darts-search"), "--preset", "robust", "--dataset", "digits", "--layers", "3",
                    "--init_channels", "4", "--nodes", "2", "--batch_size", "32", "--epochs", "1", "--primitives",
                    ",".join(SMALL_PRIMITIVES), "--max_skip_connects", "1", f"--output_dir={out}", "--deterministic"],
                   env=ENV, check=True, capture_output=True, text=True, timeout=300)
    config = json.loads((out / "run_config.json").read_text())
    assert {k: config[k] for k in collapse.ROBUST} == {**collapse.ROBUST, "max_skip_connects": 1}
    genotype = gt.load_genotype_file(str(out / "genotype.json"))
    assert sum(op == "skip_connect" for op, _ in genotype.normal) <= 1
    state = np.load(out / "training_state.npz")
    assert any("guard_aux_skip_beta" in p for p in state["__paths__"])
    assert derive_search_dir(str(out))[0] == genotype  # darts-derive's derivation, with the search's cap
