"""Stateless image augmentation: every random choice is a function of `(seed, stream, epoch, index)` through
`example_seed`, so a restarted run augments each example exactly as an uninterrupted one would."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import tensorflow as tf

# Tags folded into the seed so independent random streams never coincide.
STREAM_TRAIN_W = 1
STREAM_TRAIN_ALPHA = 2
STREAM_SHUFFLE = 11
STREAM_AUGMENT = 12


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


# The training augmentation of the datasets whose right augmentation is known: (crop padding, horizontal flip).
# CIFAR is the paper's (pad 4, flip); digits must not be mirrored (a mirrored 2 is no digit). Every other dataset,
# tfds or the user's own folder / npz, gets USER_DATA_AUGMENTATION: padding 1/8 of the image side (CIFAR's 4 px on
# 32 px) and no flip, since mirroring is wrong for digits, text and anything with a handedness; pass --flip for
# natural photographs.
KNOWN_AUGMENTATION = {"cifar10": (4, True), "cifar100": (4, True), "digits": (1, False)}
USER_DATA_AUGMENTATION = "crop padding = image side // 8, no flip"


# The flags' help (dataclass field metadata of the configs that train on images; darts_tf.cli.common makes the flags).
AUGMENT_FLAG_METADATA = {
    "flip": {"help": "Random horizontal flips in training (default: on for cifar10/cifar100, off for digits and for "
                     "any other dataset, your own included: pass --flip for natural photographs)."},
    "crop_padding": {"help": "Zero-padding of the random crop in pixels, 0 = no crop (default: 4 for cifar10/cifar100, "
                             "1 for digits, else the image side // 8)."},
}
IMAGE_SIZE_METADATA = {"help": "Resize every image to image_size x image_size when loading (0 = the data's own size; "
                               "needed when the images of a folder differ in size)."}


def default_augmentation(dataset: str, image_shape: Sequence[int], flip: Optional[bool] = None,
                         crop_padding: Optional[int] = None, cutout_length: int = 0) -> AugmentConfig:
    """The training augmentation of `dataset` with images of `image_shape` (H, W, C): the flags given (`flip`,
    `crop_padding`; None = the default), else the dataset's entry in KNOWN_AUGMENTATION, else
    USER_DATA_AUGMENTATION. A crop padding or cutout that would erase the image is refused."""
    side = int(min(image_shape[:2]))
    known_padding, known_flip = KNOWN_AUGMENTATION.get(dataset, (max(side // 8, 0), False))
    padding = known_padding if crop_padding is None else int(crop_padding)
    if padding >= side:
        raise ValueError(f"crop_padding={padding} is not smaller than the {side}x{side} images of {dataset!r}: the "
                         f"random crop would mostly see padding. Pass a smaller --crop_padding (0 = no crop).")
    if cutout_length >= side:
        raise ValueError(f"cutout_length={cutout_length} is not smaller than the {side}x{side} images of {dataset!r}: "
                         f"it would erase most of every image. Pass a smaller --cutout_length (0 = off).")
    return AugmentConfig(crop_padding=padding, flip=known_flip if flip is None else bool(flip),
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
