"""The RNN task (darts_tf.rnn.task): candidate validation carved from the train stream, presets with a
pipeline's overrides, and the check of an exported language model."""

import numpy as np
import pytest

from components import artifacts
from darts_tf.rnn import export
from darts_tf.rnn.networks import RNNModel
from darts_tf.rnn.task import CHECK_TOKENS, RNNTask, carve_validation, preset_config


def test_carve_validation_holds_out_the_tail_of_the_stream():
    train, valid = carve_validation(np.arange(100), 0.1)
    np.testing.assert_array_equal(valid, np.arange(90, 100))
    assert len(train) == 90
    with pytest.raises(ValueError, match=r"validation_portion must be in \(0, 1\)\. Received: validation_portion=0"):
        carve_validation(np.arange(100), 0)


def test_preset_config_takes_overrides_as_a_pipeline_passes_them():
    config = preset_config("smoke", {"units": 16.0, "dropout": 0.5}, "select", genotype="DARTS_V1", epochs=1)
    assert config.units == 16 and isinstance(config.units, int) and config.dropout == 0.5
    assert config.genotype == "DARTS_V1" and config.epochs == 1 and config.bptt == 20  # the rest: the preset
    with pytest.raises(ValueError, match=r"\[stage 'evaluate'\] unknown TrainConfig setting\(s\) unit\. Known: units"):
        preset_config("smoke", {"unit": 16}, "evaluate")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An untrained language model over a small corpus's vocabulary, exported, and that corpus as a Dataset."""
    root = tmp_path_factory.mktemp("rnn_task")
    words = [f"w{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    for name, lines in (("train", 30), ("valid", 5), ("test", 10)):
        text = "\n".join(" ".join(rng.choice(words, 8)) for _ in range(lines)) + "\n"
        text = " ".join(words) + "\n" + text if name == "train" else text  # every word in the vocabulary
        (root / f"{name}.txt").write_text(text)
    dataset = artifacts.write_text_dataset(str(root / "ds"), str(root), "toy")
    task = RNNTask()
    corpus = task.load_data(dataset)
    model = RNNModel(corpus.vocab_size, units=8, genotype="DARTS_V1", seed=0)
    return export.export_saved_model(model, str(root / "saved_model"), corpus.vocab), dataset


def test_check_export_scores_the_test_tokens_of_the_corpus(exported):
    export_dir, dataset = exported
    check = RNNTask().check_export(export_dir, dataset)
    vocab_size = RNNTask().load_data(dataset).vocab_size
    assert check["tokens"] == CHECK_TOKENS
    assert 1.0 < check["perplexity"] < 3 * vocab_size  # an untrained model: about uniform


def test_check_export_without_data_runs_dummy_tokens(exported):
    export_dir, _ = exported
    assert RNNTask().check_export(export_dir) == {"tokens": 3}


def test_a_search_stage_with_its_own_max_vocab_reads_the_ingested_corpus_with_it(exported, tmp_path):
    _, dataset = exported
    outcome = RNNTask().search(dataset, {"units": 4, "nodes": 1, "batch_size": 2, "bptt": 5, "max_seq_len_delta": 0,
                                         "epochs": 1, "max_vocab": 6}, seed=0, output_dir=str(tmp_path / "s"),
                               verbose=0)
    assert len(open(tmp_path / "s" / "vocab.txt").read().splitlines()) == 6
    assert outcome.flags["max_vocab"] == 6
