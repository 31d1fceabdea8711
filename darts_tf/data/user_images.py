"""Image-classification data you bring: a folder tree of image files, or an .npz of arrays.

Two readers, each returning `LabeledImages` (uint8 NHWC images, int64 labels, the class names)
for `darts_tf.data.images.load_image_data` to wrap into an `ImageData`:

* `read_image_folder(DIR)`: ``DIR/train/<class>/*`` plus ``DIR/test/<class>/*`` (or
  ``DIR/val/<class>/*`` when there is no test/). Any file `tf.io.decode_image` reads: PNG, JPEG,
  BMP, GIF (first frame). Class names are the folder names, sorted; a label is the index of its
  folder in that sorted list. Hidden files (``.DS_Store``) and files directly in train/ are
  skipped.
* `read_npz(PATH)`: an .npz holding ``x_train, y_train, x_test, y_test`` (uint8 images, NHWC or
  NHW; NHW gets a channel axis) and optionally ``class_names`` (strings).

Colour: all-grayscale data gives C=1, all-RGB C=3; a mix of grayscale and RGB images is converted
to RGB (C=3); an alpha channel (RGBA, gray+alpha) is dropped. Size: `image_size` > 0 resizes
every image to image_size x image_size (`tf.image.resize`, bilinear with antialiasing, aspect
ratio not kept, then rounded and clipped to uint8); 0 keeps the data's own size, which must then
be the same for every image.

Listing and reading go through `tf.io.gfile`, so a gs:// (or other TF filesystem) path works as a
local one does. Nothing here imports tensorflow_datasets. Every malformed input raises one
ValueError (FileNotFoundError for a missing path) naming the file or directory and the fix.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

TEST_SPLIT_DIRS = ("test", "val")  # the first one present is the test split
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_CLASS_NAMES = "class_names"
_FOLDER_LAYOUT = "expected layout: DIR/train/<class>/<images> and DIR/test/<class>/<images> (or DIR/val/<class>/)"
_RESIZE_CHUNK = 1024  # images resized per tf.image.resize call (bounds the float32 copy)
_DECODE_THREADS = 8


@dataclasses.dataclass(frozen=True)
class LabeledImages:
    """Train and test splits as uint8 NHWC images and int64 labels in [0, len(class_names))."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: Tuple[str, ...]


def looks_like_path(source: str) -> bool:
    """True for a source written as a path (has a directory separator or ends in .npz), not a dataset name."""
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return any(s in source for s in seps) or source.lower().endswith(".npz") or source.startswith("~")


def check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 0:
        raise ValueError("image_size must be a non-negative integer (0 keeps the data's own size, N > 0 resizes "
                         f"every image to N x N). Received: image_size={image_size!r}")
    return int(image_size)


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 NHWC `images` resized to image_size x image_size (a no-op when they already are, or size 0)."""
    images = np.asarray(images)
    if image_size == 0 or images.shape[1:3] == (image_size, image_size):
        return images
    chunks = [_resize(images[i:i + _RESIZE_CHUNK], image_size) for i in range(0, len(images), _RESIZE_CHUNK)]
    return np.concatenate(chunks) if chunks else np.zeros((0, image_size, image_size, images.shape[-1]), np.uint8)


def _resize(image, image_size: int) -> np.ndarray:
    out = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8).numpy()


def _to_channels(images: List[np.ndarray], channels: int) -> List[np.ndarray]:
    return [np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 and channels == 3 else x for x in images]


# ------------------------------------------------------------------------------------------ folder


def _subdirs(directory: str) -> List[str]:
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(directory)]
    return sorted(n for n in names if not n.startswith(".") and tf.io.gfile.isdir(os.path.join(directory, n)))


def _class_files(split_dir: str, classes: Sequence[str]) -> Dict[str, List[str]]:
    files = {}
    for c in classes:
        cdir = os.path.join(split_dir, c)
        names = sorted(n for n in tf.io.gfile.listdir(cdir)
                       if not n.startswith(".") and not n.endswith("/")
                       and not tf.io.gfile.isdir(os.path.join(cdir, n)))
        if not names:
            raise ValueError(f"Class folder {cdir!r} has no image files; put the images of class {c!r} there or "
                             f"remove the folder from every split.")
        files[c] = [os.path.join(cdir, n) for n in names]
    return files


def _decode_file(path: str) -> np.ndarray:
    """One image file as uint8 HWC with 1 or 3 channels (alpha dropped)."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            contents = f.read()
    except (tf.errors.OpError, OSError) as e:
        raise ValueError(f"Cannot read image file {path!r} ({e}); check its permissions or remove it.") from e
    try:
        image = tf.io.decode_image(contents, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        first = (getattr(e, "message", "") or str(e)).splitlines()[0]
        raise ValueError(f"Cannot decode image file {path!r} ({first}); replace or remove it (readable formats: "
                         f"PNG, JPEG, BMP, GIF).") from e
    if image.ndim != 3 or 0 in image.shape:
        raise ValueError(f"Image file {path!r} decodes to shape {image.shape}, not a 2-D picture; replace or "
                         f"remove it.")
    if image.shape[-1] == 2:  # gray + alpha
        image = image[..., :1]
    elif image.shape[-1] == 4:  # RGBA
        image = image[..., :3]
    return image


def read_image_folder(directory: str, image_size: int = 0) -> LabeledImages:
    """Reads ``directory/train/<class>/*`` and ``directory/test/<class>/*`` (or ``val/``); see the module doc.

    Not `keras.utils.image_dataset_from_directory`: it always resizes (to 256x256 by default), so it
    cannot keep the images' own size or tell the user which files differ in size; it reads one split
    and does not check that train and test have the same classes; and it reports an unreadable file
    lazily, while iterating, without its name. Here every file is decoded up front and an error names it.
    """
    image_size = check_image_size(image_size)
    directory = os.fspath(directory)
    if not tf.io.gfile.isdir(directory):
        raise FileNotFoundError(f"Image folder {directory!r} does not exist; {_FOLDER_LAYOUT}.")
    train_dir = os.path.join(directory, "train")
    if not tf.io.gfile.isdir(train_dir):
        raise ValueError(f"Image folder {directory!r} has no train/ sub-directory; {_FOLDER_LAYOUT}.")
    test_name = next((d for d in TEST_SPLIT_DIRS if tf.io.gfile.isdir(os.path.join(directory, d))), None)
    if test_name is None:
        raise ValueError(f"Image folder {directory!r} has no test/ or val/ sub-directory; add one with the same "
                         f"class folders as train/ ({_FOLDER_LAYOUT}).")
    test_dir = os.path.join(directory, test_name)
    classes = _subdirs(train_dir)
    if not classes:
        raise ValueError(f"{train_dir!r} has no class folders; put each class's images in its own folder "
                         f"train/<class>/ ({_FOLDER_LAYOUT}).")
    if len(classes) < 2:
        raise ValueError(f"{train_dir!r} has a single class folder {classes[0]!r}; a classifier needs at least 2 "
                         f"classes, one folder each.")
    test_classes = _subdirs(test_dir)
    if test_classes != classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise ValueError(f"The class folders of {train_dir!r} and {test_dir!r} differ: only in train/: {only_train}, "
                         f"only in {test_name}/: {only_test}. Give both splits the same class folders.")
    splits = {split: _class_files(d, classes) for split, d in (("train", train_dir), ("test", test_dir))}
    paths = [p for split in ("train", "test") for c in classes for p in splits[split][c]]
    with concurrent.futures.ThreadPoolExecutor(_DECODE_THREADS) as pool:
        decoded = list(pool.map(_decode_file, paths))
    if image_size:
        decoded = [x if x.shape[:2] == (image_size, image_size) else _resize(x, image_size) for x in decoded]
    else:
        first = decoded[0].shape[:2]
        other = next((i for i, x in enumerate(decoded) if x.shape[:2] != first), None)
        if other is not None:
            (h0, w0), (h1, w1) = first, decoded[other].shape[:2]
            raise ValueError(f"Images in {directory!r} have different sizes: {paths[0]!r} is {h0}x{w0} but "
                             f"{paths[other]!r} is {h1}x{w1}. Pass image_size=N (--image_size N) to resize every "
                             f"image to N x N.")
    channels = max(x.shape[-1] for x in decoded)
    decoded = _to_channels(decoded, channels)
    n_train = sum(len(splits["train"][c]) for c in classes)
    labels = np.asarray([i for split in ("train", "test") for i, c in enumerate(classes)
                         for _ in splits[split][c]], np.int64)
    images = np.stack(decoded).astype(np.uint8, copy=False)
    return LabeledImages(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], tuple(classes))


# ------------------------------------------------------------------------------------------ npz


def _npz_images(path: str, key: str, x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8:
        raise ValueError(f"{key} in {path!r} must be uint8 (0..255). Received: dtype={x.dtype}. Convert it with "
                         f"np.clip(np.round(x), 0, 255).astype(np.uint8) (multiply 0..1 floats by 255 first).")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or 0 in x.shape[1:]:
        raise ValueError(f"{key} in {path!r} must be NHW (grayscale) or NHWC with C in (1, 3). "
                         f"Received: shape={x.shape}.")
    if len(x) == 0:
        raise ValueError(f"{key} in {path!r} holds no images; every split needs at least one.")
    return x


def _npz_labels(path: str, key: str, y: np.ndarray, n: int, x_key: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{key} in {path!r} must hold integer class indices. Received: dtype={y.dtype}. "
                         f"Map the labels to 0..num_classes-1 and save them as integers.")
    if y.ndim == 2 and y.shape[1] == 1:  # (N, 1), as keras.datasets returns them
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{key} in {path!r} must be a 1-D array of class indices. Received: shape={y.shape}.")
    if len(y) != n:
        raise ValueError(f"{x_key} in {path!r} has {n} images but {key} has {len(y)} labels; give every image "
                         f"one label.")
    if len(y) and y.min() < 0:
        raise ValueError(f"{key} in {path!r} has negative labels (min {int(y.min())}); labels are class indices "
                         f"0..num_classes-1.")
    return y.astype(np.int64)


def _npz_class_names(path: str, data) -> Tuple[str, ...]:
    try:
        names = data[NPZ_CLASS_NAMES]
    except ValueError as e:  # an object array, which allow_pickle=False refuses
        raise ValueError(f"class_names in {path!r} is an object array; save it as a string array "
                         f"(np.array(names, dtype=str)).") from e
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise ValueError(f"class_names in {path!r} must be a 1-D array of strings. Received: dtype={names.dtype}, "
                         f"shape={names.shape}.")
    names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names.tolist())
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"class_names in {path!r} repeats {duplicates}; every class needs its own name.")
    return names


def read_npz(path: str, image_size: int = 0) -> LabeledImages:
    """Reads an .npz of ``x_train, y_train, x_test, y_test`` (+ optional ``class_names``); see the module doc.

    The number of classes is ``len(class_names)`` when given, else the largest label + 1.
    """
    image_size = check_image_size(image_size)
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Image data file {path!r} does not exist; pass an existing .npz file holding "
                                f"{', '.join(NPZ_KEYS)}.")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = np.load(io.BytesIO(f.read()), allow_pickle=False)
    except (ValueError, OSError, EOFError, tf.errors.OpError) as e:
        raise ValueError(f"{path!r} is not a readable .npz file ({type(e).__name__}: {e}); save the arrays with "
                         f"np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).") from e
    if not hasattr(data, "files"):  # a plain .npy
        raise ValueError(f"{path!r} holds a single array, not an .npz archive; save the arrays with "
                         f"np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
    with data:
        missing = [k for k in NPZ_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path!r} is missing the keys {missing}; it has {sorted(data.files)}. An image .npz "
                             f"holds {', '.join(NPZ_KEYS)} (and optionally {NPZ_CLASS_NAMES}).")
        try:
            arrays = {k: data[k] for k in NPZ_KEYS}
        except ValueError as e:
            raise ValueError(f"{path!r} holds an object array among {', '.join(NPZ_KEYS)}; save numeric arrays "
                             f"(uint8 images, integer labels).") from e
        names = _npz_class_names(path, data) if NPZ_CLASS_NAMES in data.files else None
    x_tr = _npz_images(path, "x_train", arrays["x_train"])
    x_te = _npz_images(path, "x_test", arrays["x_test"])
    y_tr = _npz_labels(path, "y_train", arrays["y_train"], len(x_tr), "x_train")
    y_te = _npz_labels(path, "y_test", arrays["y_test"], len(x_te), "x_test")
    top = int(max(y_tr.max(), y_te.max()))
    if names is not None and top >= len(names):
        key = "y_train" if y_tr.max() == top else "y_test"
        raise ValueError(f"{key} in {path!r} has label {top}, outside [0, {len(names)}) for the {len(names)} "
                         f"class_names; class_names needs one name per class (labels 0..{top}).")
    num_classes = len(names) if names is not None else top + 1
    if num_classes < 2:
        raise ValueError(f"{path!r} has {num_classes} class (labels 0..{num_classes - 1}); a classifier needs at "
                         f"least 2 classes.")
    if image_size:
        x_tr, x_te = resize_images(x_tr, image_size), resize_images(x_te, image_size)
    elif x_tr.shape[1:3] != x_te.shape[1:3]:
        raise ValueError(f"x_train in {path!r} has {x_tr.shape[1]}x{x_tr.shape[2]} images but x_test "
                         f"{x_te.shape[1]}x{x_te.shape[2]}. Pass image_size=N (--image_size N) to resize every "
                         f"image to N x N.")
    if x_tr.shape[-1] != x_te.shape[-1]:
        x_tr, x_te = (np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x for x in (x_tr, x_te))
    return LabeledImages(x_tr, y_tr, x_te, y_te, names or tuple(str(i) for i in range(num_classes)))
