"""Tests for darts_tf.rnn.search: the RNN search end to end on a small real corpus.

That the three architecture-gradient modes agree (exact vs finite-difference cosine > 0.99, first order apart) is
tested on the supernet itself in tests/rnn/test_models.py (test_exact_and_finite_difference_alpha_gradients_agree,
test_second_order_modes_in_graph_mode); here the runner drives them through ``fit``.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from darts_tf import genotypes as gt
from darts_tf.data.text import Corpus, batchify, smoke_corpus
from darts_tf.rnn.search import SearchConfig, build_search_model, rnn_search_dataset, run_search
from darts_tf.run_files import RunFiles


def write_small_corpus(directory, full_dir, lines=(300, 60, 60)):
    """The first lines of the offline smoke corpus (a few thousand real English tokens)."""
    if not os.path.isfile(os.path.join(full_dir, "test.txt")):
        smoke_corpus(full_dir)
    os.makedirs(directory, exist_ok=True)
    for name, n in zip(("train.txt", "valid.txt", "test.txt"), lines):
        with open(os.path.join(full_dir, name)) as f:
            text = f.read().splitlines()[:n]
        with open(os.path.join(directory, name), "w") as f:
            f.write("\n".join(text) + "\n")
    return str(directory)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rnn_corpus")
    return write_small_corpus(root / "small", str(root / "full"))


def tiny_config(output_dir, corpus_dir, **overrides):
    values = dict(output_dir=str(output_dir), dataset="small", data_dir=corpus_dir, units=16, nodes=4, batch_size=8,
                  bptt=10, max_seq_len_delta=5, epochs=2, seed=0)
    values.update(overrides)
    return SearchConfig(**values)


def test_search_dataset_has_equal_epochs_and_no_empty_windows(corpus_dir, tmp_path):
    config = tiny_config(tmp_path, corpus_dir, epochs=4)
    corpus = Corpus.from_directory(corpus_dir)
    train, valid = batchify(corpus.train, 8), batchify(corpus.valid, 8)
    dataset, steps = rnn_search_dataset(train, valid, config)
    windows = [(int(w["train"]["start"]), int(w["train"]["seq_len"]), int(w["validation"]["seq_len"]))
               for w in dataset]
    assert len(windows) == 4 * steps
    assert min(w[1] for w in windows) > 0 and min(w[2] for w in windows) > 0
    starts = [w[0] for w in windows]
    assert [i for i, s in enumerate(starts) if s == 0] == [e * steps for e in range(4)]  # epochs stay aligned
    resumed, _ = rnn_search_dataset(train, valid, config, initial_epoch=2)
    assert [int(w["train"]["start"]) for w in resumed] == starts[2 * steps:]


def test_weight_step_runs_at_the_window_scaled_learning_rate(corpus_dir, tmp_path):
    config = tiny_config(tmp_path, corpus_dir, learning_rate=2.0)
    corpus = Corpus.from_directory(corpus_dir)
    dataset, _ = rnn_search_dataset(batchify(corpus.train, 8), batchify(corpus.valid, 8), config)
    batch = next(iter(dataset))
    model = build_search_model(config, corpus.vocab_size)
    logs = model.train_step(batch)
    seq_len = int(batch["train"]["seq_len"])
    assert float(logs["lr"]) == pytest.approx(2.0 * seq_len / 10)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(2.0)  # restored for the next window


@pytest.mark.parametrize("arch_mode", ["first_order",  # the second-order steps: tests/rnn/test_networks.py
                                       pytest.param("second_order_fd", marks=pytest.mark.slow),
                                       pytest.param("second_order_exact", marks=pytest.mark.slow)])
def test_search_changes_alpha_and_writes_genotypes_and_tensorboard(corpus_dir, tmp_path, arch_mode):
    config = tiny_config(tmp_path / "search", corpus_dir, arch_mode=arch_mode)
    initial = build_search_model(config, Corpus.from_directory(corpus_dir).vocab_size).alphas_numpy()
    result = run_search(config, verbose=0)
    out = RunFiles(config.output_dir)

    final = result["alphas"]["alpha_recurrent"]
    assert final.shape == (1 + 2 + 3 + 4, 5)
    assert np.abs(final - initial["alpha_recurrent"]).max() > 1e-3
    genotype = gt.load_genotype_file(out.genotype, kind="rnn")
    assert genotype == result["genotype"] and len(genotype.recurrent) == 4 and list(genotype.concat) == [1, 2, 3, 4]
    assert all(op != "none" for op, _ in genotype.recurrent)
    assert gt.load_genotype_metadata(out.genotype)["arch_mode"] == arch_mode
    for epoch in (1, 2):
        gt.load_genotype_file(out.epoch_genotype(epoch), kind="rnn")
    with np.load(out.alpha_history) as history:
        assert history["alpha_recurrent"].shape == (2, 10, 5)
    with open(out.metrics) as f:
        metrics = json.load(f)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["val_loss"]) for h in metrics["history"])
    assert os.path.isfile(os.path.join(config.output_dir, "vocab.txt"))
    tags = set()
    for path in tf.io.gfile.glob(os.path.join(out.tensorboard, "*", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(f"{os.path.basename(os.path.dirname(path))}/{v.tag}" for v in event.summary.value)
    assert {"train/epoch_loss", "validation/epoch_loss", "architecture/softmax_alpha_recurrent",
            "architecture/genotype"} <= tags, tags


@pytest.mark.parametrize("overrides, message", [
    (dict(output_dir=""), "output_dir is required"),
    (dict(data_dir=None), "--data_dir is required for dataset 'small'"),
    (dict(arch_mode="second"), "Unknown architecture-gradient mode 'second'"),
    (dict(dropoutx=1.0), r"--dropoutx is a dropout rate in \[0, 1\)"),
    (dict(bptt=0), "--bptt must be >= 1"),
])
def test_bad_config_is_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_search(tiny_config(**{"output_dir": str(tmp_path), "corpus_dir": "unused", **overrides}))


def test_missing_corpus_file_is_named(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.txt").write_text("a b c\n")
    with pytest.raises(FileNotFoundError, match="Missing corpus file .*valid.txt"):
        run_search(tiny_config(tmp_path / "out", str(tmp_path / "data")))


SMOKE_TINY = dict(dataset="smoke", data_dir=None, units=8, nodes=2, batch_size=256, bptt=35, max_seq_len_delta=5,
                  epochs=1, seed=0, max_vocab=300)  # the offline corpus in ~6 windows, a 300-word softmax


def test_a_smoke_search_builds_the_corpus_in_memory_and_records_its_vocabulary(tmp_path):
    out = tmp_path / "search"
    result = run_search(SearchConfig(output_dir=str(out), **SMOKE_TINY), verbose=0)
    assert sorted(os.listdir(out)) == ["alpha_history.npz", "alphas.npz", "genotype.json", "genotypes", "metrics.json",
                                       "run_config.json", "tensorboard", "training_state.npz", "vocab.txt"]
    record = result["corpus"]
    assert record["vocab_size"] == 300 and record["max_vocab"] == 300 and record["valid"]["oov"] > 0
    with open(RunFiles(str(out)).run_config) as f:
        assert json.load(f)["corpus"] == record
    assert gt.load_genotype_metadata(str(out / "genotype.json"))["flags"]["corpus"] == record
    assert len(open(out / "vocab.txt").read().splitlines()) == 300


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=100_000), r"^\d+ tokens are too few for batch_size=100000: "),
    (dict(max_vocab=1), r"^--max_vocab must be 0 \(no cap\) or >= 2"),
])
def test_a_refused_smoke_search_leaves_no_directory(tmp_path, overrides, message):
    out = tmp_path / "search"
    with pytest.raises(ValueError, match=message):
        run_search(SearchConfig(output_dir=str(out), **{**SMOKE_TINY, **overrides}), verbose=0)
    assert not out.exists()


def test_a_corpus_passed_in_takes_no_vocabulary_settings(corpus_dir, tmp_path):
    config = tiny_config(tmp_path / "out", corpus_dir, max_vocab=100)
    with pytest.raises(ValueError, match=r"max_vocab and strict_vocab apply where the corpus is read, and this corpus "
                                         r"was read already: pass corpus=None .* Received: max_vocab=100, "
                                         r"strict_vocab=False"):
        run_search(config, corpus=Corpus.from_directory(corpus_dir))
    assert not (tmp_path / "out").exists()


def test_a_search_over_chosen_activations_and_nodes_derives_from_them_only(tmp_path):
    """--primitives/--nodes of darts-rnn-search: alpha gets one column per chosen activation (in the order given), the
    genotype and the pipeline's primitive list use only them."""
    from darts_tf.rnn.task import RNNTask
    config = SearchConfig(output_dir=str(tmp_path / "search"), **{**SMOKE_TINY, "nodes": 3},
                          primitives="relu,none,identity")
    result = run_search(config, verbose=0)
    alpha = np.load(tmp_path / "search" / "alphas.npz")["alpha_recurrent"]
    assert alpha.shape == (1 + 2 + 3, 3)
    genotype = gt.load_genotype_file(str(tmp_path / "search" / "genotype.json"), "rnn")
    assert genotype == result["genotype"] and len(genotype.recurrent) == 3
    assert genotype == gt.derive_from_alphas({"alpha_recurrent": alpha}, primitives=["relu", "none", "identity"])
    assert {op for op, _ in genotype.recurrent} <= {"relu", "identity"}
    assert RNNTask().primitives(config) == ["relu", "none", "identity"]


def test_unknown_activations_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "search"
    with pytest.raises(ValueError, match=r"^--primitives must be a comma-separated subset \(at least 2, not only "
                                         r"'none'\) of none, tanh, relu, sigmoid, identity; unknown gelu\. "
                                         r"Received: primitives='tanh,gelu'$"):
        run_search(SearchConfig(output_dir=str(out), **SMOKE_TINY, primitives="tanh,gelu"), verbose=0)
    assert not out.exists()
