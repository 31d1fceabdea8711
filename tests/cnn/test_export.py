"""SavedModel / TFLite export (darts_tf.cnn.export, darts-export, darts-predict) of a tiny network on `digits`
(8x8x1): it restores under the TF1 session loader model servers use, its bytes signature takes a REST b64
request, TFLite agrees with Keras, the versioned layout, and darts-predict's messages and class names."""

import base64
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from darts_tf import export_common
from darts_tf import genotypes as gt
from darts_tf import run_files
from darts_tf.cnn import export
from darts_tf.cnn.networks import NetworkCIFAR
from darts_tf.data import augment, images
from darts_tf.io_utils import save_model_atomic

from tests.serving_clients import CNN_SESSION_CLIENT as _SESSION_CLIENT

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
CLASS_NAMES = [f"digit_{i}" for i in range(10)]
N_TEST = 20



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
    """The model base path: version 1, with model.tflite (float32)."""
    base = str(tmp_path_factory.mktemp("export") / "saved_model")
    export.export_saved_model(trained, base, digits.mean, digits.std, class_names=CLASS_NAMES,
                              metadata={"dataset": "digits"}, version=1, tflite=True)
    return base


def keras_probabilities(model, data, raw):
    logits = model(augment.normalize(raw, data.mean, data.std), training=False)
    return tf.nn.softmax(logits).numpy()


@pytest.fixture(scope="module")
def served(exported, digits, tmp_path_factory):
    """The session-loader client's outputs on the first test images (uint8, and as PNGs in a REST request)."""
    tmp = tmp_path_factory.mktemp("served")
    raw = digits.test_images[:N_TEST]
    np.save(tmp / "images.npy", raw)
    request = {"signature_name": export.BYTES_SIGNATURE_KEY,
               "instances": [{"b64": base64.b64encode(tf.io.encode_png(image).numpy()).decode("ascii")}
                             for image in raw]}
    (tmp / "request.json").write_text(json.dumps(request))
    proc = subprocess.run([sys.executable, "-c", _SESSION_CLIENT, exported + "/1", str(tmp / "images.npy"),
                           str(tmp / "request.json"), str(tmp / "out.npz")], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp / "out.npz") as out:
        return dict(out)


def test_session_loader_in_a_fresh_process_matches_keras(trained, digits, served):
    expected = keras_probabilities(trained, digits, digits.test_images[:N_TEST])
    assert list(served["input_shape"]) == [-1, 8, 8, 1]  # fixed rank, H W C known
    assert served["probabilities"].shape == (N_TEST, 10)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(served["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert list(served["classes"]) == [CLASS_NAMES[j] for j in expected.argmax(axis=1)]


def test_rest_b64_request_to_the_bytes_signature_gives_the_uint8_class(served):
    assert list(served["bytes_classes"]) == list(served["classes"])
    np.testing.assert_allclose(served["bytes_probabilities"], served["probabilities"], atol=1e-6, rtol=0)


def test_saved_model_cli_run(trained, exported, digits, tmp_path):
    """The issue's reproduction: `saved_model_cli run` (session-based) on the version directory."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.isfile(cli):
        pytest.skip("saved_model_cli is not installed beside this Python")
    raw = digits.test_images[:5]
    np.save(tmp_path / "x.npy", raw)
    proc = subprocess.run([cli, "run", "--dir", exported + "/1", "--tag_set", "serve", "--signature_def",
                           "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}", "--outdir",
                           str(tmp_path / "out")], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "probabilities.npy"),
                               keras_probabilities(trained, digits, raw), atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_tflite_interpreter_matches_keras(trained, exported, digits):
    path = os.path.join(exported, "1", export.TFLITE_FILE)
    raw = digits.test_images[:N_TEST]
    interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner(export.SIGNATURE_KEY)
    probs = runner(**{export.INPUT_KEY: raw})[export.OUTPUT_KEY]
    np.testing.assert_allclose(probs, keras_probabilities(trained, digits, raw), atol=1e-5, rtol=0)
    with open(os.path.join(exported, "1", export.METADATA_FILE)) as f:
        assert json.load(f)["tflite"] == {"file": "model.tflite", "size_bytes": os.path.getsize(path),
                                          "weights": "float32"}


def test_export_layout_and_metadata(exported, digits):
    assert os.listdir(exported) == ["1"]  # a model base path; no temporaries left
    version = os.path.join(exported, "1")
    assert {"saved_model.pb", "variables", "genotype.json", "metadata.json", "model.tflite"} <= set(os.listdir(version))
    assert gt.load_genotype_file(os.path.join(version, export.GENOTYPE_FILE), "cnn") == gt.CNN_GENOTYPES["DARTS_V1"]
    with open(os.path.join(version, export.METADATA_FILE)) as f:
        meta = json.load(f)
    assert meta["image_shape"] == [8, 8, 1] and meta["input_dtype"] == "uint8" and meta["version"] == 1
    assert meta["class_names"] == CLASS_NAMES and meta["num_classes"] == 10
    assert meta["mean"] == pytest.approx(list(digits.mean)) and meta["run"] == {"dataset": "digits"}
    assert meta["signatures"]["serving_bytes"]["inputs"] == {"image_bytes": "string [-1] (encoded JPEG/PNG/BMP/GIF)"}
    assert not [n for n in os.listdir(os.path.dirname(exported)) if n.startswith(".")]
    # The class names are in the graph too (for clients without metadata.json).
    loaded = tf.saved_model.load(version)
    assert [n.decode() for n in loaded.class_names[0].numpy()] == CLASS_NAMES


def _fake_version(base, version, class_names):
    """A copy of a real version directory under another number, with other class names in its metadata."""
    import shutil

    shutil.copytree(os.path.join(base, "1"), os.path.join(base, str(version)))
    path = os.path.join(base, str(version), export.METADATA_FILE)
    with open(path) as f:
        meta = json.load(f)
    with open(path, "w") as f:
        json.dump({**meta, "class_names": class_names}, f)


def test_versions_side_by_side_and_load_predictor_picks_the_highest(exported, tmp_path):
    import shutil

    base = str(tmp_path / "base")
    shutil.copytree(exported, base)
    _fake_version(base, 10, [f"ten_{i}" for i in range(10)])
    _fake_version(base, 9, None)
    os.makedirs(os.path.join(base, "99"))  # not a SavedModel: never chosen
    assert export_common.numeric_versions(base) == [1, 9, 10]  # numerically, not as strings
    assert export.load_predictor(base).export_dir == os.path.join(base, "10")
    assert export.load_predictor(base).class_names[0] == "ten_0"
    assert export.load_predictor(os.path.join(base, "1")).class_names == CLASS_NAMES  # a version directory
    assert export.load_predictor(os.path.join(base, "9")).class_names is None
    # Publishing a version replaces only that version; the others stay, no temporaries are left.
    with export_common.publish_export(base, 9) as tmp:
        open(os.path.join(tmp, "saved_model.pb"), "wb").close()
    assert sorted(os.listdir(base)) == ["1", "10", "9", "99"] and os.listdir(os.path.join(base, "9")) == ["saved_model.pb"]
    with pytest.raises(RuntimeError, match="has no saved_model.pb; nothing was published"):
        with export_common.publish_export(base, 2):
            pass
    assert not os.path.exists(os.path.join(base, "2")) and not [n for n in os.listdir(base) if n.startswith(".")]
    with pytest.raises(ValueError, match=r"version must be a non-negative integer.*Received: version=-1"):
        export_common.target_dir(base, -1)
    assert export_common.target_dir(base, 4) == os.path.join(base, "4") and export_common.target_dir(base) == base


def test_reexport_replaces_the_directory_atomically(trained, digits, tmp_path):
    export_dir = str(tmp_path / "sm")
    os.makedirs(export_dir)
    with open(os.path.join(export_dir, "stale.txt"), "w") as f:
        f.write("old export")
    path = export.export_saved_model(trained, export_dir, digits.mean, digits.std)  # version=None: flat, as before
    assert path == export_dir and not os.path.exists(os.path.join(export_dir, "stale.txt"))
    assert os.path.isfile(os.path.join(export_dir, "saved_model.pb")) and sorted(os.listdir(tmp_path)) == ["sm"]
    assert export.load_predictor(export_dir).class_names is None
    # A versioned export over a flat one turns the directory into a base path, as a whole.
    with export_common.publish_export(export_dir, 3) as tmp:
        open(os.path.join(tmp, "saved_model.pb"), "wb").close()
    assert os.listdir(export_dir) == ["3"] and sorted(os.listdir(tmp_path)) == ["sm"]


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
    encoded = [tf.io.encode_png(image).numpy() for image in raw]
    np.testing.assert_allclose(predictor.predict_encoded(encoded), probs, atol=1e-6)


def test_bytes_signature_resizes_and_converts_in_the_graph(exported, digits):
    """A 16x12 RGB file goes through decode -> grayscale -> resize in the graph, as `decode_images` does eagerly."""
    rgb = np.repeat(tf.image.resize(digits.test_images[:1].astype(np.float32), [16, 12]).numpy(), 3, axis=-1)
    data = tf.io.encode_png(np.clip(np.round(rgb[0]), 0, 255).astype(np.uint8)).numpy()
    predictor = export.load_predictor(exported)
    eager = export.decode_images(tf.constant([data]), (8, 8, 1)).numpy()
    assert eager.shape == (1, 8, 8, 1) and eager.dtype == np.uint8
    np.testing.assert_allclose(predictor.predict_encoded([data]), predictor.predict(eager), atol=1e-6)


def test_wrong_image_shape_is_a_clear_error(exported):
    predictor = export.load_predictor(exported)
    with pytest.raises(ValueError, match=r"expected images of shape \(8, 8, 1\).*received shape \(2, 32, 32, 3\)"):
        predictor.predict(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"expected images of shape \(8, 8, 1\)"):
        predictor.predict(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="expected raw uint8 pixels"):
        predictor.predict(np.zeros((1, 8, 8, 1), np.float32) + 0.5)
    # Without the Predictor, the graph's own assert refuses another shape (restored signatures do not check).
    loaded = tf.saved_model.load(os.path.join(exported, "1"))
    for shape in [(1, 9, 9, 1), (8, 8, 1), (1, 8, 8, 3)]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected images of shape \(8, 8, 1\)"):
            loaded.signatures["serving_default"](images=tf.zeros(shape, tf.uint8))


def test_missing_export_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a SavedModel directory .* nor a base path of numbered versions"):
        export.load_predictor(str(tmp_path))


@pytest.fixture(scope="module")
def exported_by_the_script(trained, digits, tmp_path_factory):
    """darts-export --tflite_quantize on a run directory: (the run directory, the script's stdout)."""
    run = tmp_path_factory.mktemp("script") / "run"
    save_model_atomic(trained, str(run / run_files.MODEL))
    (run / run_files.DATA_INFO).write_text(json.dumps(
        {"image_shape": [8, 8, 1], "mean": list(digits.mean), "std": list(digits.std), "class_names": CLASS_NAMES}))
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.export", f"--model={run}", "--tflite_quantize"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc.stdout


def _png_files(directory, digits, n=3):
    paths = []
    for i in range(n):
        paths.append(str(directory / f"img{i}.png"))
        tf.io.write_file(paths[-1], tf.io.encode_png(digits.test_images[i]))
    return paths


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_darts_export_writes_version_1_and_a_quantized_tflite(exported_by_the_script):
    run, stdout = exported_by_the_script
    version = run / run_files.SAVED_MODEL / "1"
    assert (version / "saved_model.pb").is_file() and (version / "model.tflite").is_file()
    size = os.path.getsize(version / "model.tflite")
    assert f"({size} bytes, dynamic-range int8 weights)" in stdout, stdout
    interpreter = tf.lite.Interpreter(model_path=str(version / "model.tflite"))
    probs = interpreter.get_signature_runner()(images=np.zeros((2, 8, 8, 1), np.uint8))["probabilities"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_darts_predict_json_names_classes_and_says_when_it_resizes(trained, digits, exported_by_the_script, tmp_path):
    run, _ = exported_by_the_script
    paths = _png_files(tmp_path, digits)
    big = str(tmp_path / "big.png")  # 12 wide, 16 high, RGB
    tf.io.write_file(big, tf.io.encode_png(np.full((16, 12, 3), 200, np.uint8)))
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.predict", f"--export_dir={run / run_files.SAVED_MODEL}",
                           "--top_k=2", "--json", *paths, big], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if "to the model's" in line]
    assert notes == [f"{big}: resizing 12x16 RGB to the model's 8x8 grayscale input (the network takes 8x8x1 images)"]
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [line["path"] for line in lines] == paths + [big]
    probs = keras_probabilities(trained, digits, digits.test_images[:3])
    for line, p in zip(lines, probs):
        order = np.argsort(-p, kind="stable")[:2]
        assert [(c["class"], c["index"]) for c in line["top_k"]] == [(CLASS_NAMES[j], int(j)) for j in order]
        assert line["top_k"][0]["probability"] == pytest.approx(float(p.max()), abs=1e-5)


def test_predict_text_output_names_index_and_probability():
    from darts_tf.cli.predict import format_result

    top = [(3, "digit_3", 0.71234), (5, "digit_5", 0.2)]
    assert format_result("a.png", top) == "a.png: digit_3 (class 3) 0.7123, digit_5 (class 5) 0.2000"
    assert json.loads(format_result("a.png", top, as_json=True))["top_k"][1] == {
        "class": "digit_5", "index": 5, "probability": 0.2}


def test_predict_conversion_notes():
    from darts_tf.cli.predict import conversion_note

    assert conversion_note("a.png", (8, 8, 1), (8, 8, 1), resize=False) is None
    assert conversion_note("a.jpg", (368, 833, 3), (8, 8, 1), resize=True) == (
        "a.jpg: resizing 833x368 RGB to the model's 8x8 grayscale input (the network takes 8x8x1 images)")
    assert conversion_note("a.png", (32, 32, 4), (32, 32, 3), resize=False) == (
        "a.png: converting 32x32 RGBA to the model's 32x32 RGB input (the network takes 32x32x3 images)")
    with pytest.raises(ValueError, match=r"'a.png' is 12x16 but the model takes 8x8 images .*drop --noresize"):
        conversion_note("a.png", (16, 12, 1), (8, 8, 1), resize=False)
