"""Tests for darts_tf.data.augment: stateless CIFAR augmentation, cutout, normalisation."""

import numpy as np
import pytest
import tensorflow as tf

from darts_tf.data import augment

MEAN3, STD3 = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def test_augment_cifar_is_a_shifted_crop_of_the_padded_image():
    x = np.random.default_rng(1).integers(1, 256, (16, 16, 3), dtype=np.uint8)
    padded = np.pad(x, [(2, 2), (2, 2), (0, 0)])
    seen_flip = seen_plain = False
    for s in range(12):
        out = augment.augment_cifar(x, tf.constant([s, 7]), crop_padding=2).numpy()
        np.testing.assert_array_equal(
            out, augment.augment_cifar(x, tf.constant([s, 7]), crop_padding=2).numpy())
        windows = [padded[i:i + 16, j:j + 16] for i in range(5) for j in range(5)]
        if any(np.array_equal(out, w) for w in windows):
            seen_plain = True
        elif any(np.array_equal(out[:, ::-1], w) for w in windows):
            seen_flip = True
        else:
            pytest.fail("augmented image is not a (flipped) crop of the padded image")
    assert seen_flip and seen_plain
    same = augment.augment_cifar(x, tf.constant([0, 0]), crop_padding=0, flip=False)
    np.testing.assert_array_equal(same.numpy(), x)
    no_flip = [augment.augment_cifar(x, tf.constant([s, 0]), crop_padding=0,
                                    flip=False).numpy() for s in range(5)]
    assert all(np.array_equal(o, x) for o in no_flip)


def test_cutout_zeroes_a_clipped_square():
    img = tf.ones([10, 10, 3])
    sizes = set()
    for s in range(30):
        out = augment.cutout(img, 4, tf.constant([s, 1])).numpy()
        zero = out[..., 0] == 0
        assert (out == 0).sum() == 3 * zero.sum()  # same square in every channel
        rows, cols = np.nonzero(zero)
        assert zero.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # a rectangle
        assert np.ptp(rows) < 4 and np.ptp(cols) < 4
        sizes.add(int(zero.sum()))
    assert 16 in sizes and min(sizes) < 16  # full squares and clipped ones
    np.testing.assert_array_equal(augment.cutout(img, 0, tf.constant([0, 0])), img)


def test_normalize_matches_numpy():
    x = np.random.default_rng(2).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    ref = (x / 255.0 - np.array(MEAN3)) / np.array(STD3)
    out = augment.normalize(x, MEAN3, STD3)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_augment_config():
    cfg = augment.AugmentConfig.for_image_size(8, flip=False)
    assert cfg == augment.AugmentConfig(crop_padding=1, flip=False, cutout_length=0)
    assert augment.AugmentConfig.for_image_size(32).crop_padding == 4
    with pytest.raises(ValueError, match="cutout_length must be >= 0"):
        augment.AugmentConfig(cutout_length=-1)


# ---------------------------------------------------------------- pipelines


@pytest.mark.parametrize("dataset, shape, expected", [
    ("cifar10", (32, 32, 3), augment.AugmentConfig(crop_padding=4, flip=True)),
    ("cifar100", (32, 32, 3), augment.AugmentConfig(crop_padding=4, flip=True)),
    ("digits", (8, 8, 1), augment.AugmentConfig(crop_padding=1, flip=False)),
    ("/data/my_images", (64, 48, 3), augment.AugmentConfig(crop_padding=6, flip=False)),  # side // 8, no flip
    ("mnist", (28, 28, 1), augment.AugmentConfig(crop_padding=3, flip=False)),
])
def test_default_augmentation_per_known_dataset_and_for_any_other(dataset, shape, expected):
    assert augment.default_augmentation(dataset, shape) == expected


def test_augmentation_flags_override_the_defaults():
    assert augment.default_augmentation("digits", (8, 8, 1), flip=True, crop_padding=0, cutout_length=3) == \
        augment.AugmentConfig(crop_padding=0, flip=True, cutout_length=3)
    assert augment.default_augmentation("cifar10", (32, 32, 3), flip=False).flip is False


@pytest.mark.parametrize("kwargs, message", [
    (dict(crop_padding=8), r"^crop_padding=8 is not smaller than the 8x8 images of 'x': the random crop would mostly "
                           r"see padding\. Pass a smaller --crop_padding \(0 = no crop\)\.$"),
    (dict(cutout_length=9), r"^cutout_length=9 is not smaller than the 8x8 images of 'x': it would erase most of every "
                            r"image\. Pass a smaller --cutout_length \(0 = off\)\.$"),
])
def test_augmentation_that_would_erase_the_image_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment.default_augmentation("x", (8, 12, 1), **kwargs)
