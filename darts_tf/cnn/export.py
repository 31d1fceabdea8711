"""SavedModel export of a trained network, and a `Predictor` that serves it with `tf.saved_model.load`.

An export directory (this module is its one writer and one reader)::

    saved_model.pb, variables/, ...   the SavedModel; signature 'serving_default':
                                      images: uint8 [None, H, W, C] (raw pixels 0..255)
                                      -> probabilities: float32 [None, num_classes]
    genotype.json                     the network's genotype
    metadata.json                     image shape, normalisation, class names, run metadata

Normalisation ((x / 255 - mean) / std) happens inside the graph, so clients send raw pixels.

Image shape checks: a restored SavedModel signature does not enforce the shape in its TensorSpec (a
[None, 8, 8, 1] signature silently runs on 9x9 images), so the signature takes uint8 of any shape and the
graph asserts (tf.debugging.Assert) that it is [N, H, W, C] before anything else runs; a wrong shape fails
with InvalidArgumentError "expected images of shape (H, W, C) ... received shape [...]". The expected shape
is saved in the SavedModel (variable `image_shape`) and in metadata.json. `Predictor` checks in Python first
and raises a ValueError naming the expected shape. Drop-path and the auxiliary head are training-only, so
the exported graph is deterministic.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from darts_tf import genotypes as gt
from darts_tf.io_utils import publish_directory

SIGNATURE_KEY = "serving_default"
INPUT_KEY = "images"
OUTPUT_KEY = "probabilities"
GENOTYPE_FILE = "genotype.json"
METADATA_FILE = "metadata.json"


class ServingModule(tf.Module):
    """Raw uint8 images -> class probabilities, with the normalisation in the graph."""

    def __init__(self, model: keras.Model, image_shape: Sequence[int], mean: Sequence[float], std: Sequence[float]):
        super().__init__(name="darts_serving")
        self.model = model
        channels = int(image_shape[-1])
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need one value per channel ({channels}). Received: mean={tuple(mean)}, std={tuple(std)}")
        self._shape = tuple(int(d) for d in image_shape)
        self._mean = tf.constant(np.asarray(mean, np.float32).reshape(1, 1, 1, channels))
        self._std = tf.constant(np.asarray(std, np.float32).reshape(1, 1, 1, channels))
        self.image_shape = tf.Variable(self._shape, dtype=tf.int32, trainable=False, name="image_shape")
        spec = tf.TensorSpec(None, tf.uint8, name=INPUT_KEY)  # any shape: checked by the assert below
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _serve(self, images):
        shape = tf.shape(images)
        expected = tf.constant(self._shape, tf.int32)
        ok = tf.cond(tf.equal(tf.size(shape), 4), lambda: tf.reduce_all(tf.equal(shape[1:], expected)),
                     lambda: tf.constant(False))
        check = tf.debugging.Assert(ok, [f"expected images of shape {self._shape} (uint8 [N, "
                                         f"{', '.join(map(str, self._shape))}]); received shape", shape], summarize=8)
        with tf.control_dependencies([check]):
            images = tf.ensure_shape(tf.identity(images), (None,) + self._shape)
        x = (tf.cast(images, tf.float32) / 255.0 - self._mean) / self._std
        logits = self.model(x, training=False)
        return {OUTPUT_KEY: tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}


def _model_image_shape(model: keras.Model) -> Optional[Tuple[int, ...]]:
    shape = (model.get_build_config() or {}).get("input_shape")
    return tuple(int(d) for d in shape[1:]) if shape else None


def export_saved_model(model: keras.Model, export_dir: str, mean: Sequence[float], std: Sequence[float],
                       class_names: Optional[Sequence[str]] = None, metadata: Optional[Dict[str, Any]] = None,
                       image_shape: Optional[Sequence[int]] = None) -> str:
    """Writes the SavedModel, genotype.json and metadata.json to `export_dir` atomically (a temporary directory
    beside it, then a rename; an existing export is replaced). `image_shape` defaults to the model's build shape."""
    image_shape = tuple(int(d) for d in image_shape) if image_shape is not None else _model_image_shape(model)
    if image_shape is None or len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C); the model is not built and none was given. Received: {image_shape}")
    num_classes = int(model.num_classes) if hasattr(model, "num_classes") else None
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names but the model has {num_classes} classes.")
    module = ServingModule(model, image_shape, mean, std)
    with publish_directory(export_dir) as tmp:
        tf.saved_model.save(module, tmp, signatures={SIGNATURE_KEY: module.serve.get_concrete_function()})
        if hasattr(model, "genotype"):
            gt.save_genotype(model.genotype, os.path.join(tmp, GENOTYPE_FILE))
        info = {"image_shape": list(image_shape), "input_dtype": "uint8", "signature": SIGNATURE_KEY,
                "input_key": INPUT_KEY, "output_key": OUTPUT_KEY, "num_classes": num_classes,
                "class_names": [str(c) for c in class_names] if class_names is not None else None,
                "mean": [float(m) for m in mean], "std": [float(s) for s in std], "run": dict(metadata or {})}
        gt.atomic_write_text(os.path.join(tmp, METADATA_FILE), json.dumps(info, indent=1) + "\n")
    return os.path.abspath(export_dir)


class Predictor:
    """Serves an export directory with `tf.saved_model.load` (no Keras, no darts_tf classes needed)."""

    def __init__(self, export_dir: str):
        if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
            raise FileNotFoundError(f"{export_dir!r} is not a SavedModel directory (no saved_model.pb); pass the directory "
                                    f"written by darts-export or darts-train --export.")
        self.export_dir = export_dir
        self._loaded = tf.saved_model.load(export_dir)
        self._fn = self._loaded.signatures[SIGNATURE_KEY]
        self.image_shape: Tuple[int, ...] = tuple(int(d) for d in self._loaded.image_shape.numpy())
        path = os.path.join(export_dir, METADATA_FILE)
        self.metadata: Dict[str, Any] = {}
        if os.path.isfile(path):
            with open(path) as f:
                self.metadata = json.load(f)
        self.class_names: Optional[List[str]] = self.metadata.get("class_names")

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

    def top_k(self, images, k: int = 5) -> List[List[Tuple[str, float]]]:
        """For each image, the k most probable (class name, probability) pairs, most probable first."""
        probs = self.predict(images)
        k = max(1, min(int(k), probs.shape[1]))
        names = self.class_names or [str(i) for i in range(probs.shape[1])]
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(names[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


def load_predictor(export_dir: str) -> Predictor:
    return Predictor(export_dir)
