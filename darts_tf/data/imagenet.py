"""Image data too big for memory (ImageNet, paper A.2.3), streamed from files: tfds `imagenet2012` or an
image-folder tree `DIR/{train,val}/<class>/*`, with the reference's ImageNet augmentation; and single image files
for prediction."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from darts_tf.data.augment import STREAM_AUGMENT, STREAM_SHUFFLE, example_seed
from darts_tf.data.checks import check_batch, check_epochs

AUTOTUNE = tf.data.AUTOTUNE
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Reference ColorJitter for ImageNet training (cnn/train_imagenet.py).
IMAGENET_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif")


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
    if source == "imagenet2012":
        return _imagenet_tfds(data_dir, image_size, batch_size, seed, initial_epoch,
                              epochs, resize_size, shuffle_buffer)
    if not os.path.isdir(source):
        raise FileNotFoundError(
            f"ImageNet source {source!r} is neither 'imagenet2012' nor an existing "
            "directory; expected layout: DIR/train/<class>/*.JPEG and DIR/val/<class>/*.")
    return _image_folder(source, image_size, batch_size, seed, initial_epoch, epochs, resize_size)


def _eval_stream(dataset: tf.data.Dataset, image_size, resize_size, batch_size) -> tf.data.Dataset:
    """(image, label) pairs -> resized, centre-cropped, normalised batches."""
    return (dataset.map(lambda x, y: (_imagenet_eval_transform(x, image_size, resize_size, IMAGENET_MEAN,
                                                               IMAGENET_STD), y), num_parallel_calls=AUTOTUNE)
            .batch(batch_size))


def _image_folder(source, image_size, batch_size, seed, initial_epoch, epochs, resize_size) -> StreamingImageData:
    """An image-folder tree DIR/{train,val}/<class>/*, read in a stateless per-epoch order."""
    train_paths, train_labels, classes = _list_image_folder(os.path.join(source, "train"), source)
    val_paths, val_labels, _ = _list_image_folder(os.path.join(source, "val"), source, classes)
    n = len(train_paths)
    check_batch(batch_size, n, f"training set under {source!r}", "lower batch_size")
    paths_t, labels_t = tf.constant(train_paths), tf.constant(train_labels)

    def one_epoch(e):
        order = tf.cast(tf.argsort(tf.random.stateless_uniform([n], seed=example_seed(seed, e, 0, STREAM_SHUFFLE))),
                        tf.int64)

        def load(index):
            image = _decode(tf.io.read_file(tf.gather(paths_t, index)))
            x = _imagenet_train_transform(image, example_seed(seed, e, index, STREAM_AUGMENT), image_size,
                                          IMAGENET_MEAN, IMAGENET_STD)
            return x, tf.gather(labels_t, index)

        return (tf.data.Dataset.from_tensor_slices(order)
                .map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
                .batch(batch_size, drop_remainder=True))

    train = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
    val = _eval_stream(tf.data.Dataset.from_tensor_slices((val_paths, val_labels))
                       .map(lambda path, y: (_decode(tf.io.read_file(path)), y), num_parallel_calls=AUTOTUNE),
                       image_size, resize_size, batch_size)
    return StreamingImageData(train.prefetch(AUTOTUNE), val.prefetch(AUTOTUNE),
                              len(classes), tuple(classes), n, len(val_paths), n // batch_size)


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
    check_batch(batch_size, n, "imagenet2012 train split", "lower batch_size")
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
            _imagenet_train_transform(xy[0], example_seed(seed, e, i, STREAM_AUGMENT),
                                      image_size, mean, std), xy[1]),
            num_parallel_calls=AUTOTUNE, deterministic=True)
        epochs_ds.append(ds.batch(batch_size, drop_remainder=True).take(steps))
    train = epochs_ds[0]
    for ds in epochs_ds[1:]:
        train = train.concatenate(ds)
    val = _eval_stream(builder.as_dataset(split="validation", as_supervised=True, shuffle_files=False),
                       image_size, resize_size, batch_size)
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
