"""Image data for DARTS: in-memory datasets, deterministic resumable pipelines.

Datasets small enough for memory (CIFAR-10/100, any tfds image-classification
dataset, and scikit-learn's bundled 8x8 `digits`, the offline smoke dataset) are
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

import dataclasses
import os
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
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


# --------------------------------------------------------------------------
# In-memory datasets
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageData:
    """An image-classification dataset held in memory.

    Images are uint8 NHWC, labels int64; `mean` / `std` are the per-channel
    normalisation constants on the 0..1 scale.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str
    mean: tuple
    std: tuple

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


def load_image_data(name: str, data_dir: Optional[str] = None,
                    download: bool = True) -> ImageData:
    """Loads `name` ('digits', 'cifar10', 'cifar100' or any tfds image dataset).

    tfds datasets are read from `data_dir` (tfds' default when None). When the
    dataset is not prepared there, it is downloaded if `download` is true;
    failing that a FileNotFoundError says where we looked and how to prepare it.
    """
    if name == "digits":
        return _load_digits()
    import tensorflow_datasets as tfds

    if name not in tfds.list_builders():
        raise ValueError(
            f"Unknown dataset {name!r}. Known: {', '.join(KNOWN_IMAGE_DATASETS)}, "
            "or any tfds image dataset name (see tfds.list_builders())."
        )
    builder = tfds.builder(name, data_dir=data_dir)
    _ensure_prepared(builder, name, download)
    return _load_tfds_in_memory(builder, name)


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
    return ImageData(x_tr, y_tr, x_te, y_te, int(num_classes), name, mean, std)


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
