"""PC-DARTS (Xu et al., ICLR 2020) in the CNN search: partial channel connections (``MixedOp(partial_channels=K)``,
``channel_shuffle``) against NumPy references, edge normalisation in the cell and in the derivation (a hand-worked
example whose betas change the chosen inputs), the architecture gradients of a tiny partial-channel supernet in the
exact and finite-difference modes, and (slow) darts-search / darts-derive with both flags."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import genotypes as gt
from darts_tf.bilevel import ARCH_MODES, BilevelConfig
from darts_tf.cnn.search import SearchConfig
from darts_tf.cnn.search_space import (CNNSearchNetwork, MixedOp, SearchCell, build_cnn_search_network,
                                       channel_shuffle, node_softmax)

from tests.helpers import ENV, cosine

PRIMITIVES = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]


def numpy_shuffle(x, groups):
    """The channel shuffle written out index by index: input channel g * (C / groups) + j -> output j * groups + g."""
    c = x.shape[-1]
    per_group = c // groups
    out = np.empty_like(x)
    for g in range(groups):
        for j in range(per_group):
            out[..., j * groups + g] = x[..., g * per_group + j]
    return out


def numpy_max_pool_2x2(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_channel_shuffle_is_a_permutation_of_the_channels(groups):
    x = np.arange(2 * 3 * 3 * 16, dtype=np.float32).reshape(2, 3, 3, 16)
    y = np.asarray(channel_shuffle(tf.constant(x), groups))
    np.testing.assert_array_equal(y, numpy_shuffle(x, groups))
    # every input channel appears exactly once, whole
    perm = [int(np.flatnonzero((x[..., :] == y[..., [k]]).all(axis=(0, 1, 2)))[0]) for k in range(16)]
    assert sorted(perm) == list(range(16))
    assert (perm == list(range(16))) == (groups == 1)


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_mixed_op_is_the_plain_one_on_the_selected_channels_and_passes_the_others(stride):
    """MixedOp(C=8, K=4): the first 2 channels through a plain MixedOp(C=2) with the same weights, the other 6
    passed through (a 2x2 max pool on a stride-2 edge), concatenated and shuffled with 4 groups (NumPy reference)."""
    C, K = 8, 4
    rng = np.random.default_rng(stride)
    x = rng.normal(size=(3, 6, 6, C)).astype(np.float32)
    w = tf.constant(rng.dirichlet(np.ones(len(PRIMITIVES))).astype(np.float32))
    partial = MixedOp(C, stride, PRIMITIVES, partial_channels=K)
    plain = MixedOp(C // K, stride, PRIMITIVES)
    partial(x, w, training=True)
    plain(x[..., :C // K], w, training=True)
    assert len(plain.trainable_weights) == len(partial.trainable_weights) > 0
    for src, dst in zip(partial.trainable_weights, plain.trainable_weights):
        assert src.shape == dst.shape  # the candidates are built on C / K channels
        dst.assign(rng.normal(size=src.shape).astype(np.float32))
        src.assign(dst.value)
    got = np.asarray(partial(x, w, training=True))
    selected = np.asarray(plain(x[..., :C // K], w, training=True))
    bypassed = x[..., C // K:] if stride == 1 else numpy_max_pool_2x2(x[..., C // K:])
    np.testing.assert_allclose(got, numpy_shuffle(np.concatenate([selected, bypassed], -1), K), rtol=1e-5, atol=1e-5)
    # unshuffled, the bypassed channels are the input's (pooled) values exactly
    unshuffled = got[..., np.argsort(numpy_shuffle(np.arange(C)[None, None, None], K)[0, 0, 0])]
    np.testing.assert_array_equal(unshuffled[..., C // K:], bypassed)
    assert got.shape == (3, 6 // stride, 6 // stride, C)


def test_partial_channels_must_divide_the_channels():
    with pytest.raises(ValueError, match=r"partial_channels must divide the channel count of every mixed op\. "
                                         r"Received: partial_channels=3, C=8"):
        MixedOp(8, 1, PRIMITIVES, partial_channels=3)
    with pytest.raises(ValueError, match=r"partial_channels must be an integer >= 1 .* Received: partial_channels=0"):
        CNNSearchNetwork(C=8, num_layers=3, partial_channels=0)
    with pytest.raises(ValueError, match=r"--partial_channels must divide --init_channels .* Received: "
                                         r"partial_channels=3, init_channels=16"):
        SearchConfig(output_dir="x", partial_channels=3).validate()
    with pytest.raises(ValueError, match=r"--partial_channels must be an integer >= 1 .* Received: partial_channels=0"):
        SearchConfig(output_dir="x", partial_channels=0).validate()


def test_edge_normalisation_weighs_each_edge_output_in_the_node_sum():
    """A one-node cell: node = e0 * edge0(s0') + e1 * edge1(s1') with s0', s1' the preprocessed inputs."""
    cell = SearchCell(4, reduction=False, reduction_prev=False, steps=1, multiplier=1, primitives=PRIMITIVES,
                      partial_channels=2)
    rng = np.random.default_rng(0)
    s0, s1 = (tf.constant(rng.normal(size=(2, 4, 4, 6)).astype(np.float32)) for _ in range(2))
    weights = tf.constant(rng.dirichlet(np.ones(len(PRIMITIVES)), size=2).astype(np.float32))
    edge_weights = tf.constant([0.3, 0.7])
    got = np.asarray(cell(s0, s1, weights, edge_weights=edge_weights))
    h0, h1 = cell.preprocess0(s0), cell.preprocess1(s1)
    expected = 0.3 * np.asarray(cell.edges[0](h0, weights[0])) + 0.7 * np.asarray(cell.edges[1](h1, weights[1]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cell(s0, s1, weights)), np.asarray(cell(s0, s1, weights,
                                                                                   edge_weights=tf.ones(2))), atol=1e-6)


def test_node_softmax_is_the_numpy_edge_normalisation():
    beta = np.random.default_rng(1).normal(size=14)
    got = np.asarray(node_softmax(tf.constant(beta), steps=4))
    expected = gt.normalize_edge_weights(beta)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    for start, n in ((0, 2), (2, 3), (5, 4), (9, 5)):  # each node's incoming edges sum to 1
        assert expected[start:start + n].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"beta must have one entry per edge of a cell with 2 inputs .* "
                                         r"Received: shape \(4,\)"):
        gt.normalize_edge_weights(np.zeros(4))


# The hand-worked example: 2 nodes (edges 0-1 into node 2, edges 2-4 into node 3), ops (none, skip, sep).
# softmax(alpha) rows (alpha = log p):      strength (best non-none weight)
#   edge 0: 0 -> n2  [0.1, 0.2, 0.7]        0.7 sep
#   edge 1: 1 -> n2  [0.1, 0.5, 0.4]        0.5 skip
#   edge 2: 0 -> n3  [0.1, 0.2, 0.7]        0.7 sep
#   edge 3: 1 -> n3  [0.2, 0.6, 0.2]        0.6 skip
#   edge 4: 2 -> n3  [0.05, 0.5, 0.45]      0.5 skip
# Plain DARTS keeps inputs 0 and 1 for node 3. Edge weights softmax(beta) over node 3's edges = [0.25, 0.25, 0.5]
# (beta = [0, 0, ln 2]) make the strengths 0.175, 0.15, 0.25: node 3 takes input 2 (skip) and input 0 (sep).
# Node 2 has two inputs only: both stay whatever the betas.
P = np.array([[0.1, 0.2, 0.7], [0.1, 0.5, 0.4], [0.1, 0.2, 0.7], [0.2, 0.6, 0.2], [0.05, 0.5, 0.45]])
HAND_PRIMITIVES = ["none", "skip_connect", "sep_conv_3x3"]
BETA = np.array([0.3, -0.2, 0.0, 0.0, np.log(2.0)])


def test_edge_normalisation_changes_the_derived_inputs_as_worked_by_hand():
    alpha = np.log(P)
    plain = gt.derive_genotype(alpha, alpha, primitives=HAND_PRIMITIVES)
    assert plain.normal == (("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0), ("skip_connect", 1))
    normalised = gt.derive_genotype(alpha, alpha, primitives=HAND_PRIMITIVES, betas=(BETA, np.zeros(5)))
    assert normalised.normal == (("sep_conv_3x3", 0), ("skip_connect", 1), ("skip_connect", 2), ("sep_conv_3x3", 0))
    assert normalised.reduce == plain.reduce  # equal betas: every node's edges weighed alike, the same choice
    saved = {"alpha_normal": alpha, "alpha_reduce": alpha, "beta_normal": BETA, "beta_reduce": np.zeros(5)}
    assert gt.derive_from_alphas(saved, primitives=HAND_PRIMITIVES) == normalised
    with pytest.raises(ValueError, match="alphas hold beta_normal without beta_reduce; edge normalisation saves both"):
        gt.derive_from_alphas({"alpha_normal": alpha, "alpha_reduce": alpha, "beta_normal": BETA},
                              primitives=HAND_PRIMITIVES)
    # the skip_connect cap ranks the edge-weighted strengths too: of the two skips, the one on input 1 of node 2
    # (0.5 * 0.38, softmax([0.3, -0.2]) = [0.62, 0.38]) is weaker than the one on input 2 of node 3 (0.5 * 0.5) and
    # gives way to that edge's sep_conv (0.4 * 0.38)
    capped = gt.derive_genotype(alpha, alpha, primitives=HAND_PRIMITIVES, betas=(BETA, np.zeros(5)),
                                max_skip_connects=1)
    assert capped.normal == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("sep_conv_3x3", 0))


def test_the_network_derives_with_its_betas_and_saves_them():
    model = build_cnn_search_network((8, 8, 3), 10, C=4, num_layers=3, steps=2, multiplier=2,
                                     primitives=HAND_PRIMITIVES, partial_channels=2, edge_normalization=True)
    assert [v.name for v in model.arch_variables] == ["alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"]
    for v, value in zip(model.arch_variables, (np.log(P), np.log(P), BETA, np.zeros(5))):
        v.assign(value.astype(np.float32))
    assert model.genotype() == gt.derive_genotype(np.log(P), np.log(P), primitives=HAND_PRIMITIVES,
                                                  betas=(BETA, np.zeros(5)))
    assert model.genotype().normal[2] == ("skip_connect", 2)
    assert sorted(model.alphas_numpy()) == ["alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"]
    config = model.get_config()
    assert (config["partial_channels"], config["edge_normalization"]) == (2, True)
    rebuilt = CNNSearchNetwork.from_config(config)
    assert (rebuilt.partial_channels, rebuilt.edge_normalization) == (2, True)
    assert rebuilt.cells[0].edges[0].candidates[-1].C == 2  # sep_conv on 4 / 2 channels
    plain = build_cnn_search_network((8, 8, 3), 10, C=4, num_layers=3, steps=2, multiplier=2,
                                     primitives=HAND_PRIMITIVES)
    assert sorted(plain.alphas_numpy()) == ["alpha_normal", "alpha_reduce"]  # no betas without the flag


def test_health_and_the_pipeline_derivation_take_the_betas():
    from components import derive as derive_stage
    from darts_tf import health as hl

    alpha = np.log(P)
    saved = {"alpha_normal": alpha, "alpha_reduce": alpha, "beta_normal": BETA, "beta_reduce": np.zeros(5)}
    genotype = gt.derive_from_alphas(saved, primitives=HAND_PRIMITIVES)
    health = hl.architecture_health(saved, genotype)
    assert sorted(health.per_edge) == ["normal", "reduce"]  # the betas are no cell of their own
    assert health.scalars["skip_connects/normal"] == 2.0

    class Search:  # what derive_from_search reads of a SearchRun artifact
        kind, path, primitives, lineage = "cnn", "search_run", HAND_PRIMITIVES, {"flags": {}}

        def __init__(self, alphas):
            self._alphas = alphas

        def alphas(self):
            return self._alphas

    assert derive_stage.derive_from_search(Search(saved)) == genotype
    from components.artifacts import ArtifactError

    with pytest.raises(ArtifactError, match=r"holds the alphas alpha_normal, alpha_reduce, beta_normal; a cnn search "
                                            r"saves alpha_normal, alpha_reduce \(and beta_normal, beta_reduce all "
                                            r"together, or none of them\)"):
        derive_stage.derive_from_search(Search({k: v for k, v in saved.items() if k != "beta_reduce"}))


def _tiny_pc_gradients(dtype, seed):
    """The architecture gradients (alphas and betas) of a tiny PC-DARTS supernet (K=2, edge normalisation, a
    reduction cell whose bypass max-pools) in every mode, at a fixed point."""
    model = build_cnn_search_network((8, 8, 3), 10, C=4, num_layers=3, steps=2, multiplier=2,
                                     bilevel=BilevelConfig(fd_epsilon=1e-6),
                                     primitives=["none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"],
                                     partial_channels=2, edge_normalization=True)
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), arch_optimizer=keras.optimizers.Adam(3e-4))
    rng = np.random.RandomState(seed)
    arch = {id(v) for v in model.arch_variables}
    for v in model.trainable_variables:
        shape = tuple(v.shape)
        if id(v) in arch:
            v.assign(0.5 * rng.standard_normal(shape))  # away from uniform, so the betas' gradients are not tiny
        elif len(shape) >= 2:
            v.assign(rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape))

    def batch():
        return tf.constant(rng.rand(16, 8, 8, 3).astype(dtype)), tf.constant(rng.randint(0, 10, 16).astype("int64"))

    train, val = batch(), batch()
    xi = tf.constant(0.5, dtype)
    return model, train, val, {mode: [np.asarray(g) for g in model.unrolled_alpha_gradient(train, val, mode=mode,
                                                                                            xi=xi)[0]]
                               for mode in ARCH_MODES}


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_exact_and_finite_difference_gradients_agree_on_a_tiny_partial_channel_supernet(float64, seed):
    """Measured (seeds 1, 2): cosine(exact, fd) = 1.000000 (second-order parts too), cosine(exact, first) 0.67-0.76."""
    _, _, _, grads = _tiny_pc_gradients(float64, seed)
    exact, fd, first = grads["second_order_exact"], grads["second_order_fd"], grads["first_order"]
    assert len(exact) == 4 and exact[2].shape == (5,)  # alpha_normal, alpha_reduce, beta_normal, beta_reduce
    for g in exact:
        assert np.isfinite(g).all() and np.abs(g).sum() > 0  # the betas get a gradient too
    cos_second = cosine([e - f for e, f in zip(exact, first)], [d - f for d, f in zip(fd, first)])
    print(f"cosine(exact, fd) = {cosine(exact, fd):.6f}; second-order parts {cos_second:.6f}; "
          f"cosine(exact, first) = {cosine(exact, first):.4f}")
    assert cosine(exact, fd) > 0.999 and cos_second > 0.999
    assert cosine(exact, first) < 0.99  # there is a second-order term to agree on


@pytest.mark.slow
def test_forward_over_reverse_hessian_term_equals_the_reverse_one_through_split_pool_and_shuffle(float64):
    """exact_hvp='forward' (TensorFlow's forward-mode autodiff) goes through the split, the bypass max pool and the
    channel shuffle: the same exact gradient to float64 round-off."""
    import dataclasses

    model, train, val, grads = _tiny_pc_gradients(float64, 1)
    model.bilevel = dataclasses.replace(model.bilevel, exact_hvp="forward")
    forward = model.unrolled_alpha_gradient(train, val, mode="second_order_exact", xi=tf.constant(0.5, float64))[0]
    for f, r, g in zip(forward, grads["second_order_exact"], grads["first_order"]):
        np.testing.assert_allclose(np.asarray(f), r, rtol=0, atol=1e-10 * np.abs(r - g).max())


@pytest.mark.slow
def test_darts_search_with_partial_channels_and_edge_normalisation_then_darts_derive(tmp_path):
    """darts-search --partial_channels 2 --edge_normalization for one epoch on digits: genotype.json, the betas in
    alphas.npz, and darts-derive of that directory gives the genotype the search published (the betas applied)."""
    out, derived = tmp_path / "search", tmp_path / "derived"
    args = ["--dataset=digits", "--layers=3", "--init_channels=4", "--nodes=2", "--batch_size=128", "--epochs=1",
            "--primitives=none,max_pool_3x3,skip_connect,sep_conv_3x3", "--partial_channels=2",
            "--edge_normalization", f"--output_dir={out}"]
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.search", *args], env=ENV, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(out / "genotype.json")
    with np.load(out / "alphas.npz") as saved:
        alphas = {k: saved[k] for k in saved.files}
    assert sorted(alphas) == ["alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"]
    assert alphas["beta_normal"].shape == (5,)
    published = gt.load_genotype_file(str(out / "genotype.json"))
    primitives = "none,max_pool_3x3,skip_connect,sep_conv_3x3".split(",")
    assert published == gt.derive_from_alphas(alphas, primitives=primitives)
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.derive", f"--search_dir={out}",
                           f"--output_dir={derived}", "--formats=png"], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert gt.load_genotype_file(str(derived / "genotype.json")) == published


def test_the_pc_benchmark_grid_names_its_variants_and_its_records_carry_them():
    from benchmarks import configs, records

    names = [c.name for c in configs.GRIDS["pc"]()]
    assert names[:4] == ["cnn_search/first_order/L8C16b64/noxla/fp32/cached",
                         "cnn_search/first_order/L8C16b16/noxla/fp32/cached",
                         "cnn_search/first_order/pc4/L8C16b64/noxla/fp32/cached",
                         "cnn_search/first_order/pc4/L8C16b16/noxla/fp32/cached"]
    assert {"cnn_search/first_order/pc2/L8C16b64/noxla/fp32/cached", "cnn_search/first_order/pc8/L8C16b64/noxla/fp32/cached",
            "cnn_search/first_order/pc4/edgenorm/L8C16b64/noxla/fp32/cached"} <= set(names)
    cfg = configs.select(configs.GRIDS["pc"](), "edgenorm/L8C16b64")[0]
    record = records.base_record(cfg, "skipped", "test", [0.0, 0.0, 0.0])
    assert (record["partial_channels"], record["edge_normalization"]) == (4, True)
    records.validate_record(record)
    assert "(PC K=4) (edge norm)" in records.markdown_table([record])
    with pytest.raises(ValueError, match=r"partial_channels must divide channels\. Received: partial_channels=3, "
                                         r"channels=16"):
        configs.BenchConfig("cnn_search", 64, "first_order", layers=8, channels=16, partial_channels=3)
    with pytest.raises(ValueError, match=r"partial_channels and edge_normalization are options of the cnn_search "
                                         r"model\. Received: model='cnn_eval'"):
        configs.BenchConfig("cnn_eval", 64, channels=16, edge_normalization=True)
