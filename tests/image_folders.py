"""Small image datasets made by the tests (issue 16): digits 0-2 drawn as images of three named classes, written as
an image folder DIR/<split>/<class>/*.png."""

import os

import numpy as np
from sklearn.datasets import load_digits

CLASSES = ("circle", "cross", "zero")  # sorted: the label of a class is its index in the sorted folder names
DIGITS = (0, 1, 2)  # the digits drawn for CLASSES[i]


def digit_images(rgb=False, size=8, per_class=40, seed=0):
    """Digits 0-2 as uint8 [N, size, size, C] images (nearest-neighbour upscaled; RGB: one tinted colour per class),
    with labels 0-2."""
    bunch = load_digits()
    keep = np.isin(bunch.target, DIGITS)
    images = np.round(bunch.images[keep] * (255.0 / 16.0)).astype(np.uint8)
    labels = np.array([DIGITS.index(t) for t in bunch.target[keep]], np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))[:per_class * len(DIGITS)]
    images, labels = images[order], labels[order]
    reps = -(-size // 8)
    images = np.kron(images, np.ones((reps, reps), np.uint8))[:, :size, :size]
    if rgb:
        tint = np.array([[1.0, 0.4, 0.4], [0.4, 1.0, 0.4], [0.4, 0.4, 1.0]])[labels]
        return np.round(images[..., None] * tint[:, None, None, :]).astype(np.uint8), labels
    return images[..., None], labels


def write_folder(root, images, labels, split):
    import tensorflow as tf

    for i, (image, label) in enumerate(zip(images, labels)):
        directory = os.path.join(root, split, CLASSES[label])
        os.makedirs(directory, exist_ok=True)
        tf.io.write_file(os.path.join(directory, f"{i:03d}.png"), tf.io.encode_png(image))
