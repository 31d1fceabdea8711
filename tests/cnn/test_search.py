"""End-to-end CNN search on the offline digits data: outputs, resume, and bad input."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from darts_tf import genotypes as gt
from darts_tf.cnn.search import SearchConfig, run_search
from darts_tf.search import StopAfterEpochs

TINY = dict(dataset="digits", batch_size=32, epochs=2, init_channels=4, layers=3, nodes=2,
            primitives="none,max_pool_3x3,skip_connect,sep_conv_3x3", train_portion=0.5, seed=3,
            deterministic=True, arch_mode="first_order", arch_learning_rate=3e-3)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("search") / "full")
    result = run_search(SearchConfig(output_dir=out, **TINY), verbose=0)
    return out, result


def test_two_epoch_search_changes_alpha_lowers_val_loss_and_writes_outputs(full_run):
    out, result = full_run
    history = result["metrics"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["val_loss"] < history[0]["val_loss"]
    with np.load(os.path.join(out, "alpha_history.npz")) as h, np.load(os.path.join(out, "alphas.npz")) as final:
        assert h["alpha_normal"].shape == (2, 5, 4)
        np.testing.assert_array_equal(h["alpha_normal"][-1], final["alpha_normal"])
        # alpha moved well beyond its 1e-3 initialisation
        assert np.abs(final["alpha_normal"]).max() > 5e-3 and np.abs(final["alpha_reduce"]).max() > 5e-3
    g = gt.load_genotype_file(os.path.join(out, "genotype.json"), kind="cnn")
    assert len(g.normal) == 4 and g.normal_concat == (2, 3)
    assert g == result["genotype"]
    meta = gt.load_genotype_metadata(os.path.join(out, "genotype.json"))
    assert meta["seed"] == 3 and meta["dataset"] == "digits" and meta["epoch"] == 2
    assert sorted(os.listdir(os.path.join(out, "genotypes"))) == ["epoch_001.json", "epoch_002.json"]
    events = glob.glob(os.path.join(out, "tensorboard", "*", "events.out.tfevents.*"))
    assert {os.path.basename(os.path.dirname(e)) for e in events} >= {"train", "architecture"}
    # the architecture log holds the alpha heatmaps and the genotype text
    import tensorflow as tf
    tags = set()
    for e in glob.glob(os.path.join(out, "tensorboard", "architecture", "events*")):
        for event in tf.compat.v1.train.summary_iterator(e):
            tags.update(v.tag for v in event.summary.value)
    assert {"softmax_alpha_normal", "softmax_alpha_reduce", "genotype"} <= tags


def test_killed_search_resumes_to_the_same_alphas(full_run, tmp_path):
    out_full, _ = full_run
    out = str(tmp_path / "resumed")
    first = run_search(SearchConfig(output_dir=out, **TINY), callbacks=[StopAfterEpochs(1)], verbose=0)
    assert first["metrics"]["epochs_done"] == 1
    assert not os.path.exists(os.path.join(out, "genotype.json"))  # an unfinished search publishes no genotype
    run_search(SearchConfig(output_dir=out, resume=True, **TINY), verbose=0)
    with np.load(os.path.join(out_full, "alphas.npz")) as a, np.load(os.path.join(out, "alphas.npz")) as b:
        for k in a.files:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    with open(os.path.join(out, "metrics.json")) as f:
        assert [h["epoch"] for h in json.load(f)["history"]] == [1, 2]


def test_search_is_bit_reproducible_in_a_process_that_built_other_layers(tmp_path):
    """Layer names (numbered per process) reach Grappler's sum order; each run starts a fresh Keras session."""
    from darts_tf.cnn.search_space import MixedOp

    one_epoch = {**TINY, "epochs": 1}
    alphas = []
    for name in ("a", "b"):
        MixedOp(4, 1)  # shifts Keras' layer-name counters, as any model built earlier in the process does
        run_search(SearchConfig(output_dir=str(tmp_path / name), **one_epoch), verbose=0)
        with np.load(str(tmp_path / name / "alphas.npz")) as a:
            alphas.append(dict(a))
    for k in alphas[0]:
        np.testing.assert_array_equal(alphas[0][k], alphas[1][k])


@pytest.mark.parametrize("overrides, message", [
    (dict(dataset="no_such_dataset_xyz"), r"Unknown dataset 'no_such_dataset_xyz'. Known: .*digits"),
    (dict(batch_size=1024), r"batch_size=1024 is larger than the .*split"),
    (dict(epochs=-1), r"--epochs must be >= 1. Received: epochs=-1"),
    (dict(train_portion=1.5), r"--train_portion must be in \(0, 1\)"),
    (dict(arch_mode="second"), r"Unknown architecture-gradient mode 'second'"),
    (dict(exact_hvp="sideways"), r"--exact_hvp must be one of reverse, forward. Received: exact_hvp='sideways'"),
    (dict(layers=2), r"--layers must be >= 3"),
    (dict(primitives="none,conv_9x9"), r"--primitives must be a comma-separated subset .*; unknown conv_9x9"),
])
def test_bad_input_gets_a_clear_error(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_search(SearchConfig(output_dir=str(tmp_path / "x"), **{**TINY, **overrides}), verbose=0)


def test_output_dir_of_another_run_is_refused(full_run):
    out, _ = full_run
    with pytest.raises(ValueError, match=r"holds another run's checkpoint with different flags \(init_channels: checkpoint has 4, now 6\)"):
        run_search(SearchConfig(output_dir=out, resume=True, **{**TINY, "init_channels": 6}), verbose=0)
    with pytest.raises(ValueError, match="already holds a run's checkpoint. Pass --resume"):
        run_search(SearchConfig(output_dir=out, **TINY), verbose=0)


def test_cli_reports_bad_flags_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.search", f"--output_dir={tmp_path}", "--dataset=digits",
                           "--epochs=0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "error: --epochs must be >= 1. Received: epochs=0" in proc.stderr


def test_random_search_baseline_writes_the_same_format(tmp_path):
    from darts_tf.search import run_random_search
    result = run_random_search(str(tmp_path), "cnn", num_samples=3, seed=1)
    assert len(result["samples"]) == 3
    samples = [gt.load_genotype_file(p) for p in result["samples"]]
    assert len(set(samples)) == 3
    assert gt.load_genotype_file(os.path.join(str(tmp_path), "genotype.json")) == samples[0]


def test_darts_derive_rederives_the_search_genotype_and_draws_it(full_run, tmp_path):
    out, result = full_run
    # in a subprocess only: importing a second darts-* script into this process would define its absl flags twice
    # (the genotype must use the run's restricted primitives from run_config.json)
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.derive", f"--search_dir={out}",
                           f"--output_dir={tmp_path}", "--formats=png"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert gt.load_genotype_file(str(tmp_path / "genotype.json")) == result["genotype"]
    for name in ("normal.png", "reduction.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "darts_tf.cli.derive", f"--search_dir={tmp_path / 'nope'}",
                          f"--output_dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "alphas.npz does not exist" in bad.stderr


@pytest.mark.parametrize("recompute", [True, False])
def test_exact_recompute_reaches_the_cnn_and_rnn_search_models(recompute):
    """--exact_recompute / --noexact_recompute (darts-search, darts-rnn-search) sets the models' exact-mode strategy."""
    from darts_tf.rnn import search as rnn_search
    from darts_tf.cnn.search import build_search_model

    cnn = build_search_model(SearchConfig(output_dir="unused", layers=3, init_channels=2, nodes=1,
                                              arch_mode="second_order_exact", exact_recompute=recompute), (8, 8, 3), 10, 1)
    rnn = rnn_search.build_search_model(rnn_search.SearchConfig(output_dir="unused", units=4, nodes=1, arch_mode="second_order_exact",
                                                 exact_recompute=recompute), 20)
    assert cnn.bilevel.exact_recompute is recompute and rnn.bilevel.exact_recompute is recompute
    # the reference's architects: the RNN's clips the virtual step to the weights' clip norm, the CNN's does not
    assert cnn.bilevel.unrolled_grad_clip is None and rnn.bilevel.unrolled_grad_clip == rnn.bilevel.grad_clip == 0.25


@pytest.mark.parametrize("mode, tracked_passes", [("first_order", 2), ("second_order_fd", 1)])
def test_search_step_updates_moving_statistics_only_in_its_stateful_passes(mode, tracked_passes):
    """The traced search step (issue 23's smaller graph): BatchNorm's moving averages are assigned only by the passes
    of the network as it is (first order: the alpha pass on the validation batch and the weight pass; the
    second-order modes: the weight pass alone; their four stateless passes discard such updates, so they are not
    built), and the weights step by one fused op each (MomentumSGD)."""
    import tensorflow as tf

    from darts_tf.cnn.ops import FusedBatchNorm
    from darts_tf.cnn.search import build_search_model
    from darts_tf.optim import MomentumSGD

    model = build_search_model(SearchConfig(output_dir="unused", layers=3, init_channels=2, nodes=1, arch_mode=mode),
                               (8, 8, 3), 10, 1)
    assert isinstance(model.optimizer, MomentumSGD)
    bns = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
           if isinstance(layer, FusedBatchNorm)]
    moving = {id(v.value.handle) for bn in bns for v in (bn.moving_mean, bn.moving_variance)}
    rs = np.random.RandomState(0)
    batch = (tf.constant(rs.randn(2, 8, 8, 3), tf.float32), tf.constant([1, 2], tf.int64))
    graph = tf.function(model.train_step).get_concrete_function({"train": batch, "validation": batch}).graph
    by_capture = {id(external): internal for external, internal in zip(graph.external_captures, graph.internal_captures)}
    moving_handles = {id(by_capture[h]) for h in moving if h in by_capture}
    assert len(moving_handles) == 2 * len(bns)
    assigned = [op for op in graph.get_operations() if op.type == "AssignVariableOp"
                and id(op.inputs[0]) in moving_handles]
    assert len(assigned) == 2 * len(bns) * tracked_passes
    fused = [op for op in graph.get_operations() if op.type == "ResourceApplyKerasMomentum"]
    assert len(fused) == len(model.weight_variables)
