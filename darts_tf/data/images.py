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

ImageNet-size data is streamed from files (`imagenet_datasets`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from darts_tf.data.checks import check_batch_size, check_epochs

AUTOTUNE = tf.data.AUTOTUNE

CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN = (0.5070751592371323, 0.48654887331495095, 0.4409178433670343)
CIFAR100_STD = (0.2673342858792401, 0.2564384629170883, 0.27615047132568404)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Reference ColorJitter for ImageNet training (cnn/train_imagenet.py).
IMAGENET_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)

KNOWN_IMAGE_DATASETS = ("cifar10", "cifar100", "digits")
_KNOWN_STATS = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
}
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif")

# Tags folded into the seed so independent random streams never coincide.
_STREAM_TRAIN_W = 1
_STREAM_TRAIN_ALPHA = 2
_STREAM_SHUFFLE = 11
_STREAM_AUGMENT = 12


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
# Augmentation (stateless)
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """CIFAR-style training augmentation: pad+crop, optional flip, cutout.

    `crop_padding` 0 disables the crop, `cutout_length` 0 disables cutout.
    """

    crop_padding: int = 4
    flip: bool = True
    cutout_length: int = 0

    def __post_init__(self):
        if self.crop_padding < 0:
            raise ValueError(
                f"crop_padding must be >= 0; received crop_padding={self.crop_padding}.")
        if self.cutout_length < 0:
            raise ValueError(
                f"cutout_length must be >= 0; received cutout_length={self.cutout_length}.")

    @classmethod
    def for_image_size(cls, image_size: int, flip: bool = True,
                       cutout_length: int = 0) -> "AugmentConfig":
        """Padding scaled like CIFAR's 4 px on 32 px: `image_size // 8`."""
        return cls(crop_padding=max(image_size // 8, 0), flip=flip,
                   cutout_length=cutout_length)


def example_seed(seed, epoch, index, stream: int = 0) -> tf.Tensor:
    """A stateless-op seed (shape [2] int64) derived from (seed, stream, epoch, index)."""
    s = tf.stack([tf.cast(seed, tf.int64), tf.constant(stream, tf.int64)])
    s = tf.random.experimental.stateless_fold_in(s, tf.cast(epoch, tf.int64))
    return tf.random.experimental.stateless_fold_in(s, tf.cast(index, tf.int64))


def augment_cifar(image_uint8, seed, crop_padding: int = 4, flip: bool = True):
    """Zero-pad by `crop_padding`, random crop back, random horizontal flip (uint8 HWC)."""
    image = tf.convert_to_tensor(image_uint8)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if crop_padding > 0:
        shape = tf.shape(image)
        p = crop_padding
        padded = tf.pad(image, [[p, p], [p, p], [0, 0]])
        image = tf.image.stateless_random_crop(padded, shape, seed=crop_seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image


def cutout(image, length: int, seed):
    """Zeroes a `length` x `length` square centred at a random pixel (DeVries & Taylor).

    The square is clipped at the borders; applied after normalisation as in the
    DARTS reference.
    """
    image = tf.convert_to_tensor(image)
    if length <= 0:
        return image
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    centre = tf.random.stateless_uniform([2], seed=seed, minval=0,
                                         maxval=tf.int32.max, dtype=tf.int32)
    cy, cx = centre[0] % h, centre[1] % w
    y1, y2 = tf.maximum(cy - length // 2, 0), tf.minimum(cy + length // 2, h)
    x1, x2 = tf.maximum(cx - length // 2, 0), tf.minimum(cx + length // 2, w)
    rows = tf.range(h)[:, None]
    cols = tf.range(w)[None, :]
    inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    keep = tf.cast(tf.logical_not(inside), image.dtype)[..., None]
    return image * keep


def normalize(image_uint8, mean, std):
    """uint8 -> float32 `(x / 255 - mean) / std`, per channel."""
    x = tf.cast(image_uint8, tf.float32) / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


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


def _check_batch(batch_size: int, n: int, what: str, fix: str):
    check_batch_size(batch_size)
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {what} ({n} examples); {fix}.")


def _epoch_pipeline(images_t, labels_t, n, batch_size, seed, stream, epoch,
                    shuffle, augment, mean, std, drop_remainder):
    """One epoch as a dataset; `epoch` may be a tensor (inside flat_map)."""
    epoch = tf.cast(epoch, tf.int64)
    if shuffle:
        shuffle_seed = example_seed(seed, epoch, 0, stream * 100 + _STREAM_SHUFFLE)
        order = tf.argsort(tf.random.stateless_uniform([n], seed=shuffle_seed))
    else:
        order = tf.range(n)
    order = tf.cast(order, tf.int64)

    def load(index):
        image = tf.gather(images_t, index)
        label = tf.gather(labels_t, index)
        if augment is not None:
            s = example_seed(seed, epoch, index, stream * 100 + _STREAM_AUGMENT)
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
    _check_batch(batch_size, len(images), "dataset", "lower batch_size")
    ds = _epoch_pipeline(tf.constant(images), tf.constant(labels), len(images),
                         batch_size, seed, _STREAM_TRAIN_W, epoch, shuffle,
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
    _check_batch(batch_size, len(images), "dataset", "lower batch_size")
    images_t, labels_t, n = tf.constant(images), tf.constant(labels), len(images)
    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(
        lambda e: _epoch_pipeline(images_t, labels_t, n, batch_size, seed,
                                  _STREAM_TRAIN_W, e, shuffle, augment, mean,
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
    _check_batch(batch_size, len(x_w), "weight-training split",
                 "lower --batch_size or lower --train_portion")
    _check_batch(batch_size, len(x_a), "alpha-training split",
                 "lower --batch_size or raise --train_portion")
    steps = min(len(x_w) // batch_size, len(x_a) // batch_size)
    halves = [(tf.constant(x_w), tf.constant(y_w), len(x_w), _STREAM_TRAIN_W),
              (tf.constant(x_a), tf.constant(y_a), len(x_a), _STREAM_TRAIN_ALPHA)]

    def one_epoch(e):
        w_ds, a_ds = [
            _epoch_pipeline(x, y, n, batch_size, seed, stream, e, True, augment,
                            mean, std, True).take(steps)
            for x, y, n, stream in halves]
        return tf.data.Dataset.zip(w_ds, a_ds).map(
            lambda t, v: {"train": t, "validation": v})

    ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
    return ds.prefetch(AUTOTUNE), steps


# --------------------------------------------------------------------------
# Files: ImageNet-style streaming and single images
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StreamingImageData:
    """Train/validation streams for data too big for memory (ImageNet)."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    num_classes: int
    class_names: tuple
    train_size: int
    validation_size: int
    steps_per_epoch: int
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


def _list_image_folder(split_dir: str, root: str, class_names=None):
    layout = ("expected layout: DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG "
              "(one sub-directory per class)")
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f"Image folder {split_dir!r} does not exist; {layout}.")
    found = sorted(d for d in os.listdir(split_dir)
                   if os.path.isdir(os.path.join(split_dir, d)))
    if not found:
        raise FileNotFoundError(
            f"Image folder {split_dir!r} has no class sub-directories; {layout}.")
    if class_names is None:
        class_names = tuple(found)
    else:
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise ValueError(
                f"{split_dir!r} has classes not in {os.path.join(root, 'train')!r}: "
                f"{unknown[:5]}; train/ and val/ must use the same class folders.")
    index = {c: i for i, c in enumerate(class_names)}
    paths, labels = [], []
    for c in found:
        cdir = os.path.join(split_dir, c)
        for f in sorted(os.listdir(cdir)):
            if f.lower().endswith(_IMAGE_EXTENSIONS):
                paths.append(os.path.join(cdir, f))
                labels.append(index[c])
    if not paths:
        raise FileNotFoundError(
            f"No image files ({', '.join(_IMAGE_EXTENSIONS)}) under {split_dir!r}; {layout}.")
    return paths, np.asarray(labels, np.int64), class_names


def random_resized_crop(image, size: int, seed, area_range=(0.08, 1.0),
                        aspect_ratio_range=(3 / 4, 4 / 3)):
    """Inception-style crop of random area/aspect, resized to size x size (float)."""
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed, min_object_covered=0.0, aspect_ratio_range=aspect_ratio_range,
        area_range=area_range, max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, extent)
    return tf.image.resize(crop, [size, size], method="bilinear", antialias=True)


def color_jitter(image, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2):
    """torchvision-style ColorJitter on a float image in [0, 1] (fixed op order)."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))

    def factor(s, amount):
        return tf.random.stateless_uniform([], seed=s, minval=max(0.0, 1 - amount),
                                           maxval=1 + amount)

    if brightness:
        image = tf.clip_by_value(image * factor(seeds[0], brightness), 0.0, 1.0)
    if contrast:
        image = tf.clip_by_value(
            tf.image.adjust_contrast(image, factor(seeds[1], contrast)), 0.0, 1.0)
    if saturation:
        image = tf.clip_by_value(
            tf.image.adjust_saturation(image, factor(seeds[2], saturation)), 0.0, 1.0)
    if hue:
        delta = tf.random.stateless_uniform([], seed=seeds[3], minval=-hue, maxval=hue)
        image = tf.image.adjust_hue(image, delta)
    return image


def resize_shorter_and_center_crop(image, resize_size: int, crop_size: int):
    """Evaluation transform: shorter side to `resize_size`, centre `crop_size` crop."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(resize_size, tf.float32) / tf.minimum(h, w)
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), crop_size)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), crop_size)
    image = tf.image.resize(image, [new_h, new_w], method="bilinear", antialias=True)
    top = (new_h - crop_size) // 2
    left = (new_w - crop_size) // 2
    return tf.slice(image, [top, left, 0], [crop_size, crop_size, -1])


def _imagenet_train_transform(image, seed, image_size, mean, std):
    s = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    x = tf.cast(image, tf.float32) / 255.0
    x = random_resized_crop(x, image_size, s[0])
    x = tf.image.stateless_random_flip_left_right(x, seed=s[1])
    x = color_jitter(x, s[2], **IMAGENET_JITTER)
    x = (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    return tf.ensure_shape(x, [image_size, image_size, 3])


def _imagenet_eval_transform(image, image_size, resize_size, mean, std):
    x = tf.cast(image, tf.float32) / 255.0
    x = resize_shorter_and_center_crop(x, resize_size, image_size)
    x = (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    return tf.ensure_shape(x, [image_size, image_size, 3])


def _decode(contents):
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def imagenet_datasets(source: str, data_dir: Optional[str] = None, *,
                      image_size: int = 224, batch_size: int = 128, seed: int = 0,
                      initial_epoch: int = 0, epochs: int = 1,
                      resize_size: Optional[int] = None,
                      shuffle_buffer: int = 10_000) -> StreamingImageData:
    """Streams ImageNet (or any image-folder tree) for training and evaluation.

    `source` is 'imagenet2012' (tfds; the downloaded tars go in
    `data_dir/downloads/manual`) or a directory `DIR/train/<class>/*` plus
    `DIR/val/<class>/*`. Training: random resized crop, horizontal flip, colour
    jitter (0.4, 0.4, 0.4, 0.2), ImageNet normalisation; evaluation: shorter side
    to `resize_size` (default image_size * 256/224) and a centre crop. The train
    stream holds epochs initial_epoch..epochs-1 (`steps_per_epoch` batches each,
    order and augmentation stateless in (seed, epoch, index)).
    """
    check_epochs(initial_epoch, epochs)
    if resize_size is None:
        resize_size = int(round(image_size * 256 / 224))
    if resize_size < image_size:
        raise ValueError(
            f"resize_size={resize_size} is smaller than image_size={image_size}; "
            "the centre crop must fit inside the resized image.")
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if source == "imagenet2012":
        return _imagenet_tfds(data_dir, image_size, batch_size, seed, initial_epoch,
                              epochs, resize_size, shuffle_buffer)
    if not os.path.isdir(source):
        raise FileNotFoundError(
            f"ImageNet source {source!r} is neither 'imagenet2012' nor an existing "
            "directory; expected layout: DIR/train/<class>/*.JPEG and DIR/val/<class>/*.")
    train_paths, train_labels, classes = _list_image_folder(
        os.path.join(source, "train"), source)
    val_paths, val_labels, _ = _list_image_folder(
        os.path.join(source, "val"), source, classes)
    n = len(train_paths)
    _check_batch(batch_size, n, f"training set under {source!r}", "lower batch_size")
    steps = n // batch_size
    paths_t, labels_t = tf.constant(train_paths), tf.constant(train_labels)

    def one_epoch(e):
        order = tf.argsort(tf.random.stateless_uniform(
            [n], seed=example_seed(seed, e, 0, _STREAM_SHUFFLE)))
        order = tf.cast(order, tf.int64)

        def load(index):
            image = _decode(tf.io.read_file(tf.gather(paths_t, index)))
            s = example_seed(seed, e, index, _STREAM_AUGMENT)
            x = _imagenet_train_transform(image, s, image_size, mean, std)
            return x, tf.gather(labels_t, index)

        return (tf.data.Dataset.from_tensor_slices(order)
                .map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
                .batch(batch_size, drop_remainder=True))

    train = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
    val = (tf.data.Dataset.from_tensor_slices((val_paths, val_labels))
           .map(lambda p, y: (_imagenet_eval_transform(
               _decode(tf.io.read_file(p)), image_size, resize_size, mean, std), y),
               num_parallel_calls=AUTOTUNE)
           .batch(batch_size))
    return StreamingImageData(train.prefetch(AUTOTUNE), val.prefetch(AUTOTUNE),
                              len(classes), tuple(classes), n, len(val_paths), steps)


def _imagenet_tfds(data_dir, image_size, batch_size, seed, initial_epoch, epochs,
                   resize_size, shuffle_buffer):
    import tensorflow_datasets as tfds

    name = "imagenet2012"
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        manual_dir = os.path.join(os.fspath(builder.data_dir), "downloads", "manual")
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        except Exception as e:
            raise FileNotFoundError(
                f"tfds dataset 'imagenet2012' is not prepared at "
                f"{os.fspath(builder.data_path)!r} and could not be built from "
                f"{manual_dir!r} ({type(e).__name__}: {e}). Put ILSVRC2012_img_train.tar "
                f"and ILSVRC2012_img_val.tar in {manual_dir!r}, or pass an image "
                "folder DIR with DIR/train/<class>/* and DIR/val/<class>/*.") from e
    info = builder.info
    n = info.splits["train"].num_examples
    _check_batch(batch_size, n, "imagenet2012 train split", "lower batch_size")
    steps = n // batch_size
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    base = builder.as_dataset(split="train", as_supervised=True, shuffle_files=False)
    epochs_ds = []
    for e in range(initial_epoch, epochs):
        # tfds records have no random access: a seeded shuffle buffer per epoch.
        shuffle_seed = int(np.random.default_rng([seed, e]).integers(2**31))
        ds = base.shuffle(shuffle_buffer, seed=shuffle_seed,
                          reshuffle_each_iteration=False).enumerate()
        ds = ds.map(lambda i, xy, e=e: (
            _imagenet_train_transform(xy[0], example_seed(seed, e, i, _STREAM_AUGMENT),
                                      image_size, mean, std), xy[1]),
            num_parallel_calls=AUTOTUNE, deterministic=True)
        epochs_ds.append(ds.batch(batch_size, drop_remainder=True).take(steps))
    train = epochs_ds[0]
    for ds in epochs_ds[1:]:
        train = train.concatenate(ds)
    val = (builder.as_dataset(split="validation", as_supervised=True, shuffle_files=False)
           .map(lambda x, y: (_imagenet_eval_transform(x, image_size, resize_size,
                                                       mean, std), y),
                num_parallel_calls=AUTOTUNE)
           .batch(batch_size))
    names = tuple(info.features["label"].names)
    return StreamingImageData(train.prefetch(AUTOTUNE), val.prefetch(AUTOTUNE),
                              len(names), names, n,
                              info.splits["validation"].num_examples, steps)


def load_image_files(paths: Sequence[str], image_size: Optional[int] = None,
                     channels: Optional[int] = None) -> np.ndarray:
    """Decodes JPEG/PNG/BMP/GIF files into one uint8 NHWC array.

    `image_size` resizes every image to image_size x image_size; `channels`
    (1 or 3) converts colour. Without `image_size` all images must share a shape.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3; received channels={channels}.")
    if not paths:
        raise ValueError("load_image_files needs at least one path; received none.")
    out = []
    for p in paths:
        p = os.fspath(p)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"Image file {p!r} does not exist.")
        try:
            image = tf.io.decode_image(tf.io.read_file(p), channels=channels or 0,
                                       expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            raise ValueError(
                f"Could not decode image file {p!r} ({e.message.splitlines()[0]}); "
                "use a JPEG, PNG, BMP or GIF file.") from e
        if image_size is not None:
            image = tf.image.resize(image, [image_size, image_size], method="bilinear",
                                    antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        out.append(image.numpy())
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise ValueError(
            f"Images have different shapes {sorted(shapes)} (e.g. {os.fspath(paths[0])!r} "
            f"is {out[0].shape}); pass image_size to resize them and channels to "
            "fix the colour channels.")
    return np.stack(out).astype(np.uint8)
