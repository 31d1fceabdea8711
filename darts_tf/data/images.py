"""Image data for DARTS: in-memory datasets, deterministic resumable pipelines.

Datasets small enough for memory (CIFAR-10/100, any tfds image-classification
dataset, scikit-learn's bundled 8x8 `digits`, the offline smoke dataset, and your
own images as a folder tree or an .npz, see `darts_tf.data.user_images`) are
loaded into an `ImageData` of uint8 NHWC arrays. Pipelines are tf.data graphs
whose randomness is all *stateless*: the shuffle order of epoch `e` is a function
of `(seed, e)` and the augmentation of example `i` in epoch `e` a function of
`(seed, e, i)`, so a run restarted at epoch `e` sees exactly the batches an
uninterrupted run would have seen.

The search data follows the paper (A.1.1): the training set is split by
`train_portion` into a half that trains the weights w and a half that trains
the architecture alpha, zipped into one stream of
`{'train': (x, y), 'validation': (x, y)}` batches (the tunas `_merge_datasets`
pattern) so `model.fit` sees one iterator.

Augmentation is `darts_tf.data.augment`'s; ImageNet-size data is streamed from files by `darts_tf.data.imagenet`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from typing import Optional

import numpy as np
import tensorflow as tf

from darts_tf.data.augment import (STREAM_AUGMENT, STREAM_SHUFFLE, STREAM_TRAIN_ALPHA, STREAM_TRAIN_W, AugmentConfig,
                                   augment_cifar, cutout, example_seed, normalize)
from darts_tf.data.checks import check_batch, check_epochs

AUTOTUNE = tf.data.AUTOTUNE

CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN = (0.5070751592371323, 0.48654887331495095, 0.4409178433670343)
CIFAR100_STD = (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)

KNOWN_IMAGE_DATASETS = ("cifar10", "cifar100", "digits")
_KNOWN_STATS = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
}
# A tfds name with a config (and version), which looks like a relative path: 'name/config', 'name/config:1.0.0'.
_TFDS_NAME_WITH_CONFIG = re.compile(r"^\w+/[\w\-.]+(:\d+\.\d+\.\d+)?$")
_TFDS_COMMUNITY_NAME = re.compile(r"^[\w\-]+:(?!\d)")  # 'namespace:name', not 'name:1.0.0'

_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


# --------------------------------------------------------------------------
# In-memory datasets
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageData:
    """An image-classification dataset held in memory.

    Images are uint8 NHWC, labels int64 in [0, num_classes); `mean` / `std` are
    the per-channel normalisation constants on the 0..1 scale; `class_names[i]`
    names label i (by default '0', '1', ...).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str
    mean: tuple
    std: tuple
    class_names: tuple = ()  # () -> ('0', '1', ..., str(num_classes - 1))

    def __post_init__(self):
        names = tuple(str(n) for n in self.class_names) or tuple(str(i) for i in range(int(self.num_classes)))
        if len(names) != int(self.num_classes):
            raise ValueError(f"ImageData {self.name!r} has num_classes={self.num_classes} but {len(names)} "
                             f"class_names; give one name per class. Received: class_names={names!r}")
        object.__setattr__(self, "class_names", names)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])


def channel_stats(images: np.ndarray) -> tuple:
    """Per-channel mean and std of uint8 NHWC `images` on the 0..1 scale."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"channel_stats expects a non-empty NHWC array; got shape {images.shape}."
        )
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return tuple(float(m) for m in flat.mean(0)), tuple(float(s) for s in flat.std(0))


def load_image_data(source: str, data_dir: Optional[str] = None,
                    download: bool = True, image_size: int = 0) -> ImageData:
    """Loads an image-classification dataset into memory.

    `source` is one of
      * a directory ``DIR/train/<class>/*`` with ``DIR/test/<class>/*`` (or
        ``DIR/val/<class>/*``) of PNG/JPEG/BMP/GIF files; class names are the
        folder names, sorted, and a label is the index in that sorted list;
      * an ``.npz`` holding ``x_train, y_train, x_test, y_test`` (uint8 NHWC or
        NHW) and optionally ``class_names``;
      * 'digits' (scikit-learn's 8x8 digits, offline);
      * 'cifar10', 'cifar100' or any tfds image-classification dataset, read from
        `data_dir` (tfds' default when None). When it is not prepared there it
        is downloaded if `download` is true; failing that a FileNotFoundError
        says where we looked and how to prepare it. With `download=False` no
        network endpoint is contacted (no community-catalogue listing, no GCS),
        so community names (`namespace:name`) are refused then.

    A source written as a path (with a directory separator, or ending in .npz)
    that exists is read as a folder or an .npz; a missing one is a
    FileNotFoundError, unless it is a tfds 'name/config'. A
    bare name is a folder or file only when it exists in the working directory
    (a folder then needs train/). Path sources never import
    tensorflow_datasets and ignore `data_dir` and `download`.

    Colour: all-grayscale images give C=1 and all-RGB C=3; a folder or .npz
    that mixes grayscale and RGB images is converted to RGB; alpha is dropped.
    `image_size` > 0 resizes every image (of any source) to
    image_size x image_size (bilinear, aspect ratio not kept); 0 keeps the
    data's own size, and a folder of images of different sizes is then an error.
    Mean/std are the train images' `channel_stats` (CIFAR's published constants
    for cifar10/cifar100 at their own size).
    """
    from darts_tf.data import user_images

    image_size = user_images.check_image_size(image_size)
    source = os.fspath(source)
    kind = _source_kind(source)
    if kind in ("folder", "npz"):
        path = os.path.expanduser(source)
        read = user_images.read_image_folder if kind == "folder" else user_images.read_npz
        return _from_labeled(read(path, image_size), source)
    if kind == "digits":
        return _resized(_load_digits(), image_size)
    import tensorflow_datasets as tfds

    community = bool(_TFDS_COMMUNITY_NAME.match(source))
    if community and not download:  # community / huggingface namespaces resolve over the network
        raise ValueError(
            f"tfds dataset {source!r} is in a community namespace, which tfds looks up over the network; "
            "it cannot be loaded with downloading disabled. Allow downloading, or export it to an .npz "
            "and pass that path.")
    builder_name = source.split("/")[0].split(":")[0]
    if not community and builder_name not in tfds.list_builders(with_community_datasets=False):
        if "/" in source:  # neither an existing path nor 'tfds_name/config'
            raise _missing_path(source)
        here = (f" The directory {source!r} exists but has no train/ sub-directory, so it is not "
                "an image folder." if os.path.isdir(source) else "")
        raise ValueError(
            f"Unknown dataset {source!r}. Known: {', '.join(KNOWN_IMAGE_DATASETS)}, "
            "or any tfds image dataset name (see tfds.list_builders()), an image folder "
            f"DIR/train/<class>/ + DIR/test/<class>/, or an .npz file path.{here}")
    with _gcs_disabled(not download):
        builder = tfds.builder(source, data_dir=data_dir, try_gcs=False)
        _ensure_prepared(builder, source, download)
        return _resized(_load_tfds_in_memory(builder, source), image_size)


def _source_kind(source: str) -> str:
    """'folder', 'npz', 'digits' or 'tfds', without importing tensorflow_datasets."""
    from darts_tf.data import user_images

    path = os.path.expanduser(source)
    if user_images.looks_like_path(source):
        if tf.io.gfile.isdir(path):
            return "folder"
        if tf.io.gfile.exists(path):
            return "npz"
        if _TFDS_NAME_WITH_CONFIG.match(source) and not source.lower().endswith(".npz"):
            # 'imagenet_resized/32x32'; an unknown first part is reported as a missing path
            return "tfds"
        raise _missing_path(source)
    if source == "digits":
        return "digits"
    if os.path.isdir(os.path.join(path, "train")):
        return "folder"
    if os.path.isfile(path):
        return "npz"
    return "tfds"


def _missing_path(source: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Dataset path {source!r} does not exist; pass an existing image folder "
        "(DIR/train/<class>/, DIR/test/<class>/) or .npz file, or a dataset name "
        f"({', '.join(KNOWN_IMAGE_DATASETS)} or a tfds name).")


@contextlib.contextmanager
def _gcs_disabled(disable: bool):
    """tfds' switch that stops it probing gs://tfds-data (already off by default in tfds 4.9.10)."""
    from tensorflow_datasets.core.utils import gcs_utils

    if not disable or not hasattr(gcs_utils, "_is_gcs_disabled"):
        yield
        return
    before = gcs_utils._is_gcs_disabled
    gcs_utils._is_gcs_disabled = True
    try:
        yield
    finally:
        gcs_utils._is_gcs_disabled = before


def _from_labeled(data, name: str) -> ImageData:
    mean, std = channel_stats(data.train_images)
    return ImageData(data.train_images, data.train_labels, data.test_images, data.test_labels,
                     len(data.class_names), name, mean, std, data.class_names)


def _resized(data: ImageData, image_size: int) -> ImageData:
    """`data` with its images resized to image_size x image_size and stats recomputed (a no-op for 0)."""
    from darts_tf.data import user_images

    if image_size == 0 or data.image_shape[:2] == (image_size, image_size):
        return data
    x_tr = user_images.resize_images(data.train_images, image_size)
    x_te = user_images.resize_images(data.test_images, image_size)
    mean, std = channel_stats(x_tr)
    return dataclasses.replace(data, train_images=x_tr, test_images=x_te, mean=mean, std=std)


def _load_digits() -> ImageData:
    """scikit-learn's bundled 8x8 handwritten digits, stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=_DIGITS_TEST_FRACTION,
        random_state=_DIGITS_SPLIT_SEED, stratify=labels)
    mean, std = channel_stats(x_tr)
    return ImageData(x_tr, y_tr, x_te, y_te, 10, "digits", mean, std)


def _ensure_prepared(builder, name: str, download: bool) -> None:
    if builder.is_prepared():
        return
    where = os.fspath(builder.data_path)
    how = (
        f"Prepare it on a machine with internet access with "
        f"`tfds build {name} --data_dir DIR` and pass that DIR as data_dir "
        f"(or copy the prepared '{name}' directory into {os.fspath(builder.data_dir)!r})."
    )
    if not download:
        raise FileNotFoundError(
            f"tfds dataset {name!r} is not prepared at {where!r} and downloading "
            f"is disabled. {how}")
    try:
        builder.download_and_prepare()
    except Exception as e:  # network errors come in many types
        raise FileNotFoundError(
            f"tfds dataset {name!r} is not prepared at {where!r} and could not "
            f"be downloaded ({type(e).__name__}: {e}). {how}") from e


def _load_tfds_in_memory(builder, name: str) -> ImageData:
    import tensorflow_datasets as tfds

    info = builder.info
    if not info.supervised_keys:
        raise ValueError(
            f"tfds dataset {name!r} has no supervised (image, label) keys; "
            "choose an image-classification dataset.")
    image_key, label_key = info.supervised_keys[:2]
    label_feature = info.features[label_key]
    num_classes = getattr(label_feature, "num_classes", None)
    if not num_classes:
        raise ValueError(
            f"tfds dataset {name!r}: label {label_key!r} is not a ClassLabel; "
            "choose an image-classification dataset.")
    shape = info.features[image_key].shape
    if len(shape) != 3 or None in shape:
        raise ValueError(
            f"tfds dataset {name!r} has images of variable shape {shape}; it does "
            "not fit in memory as one array. Use imagenet_datasets for streaming.")
    splits = set(info.splits.keys())
    test_split = next((s for s in ("test", "validation") if s in splits), None)
    if "train" not in splits or test_split is None:
        raise ValueError(
            f"tfds dataset {name!r} needs a 'train' and a 'test' (or 'validation') "
            f"split; it has {sorted(splits)}.")

    def read(split):
        ds = builder.as_dataset(split=split, as_supervised=True, batch_size=-1,
                                shuffle_files=False)
        x, y = tfds.as_numpy(ds)
        return np.asarray(x, np.uint8), np.asarray(y, np.int64)

    x_tr, y_tr = read("train")
    x_te, y_te = read(test_split)
    mean, std = _KNOWN_STATS.get(name) or channel_stats(x_tr)
    names = tuple(getattr(label_feature, "names", None) or ()) or None
    return ImageData(x_tr, y_tr, x_te, y_te, int(num_classes), name, mean, std,
                     names or tuple(str(i) for i in range(int(num_classes))))


def split_train_validation(images: np.ndarray, labels: np.ndarray,
                           train_portion: float, seed: int):
    """The DARTS search split: ((x_w, y_w), (x_alpha, y_alpha)).

    The first `floor(train_portion * n)` examples of a permutation seeded by
    `seed` train the weights w, the rest train the architecture alpha (or
    serve as validation carved from train).
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(
            f"images and labels differ in length ({len(images)} vs {len(labels)}).")
    if not 0.0 < train_portion < 1.0:
        raise ValueError(
            f"train_portion must be in (0, 1); received train_portion={train_portion}.")
    n = len(images)
    n_train = int(np.floor(train_portion * n))
    if n_train == 0 or n_train == n:
        raise ValueError(
            f"train_portion={train_portion} of {n} examples leaves one split empty; "
            "use more data or a train_portion nearer 0.5.")
    perm = np.random.default_rng([int(seed), 0x5EA7]).permutation(n)
    first, rest = perm[:n_train], perm[n_train:]
    return (images[first], labels[first]), (images[rest], labels[rest])


# --------------------------------------------------------------------------
# In-memory pipelines
# --------------------------------------------------------------------------


def _check_arrays(images, labels):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(
            f"images must be uint8 NHWC (4-D); received shape {images.shape}. "
            "Add a channel axis for grayscale images.")
    if len(images) != len(labels):
        raise ValueError(
            f"images and labels differ in length ({len(images)} vs {len(labels)}).")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64, copy=False)


def _epoch_pipeline(images_t, labels_t, n, batch_size, seed, stream, epoch,
                    shuffle, augment, mean, std, drop_remainder):
    """One epoch as a dataset; `epoch` may be a tensor (inside flat_map)."""
    epoch = tf.cast(epoch, tf.int64)
    if shuffle:
        shuffle_seed = example_seed(seed, epoch, 0, stream * 100 + STREAM_SHUFFLE)
        order = tf.argsort(tf.random.stateless_uniform([n], seed=shuffle_seed))
    else:
        order = tf.range(n)
    order = tf.cast(order, tf.int64)

    def load(index):
        image = tf.gather(images_t, index)
        label = tf.gather(labels_t, index)
        if augment is not None:
            s = example_seed(seed, epoch, index, stream * 100 + STREAM_AUGMENT)
            aug_seed, cut_seed = tf.unstack(tf.random.experimental.stateless_split(s, 2))
            image = augment_cifar(image, aug_seed, augment.crop_padding, augment.flip)
            x = normalize(image, mean, std)
            x = cutout(x, augment.cutout_length, cut_seed)
        else:
            x = normalize(image, mean, std)
        return x, label

    ds = tf.data.Dataset.from_tensor_slices(order)
    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder)


def _steps(n, batch_size, drop_remainder):
    return n // batch_size if drop_remainder else -(-n // batch_size)


def epoch_dataset(images, labels, batch_size: int, *, seed: int, epoch: int,
                  mean, std, shuffle: bool = True,
                  augment: Optional[AugmentConfig] = None,
                  drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of (x float32 normalised NHWC, y int64) for one epoch.

    Shuffle order depends on (seed, epoch), augmentation on (seed, epoch, index).
    """
    images, labels = _check_arrays(images, labels)
    check_batch(batch_size, len(images), "dataset", "lower batch_size")
    ds = _epoch_pipeline(tf.constant(images), tf.constant(labels), len(images),
                         batch_size, seed, STREAM_TRAIN_W, epoch, shuffle,
                         augment, mean, std, drop_remainder)
    return ds.prefetch(AUTOTUNE)


def multi_epoch_dataset(images, labels, batch_size: int, *, seed: int,
                        initial_epoch: int, epochs: int, mean, std,
                        shuffle: bool = True,
                        augment: Optional[AugmentConfig] = None,
                        drop_remainder: bool = True):
    """Epochs `initial_epoch..epochs-1` concatenated, and `steps_per_epoch`.

    For `model.fit(ds, epochs=epochs, initial_epoch=initial_epoch,
    steps_per_epoch=steps_per_epoch)`; epoch e is identical to
    `epoch_dataset(..., epoch=e)`, so resuming reproduces an uninterrupted run.
    """
    images, labels = _check_arrays(images, labels)
    check_epochs(initial_epoch, epochs)
    check_batch(batch_size, len(images), "dataset", "lower batch_size")
    images_t, labels_t, n = tf.constant(images), tf.constant(labels), len(images)
    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(
        lambda e: _epoch_pipeline(images_t, labels_t, n, batch_size, seed,
                                  STREAM_TRAIN_W, e, shuffle, augment, mean,
                                  std, drop_remainder))
    return ds.prefetch(AUTOTUNE), _steps(n, batch_size, drop_remainder)


def search_dataset(images, labels, batch_size: int, train_portion: float, *,
                   seed: int, initial_epoch: int, epochs: int,
                   augment: Optional[AugmentConfig], mean, std):
    """The bilevel search stream and its `steps_per_epoch`.

    Elements are `{'train': (x, y), 'validation': (x, y)}`: the w-half and the
    alpha-half of the training set (split by `train_portion`), each reshuffled
    every epoch, zipped batch by batch. `steps_per_epoch` is the smaller of the
    two halves' full-batch counts.
    """
    check_epochs(initial_epoch, epochs)
    images, labels = _check_arrays(images, labels)
    (x_w, y_w), (x_a, y_a) = split_train_validation(images, labels, train_portion, seed)
    check_batch(batch_size, len(x_w), "weight-training split",
                 "lower --batch_size or lower --train_portion")
    check_batch(batch_size, len(x_a), "alpha-training split",
                 "lower --batch_size or raise --train_portion")
    steps = min(len(x_w) // batch_size, len(x_a) // batch_size)
    halves = [(tf.constant(x_w), tf.constant(y_w), len(x_w), STREAM_TRAIN_W),
              (tf.constant(x_a), tf.constant(y_a), len(x_a), STREAM_TRAIN_ALPHA)]

    def one_epoch(e):
        w_ds, a_ds = [
            _epoch_pipeline(x, y, n, batch_size, seed, stream, e, True, augment,
                            mean, std, True).take(steps)
            for x, y, n, stream in halves]
        return tf.data.Dataset.zip(w_ds, a_ds).map(
            lambda t, v: {"train": t, "validation": v})

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
    return ds.prefetch(AUTOTUNE), steps
