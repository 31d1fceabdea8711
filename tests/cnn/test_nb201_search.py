"""DARTS in the NAS-Bench-201 cell space: the supernet and its gradients, genotype files, `darts-search --search_space
nb201` on the offline digits data (its files, views and health), darts-derive, the NATS-Bench lookup with an
injected API, and `darts-train --preset nb201` with darts-test / darts-export of its run."""

import dataclasses
import glob
import importlib.machinery
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import early_stop, genotypes as gt, health as hl, visualize
from darts_tf.bilevel import ARCH_MODES, BilevelConfig
from darts_tf.collapse import CollapseGuards
from darts_tf.cnn import nb201_lookup
from darts_tf.cnn.nb201 import NB201SearchNetwork, build_nb201_search_network
from darts_tf.cnn.search import SearchConfig, get_search_preset, run_search

from tests.helpers import ENV, cosine, run_module

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
TINY = dict(search_space="nb201", dataset="digits", batch_size=32, epochs=2, init_channels=4, layers=1,
            train_portion=0.5, seed=3, deterministic=True, arch_learning_rate=3e-3)


def _alpha_for(arch: str) -> np.ndarray:
    """An alpha whose top-1 op per edge is `arch`'s."""
    alpha = np.zeros((6, 5), np.float32)
    for k, op in enumerate(gt.NB201Genotype.from_string(arch).ops):
        alpha[k, gt.NB201_PRIMITIVES.index(op)] = 1.0
    return alpha


# ------------------------------------------------------------------------------------------------ the supernet
def test_supernet_shares_one_alpha_and_derives_the_top1_op_per_edge():
    model = build_nb201_search_network((8, 8, 1), 10, C=4, N=2)
    assert [v.name for v in model.arch_variables] == ["alpha_cell"]
    assert tuple(model.alpha_cell.shape) == (6, 5)
    assert sum(1 for b in model.blocks if type(b).__name__ == "NB201SearchCell") == 6  # 3 stages of N=2
    model.alpha_cell.assign(_alpha_for(ARCH))
    assert model.genotype().to_string() == ARCH
    assert set(model.alphas_numpy()) == {"alpha_cell"}
    assert model(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)
    # 'none' wins where its alpha is largest (the official DARTS-on-NAS-Bench-201 derivation keeps it)
    alpha = np.zeros((6, 5), np.float32)
    alpha[:, 0] = 1.0
    assert gt.derive_nb201_genotype(alpha).ops == ("none",) * 6
    clone = NB201SearchNetwork.from_config(model.get_config())
    assert (clone.C, clone.N, clone.num_classes) == (4, 2, 10) and clone.bilevel == model.bilevel


def test_the_mixed_edge_is_the_softmax_weighted_sum_of_its_ops():
    """One cell, the output node against a NumPy sum of each op's output weighted by softmax(alpha)."""
    from darts_tf.cnn.nb201 import NB201SearchCell

    cell = NB201SearchCell(3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    w = keras.ops.softmax(rng.standard_normal((6, 5)).astype(np.float32), axis=-1)
    out = np.asarray(cell(x, w))
    wn = np.asarray(w)
    nodes = [x]
    for j in range(1, 4):
        s = 0.0
        for k, (to, i) in enumerate(gt.NB201_EDGES):
            if to == j:
                for o, op in enumerate(cell.edge_candidates[k]):
                    if gt.NB201_PRIMITIVES[o] != "none":
                        s = s + wn[k, o] * np.asarray(op(nodes[i], training=False))
        nodes.append(s)
    np.testing.assert_allclose(out, nodes[-1], rtol=1e-5, atol=1e-5)


def _tiny_gradients(dtype, seed):
    model = build_nb201_search_network((8, 8, 3), 10, C=2, N=1, bilevel=BilevelConfig(fd_epsilon=1e-6))
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), arch_optimizer=keras.optimizers.Adam(3e-4))
    rng = np.random.RandomState(seed)
    for v in model.trainable_variables:
        shape = tuple(v.shape)
        if "alpha" in v.path:
            v.assign(1e-3 * rng.standard_normal(shape))
        elif len(shape) >= 2:
            v.assign(rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape))

    def batch():
        return (tf.constant(rng.rand(8, 8, 8, 3).astype(dtype)), tf.constant(rng.randint(0, 10, 8).astype("int64")))

    train, val = batch(), batch()
    xi = tf.constant(0.5, dtype)
    grads = {mode: [np.asarray(g) for g in model.unrolled_alpha_gradient(train, val, mode=mode, xi=xi)[0]]
             for mode in ARCH_MODES}
    return model, train, val, grads


@pytest.mark.slow  # ~35 s each on this shared CPU (eager second-order tapes)
@pytest.mark.parametrize("seed", [1, 2])
def test_exact_and_finite_difference_gradients_agree_on_a_tiny_nb201_supernet(float64, seed):
    """The three architecture gradients of the NAS-Bench-201 supernet: exact (nested tapes) and the finite difference
    of eq. 8 agree in float64 (cosine > 0.999), first order differs from both; the forward-over-reverse Hessian term
    equals the exact mode's to round-off."""
    model, train, val, grads = _tiny_gradients(float64, seed)
    exact, fd, first = grads["second_order_exact"], grads["second_order_fd"], grads["first_order"]
    for g in grads.values():
        assert np.isfinite(g[0]).all() and np.abs(g[0]).sum() > 0
    assert cosine([e - f for e, f in zip(exact, first)], [d - f for d, f in zip(fd, first)]) > 0.999
    assert cosine(exact, fd) > 0.999 and cosine(exact, first) < 0.99
    model.bilevel = dataclasses.replace(model.bilevel, exact_hvp="forward")
    forward = model.unrolled_alpha_gradient(train, val, mode="second_order_exact", xi=tf.constant(0.5, float64))[0]
    scale = np.abs(exact[0] - first[0]).max()
    np.testing.assert_allclose(np.asarray(forward[0]), exact[0], rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize("mode", ARCH_MODES)
def test_a_search_step_moves_alpha_in_every_mode(mode):
    model = build_nb201_search_network((8, 8, 1), 10, C=4, N=1, bilevel=BilevelConfig(mode=mode))
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), arch_optimizer=keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    batch = lambda: (rng.random((8, 8, 8, 1), np.float32), rng.integers(0, 10, 8))  # noqa: E731
    before = model.alpha_cell.numpy().copy()
    logs = model.train_step({"train": batch(), "validation": batch()})
    assert np.isfinite(float(logs["loss"])) and np.isfinite(float(logs["val_loss"]))
    assert np.abs(model.alpha_cell.numpy() - before).min() > 1e-3  # Adam's first step: ~lr on every entry


def test_guards_that_act_inside_mixed_ops_are_refused():
    with pytest.raises(ValueError, match="leave skip_dropout, max_skip_connects off"):
        NB201SearchNetwork(C=4, N=1, guards=CollapseGuards(skip_dropout=0.1, max_skip_connects=2))
    NB201SearchNetwork(C=4, N=1, guards=CollapseGuards(sdarts_epsilon=0.03, beta_decay=0.5))  # alpha-only: fine


# ------------------------------------------------------------------------------------------------ genotype files
def test_genotype_json_is_kind_nb201_with_the_architecture_string(tmp_path):
    g = gt.NB201Genotype.from_string(ARCH)
    path = str(tmp_path / "g.json")
    gt.save_genotype(g, path, {"epoch": 3})
    with open(path) as f:
        data = json.load(f)
    assert data == {"kind": "nb201", "arch": ARCH, "metadata": {"epoch": 3}}
    assert gt.load_genotype_file(path) == g == gt.load_genotype_file(path, kind="nb201")
    assert gt.as_genotype(ARCH, "nb201") == g == gt.resolve_genotype(ARCH, "nb201") == gt.as_genotype(path, "nb201")
    assert gt.as_genotype({"kind": "nb201", "arch": ARCH}, ("cnn", "nb201")) == g
    assert gt.as_genotype("ResNet", ("cnn", "nb201")).ops[0] == "nor_conv_3x3"
    assert gt.as_genotype("DARTS_V2", ("cnn", "nb201")) == gt.CNN_GENOTYPES["DARTS_V2"]
    with pytest.raises(gt.GenotypeError, match="Expected a CNN genotype but the genotype has kind 'nb201'"):
        gt.load_genotype_file(path, kind="cnn")
    with pytest.raises(gt.GenotypeError, match="Expected a CNN genotype but '.*' is a NAS-Bench-201 architecture"):
        gt.as_genotype(ARCH, "cnn")
    with pytest.raises(gt.GenotypeError, match="Unknown NAS-Bench-201 op 'sep_conv_3x3'"):
        gt.genotype_from_json('{"kind": "nb201", "arch": "|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"}')
    with pytest.raises(gt.GenotypeError, match=r"missing field\(s\) 'arch'"):
        gt.genotype_from_dict({"kind": "nb201"})


def test_health_views_and_early_stop_count_the_cells_skip_connects():
    g = gt.NB201Genotype.from_string(ARCH)
    previous = gt.NB201Genotype.from_string(ARCH.replace("none~1", "skip_connect~1"))
    health = hl.architecture_health({"alpha_cell": _alpha_for(ARCH)}, g, previous)
    assert health.scalars["skip_connects/cell"] == 1.0
    assert health.scalars["genotype_changes/cell"] == 1.0 and health.scalars["genotype_changes"] == 1.0
    assert hl.edge_names(6, "cell", sep="<-") == ["n1<-n0", "n2<-n0", "n2<-n1", "n3<-n0", "n3<-n1", "n3<-n2"]
    assert early_stop.darts_plus_decision([{"epoch": 1, "skip_connects/cell": 1.0},
                                           {"epoch": 2, "skip_connects/cell": 2.0}]).kept_epoch == 1
    table = visualize.genotype_table(g)
    assert "| n3 | n2 | nor_conv_3x3 |" in table and ARCH in table
    source = visualize.genotype_digraphs(g)["cell"].source
    assert 'n1 -> n3 [label=none fillcolor=gray style=dashed]' in source


# ------------------------------------------------------------------------------------------------ the search
@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    """256 of scikit-learn's 8x8 digits as an .npz (192 train, 64 test): 3 search steps an epoch at batch 32."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:256, :, :, None] * (255.0 / 16.0)).astype(np.uint8)
    path = str(tmp_path_factory.mktemp("data") / "digits256.npz")
    np.savez(path, x_train=x[:192], y_train=d.target[:192], x_test=x[192:], y_test=d.target[192:256])
    return path




@pytest.mark.slow  # the search fixture: 25-50 s on this shared CPU (tracing the supernet's step)
def test_nb201_search_writes_every_search_file(nb201_run):
    out, result = nb201_run
    genotype = result["genotype"]
    assert isinstance(genotype, gt.NB201Genotype)
    assert gt.load_genotype_file(os.path.join(out, "genotype.json")) == genotype
    assert gt.load_genotype_file(os.path.join(out, "genotypes", "epoch_002.json")) == genotype
    with np.load(os.path.join(out, "alphas.npz")) as alphas, np.load(os.path.join(out, "alpha_history.npz")) as h:
        assert set(alphas) == {"alpha_cell"} and h["alpha_cell"].shape == (2, 6, 5)
        assert gt.derive_nb201_genotype(alphas["alpha_cell"]) == genotype
    history = result["metrics"]["history"]
    assert history[-1]["skip_connects/cell"] == float(genotype.ops.count("skip_connect"))
    assert np.isfinite(history[-1]["val_loss"]) and "entropy/cell" in history[-1] and "genotype_changes" in history[-1]
    tags = set()
    for e in glob.glob(os.path.join(out, "tensorboard", "architecture", "events*")):
        for event in tf.compat.v1.train.summary_iterator(e):
            tags.update(v.tag for v in event.summary.value)
    assert {"softmax_alpha_cell", "alpha_cell", "genotype", "health/skip_connects/cell",
            "op_weights/cell/n3<-n2/nor_conv_3x3", "edge_entropy/cell/n1<-n0"} <= tags, tags
    if visualize.shutil.which("dot"):
        assert "cell/cell" in tags


@pytest.mark.slow  # the search fixture: 25-50 s on this shared CPU (tracing the supernet's step)
def test_derive_of_an_nb201_search(nb201_run):
    from darts_tf.cli.derive import derive_search_dir

    out, result = nb201_run
    genotype, found = derive_search_dir(out)
    assert genotype == result["genotype"] and found.primitives == list(gt.NB201_PRIMITIVES) and found.finished
    with pytest.raises(ValueError, match=r"A NAS-Bench-201 cell keeps every edge with its top-1 op .* Received: "
                                         r"primitives=.*, k=2, max_skip_connects=0"):
        derive_search_dir(out, k=2)


@pytest.mark.slow  # two script start-ups
def test_darts_derive_script_of_an_nb201_search(nb201_run, tmp_path):
    out, result = nb201_run
    run_module("darts_tf.cli.derive", f"--search_dir={out}", f"--output_dir={tmp_path}", "--formats=dot")
    assert gt.load_genotype_file(str(tmp_path / "genotype.json")) == result["genotype"]
    assert os.path.isfile(tmp_path / "cell.dot")
    bad = subprocess.run([sys.executable, "-m", "darts_tf.cli.derive", f"--search_dir={out}",
                          f"--output_dir={tmp_path / 'k'}", "--k=2"], capture_output=True, text=True, env=ENV,
                         timeout=600)
    assert bad.returncode == 2 and "A NAS-Bench-201 cell keeps every edge" in bad.stderr


@pytest.mark.parametrize("overrides, message", [
    (dict(primitives="none,skip_connect"), r"--primitives does not apply to --search_space=nb201"),
    (dict(nodes=3), r"--nodes does not apply to --search_space=nb201 \(its cell has 4 nodes"),
    (dict(max_skip_connects=2), r"--max_skip_connects does not apply"),
    (dict(skip_dropout=0.1), r"--skip_dropout does not apply"),
    (dict(partial_channels=2), r"--partial_channels does not apply"),
    (dict(search_space="nas"), r"--search_space must be one of darts, nb201. Received: search_space='nas'"),
    (dict(search_space="darts", layers=3, nb201_benchmark="x"), r"--nb201_benchmark .* needs --search_space=nb201"),
    (dict(nb201_benchmark="/no/such/benchmark"), r"--nb201_benchmark '/no/such/benchmark' does not exist"),
])
def test_flags_that_do_not_apply_are_refused(tmp_path, overrides, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        SearchConfig(output_dir=str(tmp_path / "x"), **{**TINY, **overrides}).validate()


def test_nb201_preset_is_the_official_darts_setting():
    config = get_search_preset("nb201")
    assert (config.search_space, config.init_channels, config.layers, config.epochs, config.batch_size) == \
        ("nb201", 16, 5, 50, 64)
    assert (config.learning_rate, config.learning_rate_min, config.weight_decay) == (0.025, 0.001, 5e-4)


def test_missing_nats_bench_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(nb201_lookup.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"needs the nats_bench package, which is not installed: pip install"):
        nb201_lookup.check_benchmark(str(tmp_path), "cifar10")
    with pytest.raises(ValueError, match=r"--nb201_dataset must be one of cifar10, cifar10-valid, cifar100, "
                                         r"ImageNet16-120. Received: nb201_dataset='cifar'"):
        nb201_lookup.check_benchmark(str(tmp_path), "cifar")


class FakeBenchmark:
    """Stands in for NATS-Bench's topology API (the benchmark file is not available here): every architecture string
    has an index and made-up accuracies derived from it, so the test knows what must be logged."""

    def __init__(self, path):
        self.path, self.queries = path, []

    def query_index_by_arch(self, arch):
        ops = gt.NB201Genotype.from_string(arch).ops  # a string the real API would take
        return sum(gt.NB201_PRIMITIVES.index(op) * 5 ** k for k, op in enumerate(ops))

    def get_more_info(self, index, dataset, hp="12", is_random=True):
        self.queries.append((index, dataset, hp, is_random))
        return {"test-accuracy": 50.0 + index / 1000.0, "valid-accuracy": 40.0 + index / 1000.0, "train-loss": 0.1}


@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory, small_digits):
    """A 2-epoch `--search_space nb201` search on 192 digits with `--nb201_benchmark` served by a stand-in
    `nats_bench` module (``create`` checked to be called as the real one is); the one search of this file."""
    created = []
    fake = types.ModuleType("nats_bench")
    fake.__spec__ = importlib.machinery.ModuleSpec("nats_bench", None)

    def create(path, search_space, fast_mode=False, verbose=True):
        assert (search_space, fast_mode, verbose) == ("tss", True, False)
        created.append(FakeBenchmark(path))
        return created[-1]

    fake.create = create
    root = tmp_path_factory.mktemp("nb201")
    bench = root / "NATS-tss-v1_0-3ffb9-simple"
    bench.mkdir()
    out = str(root / "search")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "nats_bench", fake)
        result = run_search(SearchConfig(output_dir=out, nb201_benchmark=str(bench), nb201_dataset="cifar100",
                                         **{**TINY, "dataset": small_digits, "epochs": 2}), verbose=0)
    return out, {**result, "benchmark": created[0]}


@pytest.mark.slow  # the search fixture: 25-50 s on this shared CPU (tracing the supernet's step)
def test_the_search_logs_the_benchmark_accuracy_of_each_epoch(nb201_run):
    """The lookup through a stand-in `nats_bench` module (``nats_bench.create`` called as the real one): each
    epoch's genotype is queried with hp='200' (averaged over the benchmark's seeds) and its accuracies are in the
    epoch logs, metrics.json and TensorBoard. No real benchmark number is claimed."""
    out, result = nb201_run
    api = result["benchmark"]
    assert api.path.endswith("NATS-tss-v1_0-3ffb9-simple")
    assert [q[1:] for q in api.queries] == [("cifar100", "200", False)] * 2
    history = result["metrics"]["history"]
    assert len(history) == 2
    for epoch, h in enumerate(history, start=1):
        g = gt.load_genotype_file(os.path.join(out, "genotypes", f"epoch_{epoch:03d}.json"))
        index = api.query_index_by_arch(g.to_string())
        assert h["nb201_index"] == index
        assert h["nb201_test_accuracy"] == pytest.approx(50.0 + index / 1000.0)
        assert h["nb201_valid_accuracy"] == pytest.approx(40.0 + index / 1000.0)
    tags = set()
    for e in glob.glob(os.path.join(out, "tensorboard", "train", "events*")):
        for event in tf.compat.v1.train.summary_iterator(e):
            tags.update(v.tag for v in event.summary.value)
    assert "epoch_nb201_test_accuracy" in tags, tags


def test_a_cell_the_benchmark_lacks_is_logged_without_numbers():
    class Empty(FakeBenchmark):
        def query_index_by_arch(self, arch):
            return -1

    lookup = nb201_lookup.NB201Lookup(Empty("x"), "cifar10")
    lookup.set_model(types.SimpleNamespace(genotype=lambda: gt.NB201Genotype.from_string(ARCH)))
    logs = {"loss": 1.0}
    lookup.on_epoch_end(0, logs)
    assert logs == {"loss": 1.0} and lookup.records == []


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def nb201_trained(tmp_path_factory, small_digits):
    """`darts-train --genotype ARCH` in this process: the nb201 preset is picked by the genotype."""
    from absl import flags

    from darts_tf.cli import train as train_cli

    train_cli.define_train_flags()
    out = str(tmp_path_factory.mktemp("nb201_train") / "run")
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prog", f"--genotype={ARCH}", f"--dataset={small_digits}", "--layers=1", "--init_channels=4",
                 "--batch_size=32", "--epochs=1", "--verbose=0", f"--output_dir={out}"])
    try:
        config = train_cli.train_config_from_flags(verbose=0)
    finally:
        flags.FLAGS.unparse_flags()
    from darts_tf.cnn import train as training

    return out, config, training.train(config)


def test_darts_train_of_an_nb201_genotype_uses_the_nb201_protocol(nb201_trained, tmp_path):
    from darts_tf.cnn import evaluate, train as training
    from darts_tf.cnn.nb201 import NB201Network, nb201_parameter_count

    out, config, metrics = nb201_trained
    assert (config.nesterov, config.weight_decay, config.auxiliary, config.cutout_length, config.grad_clip) == \
        (True, 5e-4, False, 0, 0.0)
    stem_rgb_extra = 2 * 9 * 4  # the closed form counts a 3-channel stem; the digits have 1 channel
    assert metrics["params_M"] == pytest.approx((nb201_parameter_count(ARCH, C=4, N=1) - stem_rgb_extra) / 1e6)
    assert gt.load_genotype_file(os.path.join(out, "genotype.json")).to_string() == ARCH
    model = evaluate.load_model(out)
    assert isinstance(model, NB201Network) and (model.C, model.N) == (4, 1)
    result = evaluate.evaluate(out)
    assert result["top1_accuracy"] == pytest.approx(metrics["test_top1_accuracy"], abs=1e-6)
    with pytest.raises(ValueError, match="A NAS-Bench-201 network has no auxiliary head and no drop-path"):
        training.TrainConfig(genotype=ARCH, layers=1, output_dir=str(tmp_path / "y")).validate()
    with pytest.raises(ValueError, match=r"layers must be >= 1. Received: layers=0"):
        training.get_train_preset("nb201", genotype=ARCH, layers=0, output_dir=str(tmp_path / "y")).validate()
    preset = training.get_train_preset("nb201")
    assert (preset.epochs, preset.batch_size, preset.learning_rate, preset.learning_rate_min, preset.momentum,
            preset.nesterov, preset.weight_decay, preset.cutout_length, preset.drop_path_prob, preset.auxiliary) == \
        (200, 256, 0.1, 0.0, 0.9, True, 5e-4, 0, 0.0, False)


@pytest.mark.slow  # two script start-ups
def test_darts_test_and_darts_export_of_an_nb201_run(nb201_trained, tmp_path):
    out, _, metrics = nb201_trained
    proc = run_module("darts_tf.cli.test", f"--model={os.path.join(out, 'model.keras')}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["top1_accuracy"] == pytest.approx(metrics["test_top1_accuracy"], abs=1e-6)
    run_module("darts_tf.cli.export", f"--model={out}", f"--export_dir={tmp_path / 'exported'}")
    (genotype_file,) = glob.glob(str(tmp_path / "exported" / "**" / "genotype.json"), recursive=True)
    assert gt.load_genotype_file(genotype_file).to_string() == ARCH
