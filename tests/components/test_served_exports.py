"""The SavedModels the pipeline's evaluate stage publishes (CNN and RNN) load in a fresh process that never imports
darts_tf, through the TF1 session loader that TF Serving and KServe use, and their `serving_default` outputs equal
the Keras model's to 1e-5 (issue 17)."""

import base64
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from components import artifacts, evaluate, ingest
from darts_tf import genotypes as gt
from darts_tf.data import augment, text

from tests.helpers import ENV
from tests.serving_clients import CNN_SESSION_CLIENT, RNN_SESSION_CLIENT

LINEAGE = {"stage": "test", "search_uri": "", "seed": 0, "flags": {}, "dataset_hash": ""}
TINY_TRAIN = dict(layers=3, init_channels=4, epochs=1, batch_size=32, cutout_length=0, drop_path_prob=0.0,
                  auxiliary=False, verbose=0)
RNN_TRAIN = dict(units=8, batch_size=8, eval_batch_size=5, test_batch_size=5, bptt=10, max_seq_len_delta=2, epochs=1)


def client(script, *args):
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def published(tmp_path, kind, dataset, genotype, settings):
    chosen = artifacts.write_genotype(str(tmp_path / f"{kind}_genotype"), genotype, LINEAGE, "derive")
    model, _ = evaluate.run(dataset.path, chosen.path, str(tmp_path / f"{kind}_model"), str(tmp_path / f"{kind}_m"),
                            kind, settings)
    (version,) = os.listdir(model.saved_model_dir)  # TF Serving's layout: saved_model/<version>/
    assert version == "1"
    return model, os.path.join(model.saved_model_dir, version)


def test_the_cnn_evaluate_stages_saved_model_serves_like_the_keras_model(tmp_path):
    dataset = ingest.run(str(tmp_path / "digits"), {"kind": "images", "dataset": "digits"})
    model, served_dir = published(tmp_path, "cnn", dataset, gt.CNN_GENOTYPES["DARTS_V2"], TINY_TRAIN)
    data = dataset.image_data()
    raw = data.test_images[:16]
    np.save(tmp_path / "images.npy", raw)
    request = {"signature_name": "serving_bytes",
               "instances": [{"b64": base64.b64encode(tf.io.encode_png(x).numpy()).decode("ascii")} for x in raw]}
    (tmp_path / "request.json").write_text(json.dumps(request))
    client(CNN_SESSION_CLIENT, served_dir, tmp_path / "images.npy", tmp_path / "request.json", tmp_path / "out.npz")

    network = keras.models.load_model(model.keras_model_path, compile=False)
    expected = tf.nn.softmax(network(augment.normalize(raw, data.mean, data.std), training=False)).numpy()
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5, rtol=0)
        assert list(out["classes"]) == [data.class_names[i] for i in expected.argmax(-1)]
        assert list(out["bytes_classes"]) == list(out["classes"])
        assert list(out["input_shape"]) == [-1, 8, 8, 1]


def test_the_rnn_evaluate_stages_saved_model_serves_like_the_keras_model(tmp_path):
    dataset = ingest.run(str(tmp_path / "smoke"), {"kind": "text", "dataset": "smoke", "max_train_tokens": 3000})
    model, served_dir = published(tmp_path, "rnn", dataset, gt.RNN_GENOTYPES["DARTS_V1"],
                                  {"preset": "smoke", "overrides": RNN_TRAIN})
    vocab = text.load_vocab(model.vocab_path)
    tokens = np.random.default_rng(0).integers(0, len(vocab), (2, 6)).astype(np.int32)
    np.save(tmp_path / "tokens.npy", tokens)
    (tmp_path / "sentences.json").write_text(json.dumps([" ".join(vocab[2:6])]))
    client(RNN_SESSION_CLIENT, served_dir, tmp_path / "tokens.npy", tmp_path / "sentences.json", tmp_path / "out.npz")

    network = keras.models.load_model(model.keras_model_path, compile=False)
    expected = network({"tokens": tokens}, training=False)
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["log_probs"], tf.nn.log_softmax(expected["logits"], -1).numpy(), atol=1e-5,
                                   rtol=0)
        np.testing.assert_allclose(out["hidden"], expected["hidden"].numpy(), atol=1e-5, rtol=0)
        assert list(out["text_token_ids"][0][:4]) == list(range(2, 6))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
