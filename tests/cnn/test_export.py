"""SavedModel export (darts_tf.cnn.export, darts-export, darts-predict) of a tiny network on `digits` (8x8x1)."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import genotypes as gt
from darts_tf import run_files
from darts_tf.cnn import export
from darts_tf.cnn.networks import NetworkCIFAR
from darts_tf.data import augment, images
from darts_tf.io_utils import save_model_atomic

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
CLASS_NAMES = [f"digit_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def digits():
    return images.load_image_data("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """A tiny network whose BatchNorm statistics have moved off their initial values (two training passes)."""
    keras.utils.set_random_seed(0)
    model = NetworkCIFAR("DARTS_V1", C=4, num_classes=10, num_layers=3, auxiliary=True, drop_path_prob=0.3, seed=0)
    model.build((None, 8, 8, 1))
    x = augment.normalize(digits.train_images[:64], digits.mean, digits.std).numpy()
    for _ in range(2):
        model.forward(x, training=True)
    return model


@pytest.fixture(scope="module")
def exported(trained, digits, tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("export") / "saved_model")
    export.export_saved_model(trained, export_dir, digits.mean, digits.std, class_names=CLASS_NAMES,
                              metadata={"dataset": "digits"})
    return export_dir


def keras_probabilities(model, data, raw):
    logits = model(augment.normalize(raw, data.mean, data.std), training=False)
    return tf.nn.softmax(logits).numpy()


def test_saved_model_in_a_fresh_process_matches_keras(trained, exported, digits, tmp_path):
    raw = digits.test_images[:20]
    np.save(tmp_path / "images.npy", raw)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({exported!r})
        fn = loaded.signatures["serving_default"]
        out = fn(images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
        np.save({str(tmp_path / 'probs.npy')!r}, out["probabilities"].numpy())
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = np.load(tmp_path / "probs.npy")
    expected = keras_probabilities(trained, digits, raw)
    assert served.shape == (20, 10)
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-5)


def test_export_layout_and_metadata(trained, exported, digits):
    assert os.path.isfile(os.path.join(exported, "saved_model.pb"))
    assert gt.load_genotype_file(os.path.join(exported, export.GENOTYPE_FILE), "cnn") == gt.CNN_GENOTYPES["DARTS_V1"]
    with open(os.path.join(exported, export.METADATA_FILE)) as f:
        meta = json.load(f)
    assert meta["image_shape"] == [8, 8, 1] and meta["input_dtype"] == "uint8"
    assert meta["class_names"] == CLASS_NAMES and meta["num_classes"] == 10
    assert meta["mean"] == pytest.approx(list(digits.mean)) and meta["run"] == {"dataset": "digits"}
    assert not [n for n in os.listdir(os.path.dirname(exported)) if n.startswith(".")]  # no temporary dirs left


def test_reexport_replaces_the_directory_atomically(trained, digits, tmp_path):
    export_dir = str(tmp_path / "sm")
    os.makedirs(export_dir)
    with open(os.path.join(export_dir, "stale.txt"), "w") as f:
        f.write("old export")
    export.export_saved_model(trained, export_dir, digits.mean, digits.std)
    assert not os.path.exists(os.path.join(export_dir, "stale.txt"))
    assert sorted(os.listdir(tmp_path)) == ["sm"]
    assert export.load_predictor(export_dir).class_names is None


def test_predictor_probabilities_and_top_k(trained, exported, digits):
    predictor = export.load_predictor(exported)
    assert predictor.image_shape == (8, 8, 1)
    raw = digits.test_images[:5]
    probs = predictor.predict(raw)
    np.testing.assert_allclose(probs, keras_probabilities(trained, digits, raw), atol=1e-5)
    np.testing.assert_allclose(predictor.predict(raw[0]), probs[:1], atol=1e-6)  # one HWC image
    top = predictor.top_k(raw, k=3)
    assert len(top) == 5 and all(len(t) == 3 for t in top)
    assert top[0][0] == (CLASS_NAMES[int(np.argmax(probs[0]))], pytest.approx(float(probs[0].max())))
    assert top[0][0][1] >= top[0][1][1] >= top[0][2][1]


def test_wrong_image_shape_is_a_clear_error(exported):
    predictor = export.load_predictor(exported)
    with pytest.raises(ValueError, match=r"expected images of shape \(8, 8, 1\).*received shape \(2, 32, 32, 3\)"):
        predictor.predict(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"expected images of shape \(8, 8, 1\)"):
        predictor.predict(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="expected raw uint8 pixels"):
        predictor.predict(np.zeros((1, 8, 8, 1), np.float32) + 0.5)
    # Without the Predictor, the graph's own assert refuses another shape (restored signatures do not).
    loaded = tf.saved_model.load(exported)
    for shape in [(1, 9, 9, 1), (8, 8, 1), (1, 8, 8, 3)]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected images of shape \(8, 8, 1\)"):
            loaded.signatures["serving_default"](images=tf.zeros(shape, tf.uint8))


def test_missing_export_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a SavedModel directory"):
        export.load_predictor(str(tmp_path))


def test_darts_export_and_darts_predict(trained, digits, tmp_path):
    run = tmp_path / "run"
    save_model_atomic(trained, str(run / run_files.MODEL))
    (run / run_files.DATA_INFO).write_text(json.dumps(
        {"image_shape": [8, 8, 1], "mean": list(digits.mean), "std": list(digits.std), "class_names": CLASS_NAMES}))
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.export", f"--model={run}"], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export_dir = run / run_files.SAVED_MODEL
    assert (export_dir / "saved_model.pb").is_file()

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"img{i}.png"))
        tf.io.write_file(paths[-1], tf.io.encode_png(digits.test_images[i]))
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.predict", f"--export_dir={export_dir}", "--top_k=2",
                           "--json", *paths], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    probs = keras_probabilities(trained, digits, digits.test_images[:3])
    assert [line["path"] for line in lines] == paths
    for line, p in zip(lines, probs):
        assert [c["class"] for c in line["top_k"]] == [CLASS_NAMES[j] for j in np.argsort(-p, kind="stable")[:2]]
        assert line["top_k"][0]["probability"] == pytest.approx(float(p.max()), abs=1e-5)
