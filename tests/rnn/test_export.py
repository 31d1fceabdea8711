"""SavedModel export of a tiny language model (darts_tf.rnn.export): it restores under the TF1 session loader model
servers use, in a fresh process without darts_tf, and its three signatures (token ids, token ids + hidden state,
text) give the Keras model's outputs; the vocabulary is a SavedModel asset."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from darts_tf.data.text import EOS, UNK, tokenize_line
from darts_tf.rnn import export
from darts_tf.rnn.networks import RNNModel

from tests.serving_clients import RNN_SESSION_CLIENT as _SESSION_CLIENT

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
VOCAB = [UNK, EOS, "the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
SENTENCES = ["the cat sat on a mat", "a dog  ran\t on the zebra", ""]  # extra whitespace, an unknown word, empty



@pytest.fixture(scope="module")
def model():
    return RNNModel(len(VOCAB), units=8, genotype="DARTS_V1", seed=0)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("rnn_export") / "saved_model")
    export.export_saved_model(model, base, VOCAB, metadata={"preset": "test"}, version=1)
    return base


def keras_log_probs(model, tokens, hidden=None):
    inputs = {"tokens": tokens} if hidden is None else {"tokens": tokens, "hidden": hidden}
    out = model(inputs, training=False)
    return tf.nn.log_softmax(out["logits"], axis=-1).numpy(), out["hidden"].numpy()


def encode(sentence):
    return [VOCAB.index(w) if w in VOCAB else VOCAB.index(UNK) for w in tokenize_line(sentence)]


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rnn_served")
    tokens = np.random.default_rng(0).integers(0, len(VOCAB), (3, 7)).astype(np.int32)
    np.save(tmp / "tokens.npy", tokens)
    (tmp / "sentences.json").write_text(json.dumps(SENTENCES))
    proc = subprocess.run([sys.executable, "-c", _SESSION_CLIENT, os.path.join(exported, "1"), str(tmp / "tokens.npy"),
                           str(tmp / "sentences.json"), str(tmp / "out.npz")], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp / "out.npz") as out:
        return tokens, dict(out)


def test_session_loader_token_signatures_match_keras(model, served):
    tokens, out = served
    expected, hidden = keras_log_probs(model, tokens)
    assert out["log_probs"].shape == (3, 7, len(VOCAB)) and out["hidden"].shape == (3, 8)
    np.testing.assert_allclose(out["log_probs"], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["hidden"], hidden, atol=1e-5, rtol=0)
    expected2, hidden2 = keras_log_probs(model, tokens, hidden)  # with_hidden continues the state
    np.testing.assert_allclose(out["log_probs2"], expected2, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["hidden2"], hidden2, atol=1e-5, rtol=0)


def test_session_loader_text_signature_tokenises_as_training(model, served):
    _, out = served
    ids = [encode(s) for s in SENTENCES]
    lengths = [len(i) for i in ids]
    assert list(out["text_lengths"]) == lengths == [7, 7, 1]
    padded = np.zeros((3, max(lengths)), np.int32)
    for row, i in zip(padded, ids):
        row[:len(i)] = i
    np.testing.assert_array_equal(out["text_token_ids"], padded)
    for b, i in enumerate(ids):  # each sentence alone, through Keras: padding does not change its positions
        expected, _ = keras_log_probs(model, np.asarray([i], np.int32))
        np.testing.assert_allclose(out["text_log_probs"][b, :len(i)], expected[0], atol=1e-5, rtol=0)
        score = sum(expected[0, t, i[t + 1]] for t in range(len(i) - 1))
        assert out["text_sentence_log_prob"][b] == pytest.approx(score, abs=1e-5)
        words = [VOCAB[j] for j in expected[0].argmax(-1)]
        assert list(out["text_predicted_words"][b]) == words + [""] * (max(lengths) - len(i))


def test_vocabulary_is_a_saved_model_asset_and_the_layout_is_versioned(exported):
    assert os.listdir(exported) == ["1"]
    version = os.path.join(exported, "1")
    with open(os.path.join(version, "assets", "vocab.txt")) as f:
        assert f.read().splitlines() == VOCAB
    with open(os.path.join(version, export.VOCAB_FILE)) as f:
        assert f.read().splitlines() == VOCAB
    with open(os.path.join(version, export.METADATA_FILE)) as f:
        meta = json.load(f)
    assert meta["vocab_size"] == len(VOCAB) and meta["units"] == 8 and meta["version"] == 1
    assert sorted(meta["signatures"]) == ["serving_default", "serving_text", "with_hidden"]
    assert meta["run"] == {"preset": "test"}


def test_predictor_on_the_base_path(model, exported):
    predictor = export.load_predictor(exported)  # the base path: version 1
    assert predictor.export_dir == os.path.join(exported, "1") and predictor.units == 8 and predictor.vocab == VOCAB
    scored = predictor.score_text(["the cat"])
    assert list(scored["token_ids"][0]) == encode("the cat")
    assert len(predictor.next_words(["the", "cat"], k=3)) == 3


def test_unknown_word_without_unk_is_an_error(model, tmp_path):
    vocab = ["w" + str(i) for i in range(len(VOCAB) - 1)] + [EOS]
    path = export.export_saved_model(model, str(tmp_path / "sm"), vocab)  # flat: version=None
    assert path == str(tmp_path / "sm")
    predictor = export.load_predictor(path)
    assert list(predictor.score_text(["w1 w2"])["token_ids"][0]) == [1, 2, len(vocab) - 1]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="not in the vocabulary and it has no <unk> token; unknown words:.*zebra"):
        predictor.score_text(["w1 zebra"])
