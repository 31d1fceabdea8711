"""Tests for darts_tf.data.imagenet: streaming an image-folder tree, the eval transform, single image files."""

import os

import numpy as np
import pytest
import tensorflow as tf

from darts_tf.data import imagenet


def _collect(ds):
    return [tuple(np.asarray(t) for t in b) for b in ds.as_numpy_iterator()]


def _write_image(path, seed, shape=(20, 24, 3), fmt="jpeg"):
    img = tf.constant(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))
    data = tf.io.encode_jpeg(img) if fmt == "jpeg" else tf.io.encode_png(img)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), data)


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imagenet"
    for split, n in (("train", 4), ("val", 2)):
        for c, cls in enumerate(("n01", "n02", "n03")):
            for i in range(n):
                _write_image(root / split / cls / f"{i}.JPEG", 10 * c + i)
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    return root


def test_imagenet_datasets_from_image_folder(image_folder):
    data = imagenet.imagenet_datasets(str(image_folder), image_size=16, batch_size=4,
                                    seed=1, epochs=2)
    assert data.num_classes == 3 and data.class_names == ("n01", "n02", "n03")
    assert data.train_size == 12 and data.validation_size == 6
    assert data.steps_per_epoch == 3
    train = _collect(data.train)
    assert len(train) == 6 and train[0][0].shape == (4, 16, 16, 3)
    assert train[0][0].dtype == np.float32 and train[0][1].dtype == np.int64
    assert sorted(np.concatenate([b[1] for b in train[:3]]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    val = _collect(data.validation)
    assert [len(b[1]) for b in val] == [4, 2] and val[0][0].shape == (4, 16, 16, 3)
    assert np.concatenate([b[1] for b in val]).tolist() == [0, 0, 1, 1, 2, 2]
    resumed = imagenet.imagenet_datasets(str(image_folder), image_size=16, batch_size=4,
                                       seed=1, initial_epoch=1, epochs=2)
    for a, b in zip(train[3:], _collect(resumed.train)):
        np.testing.assert_array_equal(a[0], b[0])


def test_eval_transform_resizes_shorter_side_and_centre_crops():
    img = tf.reshape(tf.range(20 * 40, dtype=tf.float32), [20, 40, 1])
    out = imagenet.resize_shorter_and_center_crop(img, 20, 10)
    np.testing.assert_array_equal(out.numpy(), img.numpy()[5:15, 15:25])


def test_imagenet_folder_errors(image_folder, tmp_path):
    import shutil
    shutil.rmtree(image_folder / "val")
    with pytest.raises(FileNotFoundError,
                       match=r"Image folder '.*val' does not exist; expected layout: "
                             r"DIR/train/<class>/\*\.JPEG and DIR/val/<class>/\*\.JPEG"):
        imagenet.imagenet_datasets(str(image_folder), image_size=16, batch_size=2)
    with pytest.raises(FileNotFoundError, match="neither 'imagenet2012' nor an existing"):
        imagenet.imagenet_datasets(str(tmp_path / "missing"), image_size=16, batch_size=2)


def test_load_image_files(tmp_path):
    _write_image(tmp_path / "a.jpg", 0, shape=(8, 8, 3))
    _write_image(tmp_path / "b.png", 1, shape=(12, 10, 3), fmt="png")
    out = imagenet.load_image_files([tmp_path / "a.jpg", tmp_path / "b.png"], image_size=8)
    assert out.shape == (2, 8, 8, 3) and out.dtype == np.uint8
    png = imagenet.load_image_files([tmp_path / "b.png"])
    expected = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    np.testing.assert_array_equal(png[0], expected)  # PNG is lossless
    gray = imagenet.load_image_files([tmp_path / "b.png"], channels=1)
    assert gray.shape == (1, 12, 10, 1)
    with pytest.raises(ValueError, match="different shapes.*pass image_size"):
        imagenet.load_image_files([tmp_path / "a.jpg", tmp_path / "b.png"])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Could not decode image file '.*bad\.jpg'"):
        imagenet.load_image_files([tmp_path / "bad.jpg"])
    with pytest.raises(FileNotFoundError, match=r"Image file '.*nope\.png' does not exist"):
        imagenet.load_image_files([tmp_path / "nope.png"])
