"""SavedModel (and TFLite) export of a trained network, and a `Predictor` that serves it with `tf.saved_model.load`.

An export (this module is its one writer and one reader; the layout is `darts_tf.export_common`'s)::

    export_dir/<version>/       with version=N (TF Serving's / KServe's base path is export_dir), else export_dir/
        saved_model.pb, variables/   the SavedModel, written with keras.export.ExportArchive, two signatures:
            'serving_default'   images: uint8 [-1, H, W, C] (raw pixels 0..255)
                                -> probabilities: float32 [-1, num_classes]
                                   classes: string [-1] (the class name of the most probable class)
            'serving_bytes'     image_bytes: string [-1] (encoded JPEG / PNG / BMP / GIF files)
                                -> probabilities, classes as above
        genotype.json           the network's genotype
        metadata.json           image shape, normalisation, class names, signatures, run metadata
        model.tflite            with tflite=True: images uint8 [-1, H, W, C] -> probabilities (float32 weights, or
                                dynamic-range int8 ones with tflite_quantize=True)

Everything a client would otherwise have to repeat is in the graph: normalisation ((x / 255 - mean) / std), the
softmax, the class names (a constant; the SavedModel also holds them as the variable collection `class_names`),
and for 'serving_bytes' decoding, the conversion to the model's channels (grayscale: ITU-R 601 luma) and the
resize to H x W (bilinear with antialiasing, skipped when the image has that size already). TF Serving's REST API
maps ``{"instances": [{"b64": "..."}]}`` onto the one input of 'serving_bytes' (named ``image_bytes``: an input
whose name ends in ``_bytes`` receives base64-decoded bytes in Google's serving conventions).

Image shape checks: the signature has rank 4 with H, W, C fixed, and the graph also asserts (tf.debugging.Assert)
that the batch it receives is [N, H, W, C] before anything else runs (a model server does not always check a fed
tensor against the signature's shape): a wrong shape fails with InvalidArgumentError "expected images of shape
(H, W, C) ... received shape [...]". `Predictor` checks in Python first and raises a ValueError naming the expected
shape. Drop-path and the auxiliary head are training-only, so the exported graph is deterministic.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from darts_tf import export_common
from darts_tf.io_utils import atomic_write_bytes
from darts_tf import genotypes as gt

SIGNATURE_KEY = "serving_default"
BYTES_SIGNATURE_KEY = "serving_bytes"
INPUT_KEY = "images"
BYTES_INPUT_KEY = "image_bytes"
OUTPUT_KEY = "probabilities"
CLASSES_KEY = "classes"
CLASS_NAMES_COLLECTION = "class_names"
GENOTYPE_FILE = export_common.GENOTYPE_FILE
METADATA_FILE = export_common.METADATA_FILE
TFLITE_FILE = export_common.TFLITE_FILE
CHANNEL_NAMES = {1: "grayscale", 2: "grayscale+alpha", 3: "RGB", 4: "RGBA"}
_WRITTEN_BY = "darts-export or darts-train --export"


def decode_images(image_bytes, image_shape: Sequence[int]):
    """Encoded images (string [N]) -> uint8 [N, H, W, C]: decoded (JPEG, PNG, BMP, GIF: first frame) as RGB,
    converted to C channels, resized to H x W (bilinear, antialiased, as `darts_tf.data.imagenet.load_image_files`)
    when their size differs, rounded. Runs in the exported graph and, for exports without 'serving_bytes', eagerly."""
    h, w, c = (int(d) for d in image_shape)

    def one(data):
        x = tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False), tf.float32)
        x.set_shape([None, None, 3])
        if c == 1:
            x = tf.image.rgb_to_grayscale(x)
        same_size = tf.reduce_all(tf.equal(tf.shape(x)[:2], [h, w]))
        x = tf.cond(same_size, lambda: tf.identity(x),
                    lambda: tf.image.resize(x, [h, w], method="bilinear", antialias=True))
        return tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8), [h, w, c])

    return tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([h, w, c], tf.uint8))


class ServingFunctions:
    """The functions of the exported graph over one Keras model; `keras.export.ExportArchive` traces them."""

    def __init__(self, model: keras.Model, image_shape: Sequence[int], mean: Sequence[float], std: Sequence[float],
                 class_names: Optional[Sequence[str]] = None):
        self.model = model
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3 or self.image_shape[-1] not in (1, 3):
            raise ValueError(f"image_shape must be (H, W, C) with C 1 (grayscale) or 3 (RGB). Received: "
                             f"image_shape={self.image_shape}")
        channels = self.image_shape[-1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need one value per channel ({channels}). Received: mean={tuple(mean)}, "
                             f"std={tuple(std)}")
        num_classes = int(model.num_classes) if hasattr(model, "num_classes") else None
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but the model has {num_classes} classes.")
        self.num_classes = num_classes
        self.class_names = [str(c) for c in class_names] if class_names is not None else None
        self._mean = np.asarray(mean, np.float32).reshape(1, 1, 1, channels)
        self._std = np.asarray(std, np.float32).reshape(1, 1, 1, channels)

    def input_spec(self) -> tf.TensorSpec:
        return tf.TensorSpec((None,) + self.image_shape, tf.uint8, name=INPUT_KEY)

    def labels(self, num_classes: int) -> List[str]:
        return self.class_names or [str(i) for i in range(num_classes)]

    def probabilities(self, images):
        """uint8 [N, H, W, C] -> float32 [N, num_classes] (the TFLite graph: no checks, no strings)."""
        x = (tf.cast(images, tf.float32) / 255.0 - self._mean) / self._std
        return tf.nn.softmax(tf.cast(self.model(x, training=False), tf.float32), axis=-1)

    def serve(self, images):
        shape = tf.shape(images)
        expected = tf.constant(self.image_shape, tf.int32)
        padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[1:4]  # any rank: no shape error before the assert
        ok = tf.logical_and(tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(padded, expected)))
        check = tf.debugging.Assert(ok, [f"expected images of shape {self.image_shape} (uint8 [N, "
                                         f"{', '.join(map(str, self.image_shape))}]); received shape", shape], summarize=8)
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        probs = self.probabilities(images)
        names = tf.constant(self.labels(int(probs.shape[-1])))
        return {OUTPUT_KEY: probs, CLASSES_KEY: tf.gather(names, tf.argmax(probs, axis=-1))}

    def serve_bytes(self, image_bytes):
        return self.serve(decode_images(image_bytes, self.image_shape))


def _model_image_shape(model: keras.Model) -> Optional[Tuple[int, ...]]:
    shape = (model.get_build_config() or {}).get("input_shape")
    return tuple(int(d) for d in shape[1:]) if shape else None


def serving_archive(functions: ServingFunctions):
    """The ExportArchive of the two serving signatures (and the class names as a variable collection)."""
    archive = keras.export.ExportArchive()
    archive.track(functions.model)
    serve = archive.add_endpoint(SIGNATURE_KEY, functions.serve, [functions.input_spec()])
    archive.add_endpoint(BYTES_SIGNATURE_KEY, functions.serve_bytes,
                         [tf.TensorSpec([None], tf.string, name=BYTES_INPUT_KEY)])
    num_classes = int(serve.get_concrete_function().structured_outputs[OUTPUT_KEY].shape[-1])
    archive.add_variable_collection(CLASS_NAMES_COLLECTION, [
        tf.Variable(functions.labels(num_classes), trainable=False, name=CLASS_NAMES_COLLECTION)])
    return archive


def convert_tflite(functions: ServingFunctions, quantize: bool = False) -> bytes:
    """A TFLite flatbuffer of images uint8 [-1, H, W, C] -> probabilities float32 (signature 'serving_default'),
    converted from a SavedModel of that one function; `quantize`: dynamic-range int8 weights."""
    archive = keras.export.ExportArchive()
    archive.track(functions.model)
    archive.add_endpoint(SIGNATURE_KEY, lambda images: {OUTPUT_KEY: functions.probabilities(images)},
                         [functions.input_spec()])
    with tempfile.TemporaryDirectory(prefix="darts-tflite-") as tmp:
        export_common.write_archive(archive, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE_KEY])
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def export_saved_model(model: keras.Model, export_dir: str, mean: Sequence[float], std: Sequence[float],
                       class_names: Optional[Sequence[str]] = None, metadata: Optional[Dict[str, Any]] = None,
                       image_shape: Optional[Sequence[int]] = None, *, version: Optional[int] = None,
                       tflite: bool = False, tflite_quantize: bool = False) -> str:
    """Writes the SavedModel, genotype.json, metadata.json (and with `tflite` or `tflite_quantize` model.tflite)
    to `export_dir/<version>/` (`version=None`: to `export_dir` itself), atomically (a temporary directory beside
    it, then a rename; the same version exported before is replaced, other versions are kept). `image_shape`
    defaults to the model's build shape. Returns the directory holding saved_model.pb."""
    image_shape = tuple(int(d) for d in image_shape) if image_shape is not None else _model_image_shape(model)
    if image_shape is None or len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C); the model is not built and none was given. "
                         f"Received: {image_shape}")
    functions = ServingFunctions(model, image_shape, mean, std, class_names)
    archive = serving_archive(functions)
    flatbuffer = convert_tflite(functions, tflite_quantize) if (tflite or tflite_quantize) else None
    h, w, c = image_shape
    outputs = {OUTPUT_KEY: f"float32 [-1, {functions.num_classes or -1}]", CLASSES_KEY: "string [-1]"}
    info = {"image_shape": list(image_shape), "input_dtype": "uint8", "signature": SIGNATURE_KEY,
            "input_key": INPUT_KEY, "output_key": OUTPUT_KEY, "num_classes": functions.num_classes,
            "class_names": functions.class_names, "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "version": version, "signatures": {
                SIGNATURE_KEY: {"inputs": {INPUT_KEY: f"uint8 [-1, {h}, {w}, {c}]"}, "outputs": outputs},
                BYTES_SIGNATURE_KEY: {"inputs": {BYTES_INPUT_KEY: "string [-1] (encoded JPEG/PNG/BMP/GIF)"},
                                      "outputs": outputs}}}
    if flatbuffer is not None:
        info["tflite"] = {"file": TFLITE_FILE, "size_bytes": len(flatbuffer),
                          "weights": "dynamic-range int8" if tflite_quantize else "float32"}
    with export_common.publish_export(export_dir, version) as tmp:
        export_common.write_archive(archive, tmp)
        if flatbuffer is not None:
            atomic_write_bytes(os.path.join(tmp, TFLITE_FILE), flatbuffer)
        if hasattr(model, "genotype"):
            gt.save_genotype(model.genotype, os.path.join(tmp, GENOTYPE_FILE))
        export_common.write_metadata(tmp, info, metadata)
    return export_common.target_dir(export_dir, version)


def ranked(probs: np.ndarray, labels: Sequence[str], k: int = 5) -> List[List[Tuple[int, str, float]]]:
    """For each row of `probs`, the k most probable (class index, class name, probability), most probable first."""
    k = max(1, min(int(k), probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(int(j), labels[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


class Predictor:
    """Serves an export with `tf.saved_model.load` (no Keras, no darts_tf model classes needed). `export_dir` is a
    SavedModel directory or a base path of numbered versions (the highest is served)."""

    def __init__(self, export_dir: str):
        self.export_dir = export_common.resolve_saved_model_dir(export_dir, _WRITTEN_BY)
        self._loaded = tf.saved_model.load(self.export_dir)
        self._fn = self._loaded.signatures[SIGNATURE_KEY]
        self._bytes_fn = self._loaded.signatures.get(BYTES_SIGNATURE_KEY)  # exports before the bytes signature
        self.metadata: Dict[str, Any] = export_common.read_metadata(self.export_dir)
        self.image_shape: Tuple[int, ...] = self._image_shape()
        graph_names = getattr(self._loaded, CLASS_NAMES_COLLECTION, None)
        if "class_names" in self.metadata or not graph_names:
            self.class_names: Optional[List[str]] = self.metadata.get("class_names")
        else:
            self.class_names = [n.decode() for n in graph_names[0].numpy()]

    def _image_shape(self) -> Tuple[int, ...]:
        spec = export_common.signature_spec(self._fn, INPUT_KEY)
        if spec is not None and spec.shape.rank == 4 and spec.shape[1:].is_fully_defined():
            return tuple(int(d) for d in spec.shape[1:])
        if hasattr(self._loaded, "image_shape"):  # exports from before the fixed-rank signature
            return tuple(int(d) for d in self._loaded.image_shape.numpy())
        return tuple(int(d) for d in self.metadata["image_shape"])

    def labels(self, num_classes: int) -> List[str]:
        """The class names, or the class indices as strings when the export has none."""
        return self.class_names or [str(i) for i in range(num_classes)]

    def _check(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == len(self.image_shape):
            images = images[None]
        if images.ndim != len(self.image_shape) + 1 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"expected images of shape {self.image_shape} (H, W, C), or a batch [N, "
                             f"{', '.join(map(str, self.image_shape))}]; received shape {tuple(images.shape)}.")
        if images.dtype != np.uint8:
            if not np.issubdtype(images.dtype, np.integer) or images.size and (images.min() < 0 or images.max() > 255):
                raise ValueError(f"expected raw uint8 pixels 0..255 (normalisation is inside the model); received dtype "
                                 f"{images.dtype}.")
            images = images.astype(np.uint8)
        return images

    def predict(self, images) -> np.ndarray:
        """Class probabilities [N, num_classes] for uint8 images [N, H, W, C] (or one image [H, W, C])."""
        images = self._check(images)
        return self._fn(**{INPUT_KEY: tf.constant(images)})[OUTPUT_KEY].numpy()

    def predict_encoded(self, encoded: Sequence[bytes]) -> np.ndarray:
        """Class probabilities [N, num_classes] for encoded image files (their bytes), through 'serving_bytes'."""
        data = tf.constant(list(encoded), tf.string)
        if self._bytes_fn is None:
            return self.predict(decode_images(data, self.image_shape).numpy())
        return self._bytes_fn(**{BYTES_INPUT_KEY: data})[OUTPUT_KEY].numpy()

    def top_k(self, images, k: int = 5) -> List[List[Tuple[str, float]]]:
        """For each image, the k most probable (class name, probability) pairs, most probable first."""
        probs = self.predict(images)
        return [[(name, p) for _, name, p in row] for row in ranked(probs, self.labels(probs.shape[1]), k)]


def load_predictor(export_dir: str) -> Predictor:
    """A `Predictor` of a SavedModel directory or of a base path of numbered versions (the highest)."""
    return Predictor(export_dir)
