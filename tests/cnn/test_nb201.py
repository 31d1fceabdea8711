"""NAS-Bench-201 cell space: architecture strings, cell maths, network sizes against the published counts."""

import keras
import numpy as np
import pytest

from darts_tf.cnn.nb201 import (NB201_EDGES, NB201Cell, NB201Genotype, NB201Network, ResNetBasicBlock,
                                nb201_parameter_count)
from darts_tf.cnn.networks import count_parameters

ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
ALL_POOL = "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|"
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
MIXED = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ONE_BY_ONE = "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"


@pytest.mark.parametrize("arch", [ALL_CONV3, ALL_NONE, ALL_SKIP, ALL_POOL, RESNET, MIXED, ONE_BY_ONE])
def test_architecture_string_round_trip(arch):
    g = NB201Genotype.from_string(arch)
    assert g.to_string() == arch and str(g) == arch
    assert NB201Genotype(g.ops) == g and len(g.ops) == len(NB201_EDGES) == 6


def test_edge_order_follows_the_string():
    g = NB201Genotype.from_string(MIXED)
    assert g.node_inputs(1) == (("nor_conv_3x3", 0),)
    assert g.node_inputs(2) == (("nor_conv_3x3", 0), ("avg_pool_3x3", 1))
    assert g.node_inputs(3) == (("skip_connect", 0), ("nor_conv_3x3", 1), ("skip_connect", 2))


@pytest.mark.parametrize("arch, message", [
    ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|", r"3 '\+'-separated nodes"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"Unknown NAS-Bench-201 op 'conv_5x5'.*token='conv_5x5~0'"),
    ("|none~0|+|none~0|none~1|+|none~0|sep_conv_3x3~1|none~2|", r"Unknown NAS-Bench-201 op 'sep_conv_3x3'"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", r"Input 0 of node 2 must be written 'op~0'.*token='none~1'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", r"Node 2 takes 2 inputs.*node='\|none~0\|'"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", r"Input 0 of node 1.*token='none0'"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"Node 1 must be written '\|op~i\|...\|'"),
])
def test_bad_architecture_strings_are_refused(arch, message):
    with pytest.raises(ValueError, match=message):
        NB201Genotype.from_string(arch)


def test_bad_op_tuples_are_refused():
    with pytest.raises(ValueError, match=r"has 6 edge ops. Received: ops=\('none',\)"):
        NB201Genotype(("none",))
    with pytest.raises(ValueError, match=r"Unknown NAS-Bench-201 op 'max_pool_3x3'"):
        NB201Genotype(("none",) * 5 + ("max_pool_3x3",))
    with pytest.raises(ValueError, match=r"C must be a positive integer. Received: C=0"):
        NB201Network(RESNET, C=0)


# Published sizes (``params``, in MB = count / 1e6) of NAS-Bench-201 (NAS-Bench-201-v1_1-096897, 200-epoch
# results; C=16, N=5): the smallest network (cells without parameters: all none / skip / avg-pool) and the
# largest (all nor_conv_3x3) per dataset, CIFAR-10 0.073306 / 1.531546, CIFAR-100 0.079156 / 1.537396,
# ImageNet16-120 0.080456 / 1.538696. Min/max over the benchmark's `params` field as dumped from the official
# NAS-Bench-201 JSON files (HPOBench's NAS-Bench-201-v1_1-096897_{cifar10-valid,cifar100,ImageNet16-120}.json)
# and as used for normalisation in EvoXBench's NAS-Bench-201 suites (`min_max_values[...]['params']`).
# The structure followed is D-X-Y/AutoDL-Projects xautodl/models/cell_operations.py and cell_infers/cells.py.
@pytest.mark.parametrize("arch, num_classes, published_mb", [
    (ALL_CONV3, 10, 1.531546),
    (ALL_NONE, 10, 0.073306),
    (ALL_SKIP, 10, 0.073306),
    (ALL_POOL, 10, 0.073306),
    (ALL_CONV3, 100, 1.537396),
    (ALL_NONE, 100, 0.079156),
    (ALL_CONV3, 120, 1.538696),
    (ALL_SKIP, 120, 0.080456),
])
def test_parameter_counts_match_nas_bench_201(arch, num_classes, published_mb):
    model = NB201Network(arch, C=16, N=5, num_classes=num_classes)
    model.build((None, 32, 32, 3))
    n = count_parameters(model)
    assert n == round(published_mb * 1e6)  # published to 6 decimals in MB: exact parameter counts
    assert nb201_parameter_count(arch, 16, 5, num_classes) == n


@pytest.mark.parametrize("arch", [RESNET, MIXED, ONE_BY_ONE])
def test_closed_form_count_equals_the_built_network(arch):
    model = NB201Network(arch, C=8, N=2, num_classes=7)
    model.build((None, 16, 16, 3))
    assert count_parameters(model) == nb201_parameter_count(arch, 8, 2, 7)


def test_resnet_like_cell_size():
    # 0.073306 M skeleton + 5 * (18 w^2 + 4 w) for w in C, 2C, 4C (two nor_conv_3x3 per cell) = 0.559386 M
    assert nb201_parameter_count(RESNET) == 73_306 + 5 * sum(18 * w * w + 4 * w for w in (16, 32, 64)) == 559_386


def test_forward_shapes():
    model = NB201Network(MIXED, C=4, N=1, num_classes=10)
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype("float32")
    assert tuple(model(x, training=False).shape) == (2, 10)
    assert tuple(model(x, training=True).shape) == (2, 10)
    block = ResNetBasicBlock(8, 2)
    assert tuple(block(np.zeros((2, 8, 6, 4), "float32")).shape) == (2, 4, 3, 8)
    assert block.compute_output_shape((2, 8, 6, 4)) == (2, 4, 3, 8)
    with pytest.raises(ValueError, match=r"needs even spatial sizes.*Received: input_shape=\(2, 9, 9, 4\)"):
        ResNetBasicBlock(8, 2)(np.zeros((2, 9, 9, 4), "float32"))
    same = ResNetBasicBlock(4, 1)
    x = np.random.RandomState(4).rand(1, 5, 5, 4).astype("float32")
    assert tuple(same(x).shape) == (1, 5, 5, 4) and same.down_conv is None


def test_cell_sums_edges_into_nodes():
    """A cell of skips and nones: node1 = x, node2 = x + node1 = 2x, node3 = node1 + node2 = 3x (edge 3<-0 none)."""
    arch = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|skip_connect~1|skip_connect~2|"
    x = np.random.RandomState(3).rand(2, 5, 5, 3).astype("float32")
    y = np.asarray(NB201Cell(arch, 3)(x))
    np.testing.assert_allclose(y, 3 * x, rtol=1e-6)
    pooled = "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
    assert np.all(np.asarray(NB201Cell(pooled, 3)(x)) == 0)  # node 2 is zero, so node 3 is zero
    ones = np.ones((1, 4, 4, 1), "float32")
    only_pool = "|avg_pool_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
    np.testing.assert_allclose(np.asarray(NB201Cell(only_pool, 1)(ones)), ones, rtol=1e-6)  # padding excluded


def test_cell_refuses_other_widths():
    with pytest.raises(ValueError, match=r"input must have C=4 channels. Received: input_shape=\(2, 5, 5, 3\)"):
        NB201Cell(RESNET, 4)(np.zeros((2, 5, 5, 3), "float32"))


def test_network_saves_to_keras_and_reloads(tmp_path):
    model = NB201Network(MIXED, C=4, N=1, num_classes=5)
    x = np.random.RandomState(1).rand(3, 16, 16, 3).astype("float32")
    model(x, training=True)  # move the BN statistics away from their initial values
    before = np.asarray(model(x, training=False))
    path = str(tmp_path / "nb201.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, NB201Network) and loaded.genotype == model.genotype
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), before)
    assert count_parameters(loaded) == count_parameters(model)


def test_search_cell_mixes_all_ops_and_derives_top1():
    from darts_tf.cnn.nb201 import NB201_PRIMITIVES, NB201SearchCell
    cell = NB201SearchCell(3)
    x = np.random.RandomState(5).rand(2, 6, 6, 3).astype("float32")
    skip = np.zeros((6, 5), "float32")
    skip[:, NB201_PRIMITIVES.index("skip_connect")] = 1.0
    # all edges skip: node1 = x, node2 = x + node1 = 2x, node3 = x + node1 + node2 = 4x
    np.testing.assert_allclose(np.asarray(cell(x, skip)), 4 * x, rtol=1e-6)
    soft = np.asarray(keras.ops.softmax(np.random.RandomState(6).randn(6, 5).astype("float32"), axis=-1))
    assert tuple(cell(x, soft, training=True).shape) == (2, 6, 6, 3)
    names = [v.name for v in cell.weights]
    assert "kernel" in names and not {"gamma", "beta"} & set(names)  # search BN has no affine parameters
    alphas = np.full((6, 5), -1.0, "float32")
    target = NB201Genotype.from_string(MIXED)
    for k, op in enumerate(target.ops):
        alphas[k, NB201_PRIMITIVES.index(op)] = 2.0
    assert NB201SearchCell.derive(alphas) == target
    with pytest.raises(ValueError, match=r"weights have shape \(6, 5\). Received: alphas.shape=\(6, 4\)"):
        NB201SearchCell.derive(np.zeros((6, 4)))
    with pytest.raises(ValueError, match=r"Received: weights.shape=\(5, 5\)"):
        cell(x, np.zeros((5, 5), "float32"))
    assert NB201SearchCell.from_config(cell.get_config()).C == 3


def test_unknown_edge_op_is_refused():
    from darts_tf.cnn.nb201 import make_nb201_op
    with pytest.raises(ValueError, match=r"Unknown NAS-Bench-201 op 'sep_conv_3x3'.*Received: name='sep_conv_3x3'"):
        make_nb201_op("sep_conv_3x3", 4)
