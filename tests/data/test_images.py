"""Tests for darts_tf.data.images: in-memory datasets and resumable pipelines."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from darts_tf.data import augment, images


class DartsTfTinyImages(tfds.core.GeneratorBasedBuilder):
    """A 3-class 8x8 RGB dataset generated offline, standing in for cifar10."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(num_classes=3)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30, 0),
                "test": self._generate_examples(9, 1)}

    def _generate_examples(self, n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            yield i, {"image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                      "label": i % 3}


class DartsTfOfflineImages(DartsTfTinyImages):
    """Its 'download' fails, like cifar10 on a machine without internet."""

    def _split_generators(self, dl_manager):
        raise ConnectionError("Could not resolve host: www.cs.toronto.edu")


def _arrays(n=40, size=8, channels=3):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    return x, np.arange(n, dtype=np.int64)  # labels = example ids


MEAN3, STD3 = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


# ---------------------------------------------------------------- loading


def test_digits_split_is_stratified_and_deterministic():
    d = images.load_image_data("digits")
    assert d.train_images.shape[1:] == (8, 8, 1) and d.train_images.dtype == np.uint8
    assert len(d.train_images) + len(d.test_images) == 1797
    assert abs(len(d.test_images) / 1797 - 0.2) < 0.01
    assert d.train_labels.dtype == np.int64 and d.num_classes == 10
    assert d.train_images.max() == 255 and d.train_images.min() == 0
    ratio = np.bincount(d.test_labels) / np.bincount(d.train_labels)
    assert np.all(np.abs(ratio - 0.25) < 0.03)
    again = images.load_image_data("digits")
    np.testing.assert_array_equal(again.test_images, d.test_images)
    mean, std = images.channel_stats(d.train_images)
    assert d.mean == mean and d.std == std and len(d.mean) == 1


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match=r"Unknown dataset 'foo'\. Known: cifar10, "
                                         r"cifar100, digits, or any tfds"):
        images.load_image_data("foo")


def test_tfds_path_reads_a_prepared_dataset(tmp_path):
    tfds.builder("darts_tf_tiny_images", data_dir=tmp_path).download_and_prepare()
    d = images.load_image_data("darts_tf_tiny_images", data_dir=tmp_path,
                               download=False)
    assert d.train_images.shape == (30, 8, 8, 3) and d.test_images.shape == (9, 8, 8, 3)
    assert d.train_images.dtype == np.uint8 and d.train_labels.dtype == np.int64
    assert d.num_classes == 3 and d.name == "darts_tf_tiny_images"
    assert sorted(d.train_labels.tolist()) == sorted([i % 3 for i in range(30)])
    expected = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert any(np.array_equal(x, expected) for x in d.train_images)
    assert d.mean == images.channel_stats(d.train_images)[0]


def test_tfds_path_downloads_when_allowed(tmp_path):
    d = images.load_image_data("darts_tf_tiny_images", data_dir=tmp_path)
    assert d.train_images.shape == (30, 8, 8, 3)


def test_unprepared_tfds_dataset_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"'cifar10' is not prepared at '.*cifar10.*downloading is "
                             r"disabled.*tfds build cifar10 --data_dir DIR"):
        images.load_image_data("cifar10", data_dir=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError,
                       match=r"could not be downloaded \(ConnectionError.*"
                             r"tfds build darts_tf_offline_images --data_dir DIR"):
        images.load_image_data("darts_tf_offline_images", data_dir=str(tmp_path))


def test_cifar_normalisation_constants():
    assert images.CIFAR10_MEAN == (0.49139968, 0.48215827, 0.44653124)
    assert images.CIFAR10_STD == (0.24703233, 0.24348505, 0.26158768)
    assert images._KNOWN_STATS["cifar100"][0][0] == pytest.approx(0.5071, abs=1e-4)


def test_split_train_validation():
    x, y = _arrays(10)
    (xa, ya), (xb, yb) = images.split_train_validation(x, y, 0.5, seed=1)
    assert len(ya) == len(yb) == 5
    assert sorted(np.concatenate([ya, yb]).tolist()) == list(range(10))
    np.testing.assert_array_equal(xa, x[ya])
    (_, ya2), _ = images.split_train_validation(x, y, 0.5, seed=1)
    (_, ya3), _ = images.split_train_validation(x, y, 0.5, seed=2)
    np.testing.assert_array_equal(ya, ya2)
    assert not np.array_equal(ya, ya3)
    with pytest.raises(ValueError, match=r"train_portion must be in \(0, 1\); "
                                         r"received train_portion=1\.0"):
        images.split_train_validation(x, y, 1.0, seed=1)
    with pytest.raises(ValueError, match="leaves one split empty"):
        images.split_train_validation(x, y, 0.05, seed=1)


# ---------------------------------------------------------------- augmentation


def _collect(ds):
    return [tuple(np.asarray(t) for t in b) for b in ds.as_numpy_iterator()]


def test_epoch_dataset_plain_is_ordered_normalised_data():
    x, y = _arrays(10)
    batches = _collect(images.epoch_dataset(x, y, 4, seed=0, epoch=0, mean=MEAN3,
                                            std=STD3, shuffle=False))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    xs = np.concatenate([b[0] for b in batches])
    np.testing.assert_allclose(xs, augment.normalize(x, MEAN3, STD3).numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    dropped = _collect(images.epoch_dataset(x, y, 4, seed=0, epoch=0, mean=MEAN3,
                                            std=STD3, drop_remainder=True))
    assert len(dropped) == 2 and dropped[0][0].dtype == np.float32


def test_epoch_dataset_shuffles_per_epoch_and_seed():
    x, y = _arrays(20)

    def order(seed, epoch):
        ds = images.epoch_dataset(x, y, 20, seed=seed, epoch=epoch, mean=MEAN3, std=STD3)
        return _collect(ds)[0][1]

    a = order(0, 0)
    assert sorted(a.tolist()) == list(range(20))
    np.testing.assert_array_equal(a, order(0, 0))
    assert not np.array_equal(a, order(0, 1)) and not np.array_equal(a, order(1, 0))


def test_multi_epoch_dataset_resumes_exactly():
    x, y = _arrays(20)
    aug = images.AugmentConfig(crop_padding=1, flip=True, cutout_length=3)
    kw = dict(seed=3, mean=MEAN3, std=STD3, augment=aug)
    full, steps = images.multi_epoch_dataset(x, y, 6, initial_epoch=0, epochs=3, **kw)
    resumed, steps2 = images.multi_epoch_dataset(x, y, 6, initial_epoch=2, epochs=3, **kw)
    assert steps == steps2 == 3
    full, resumed = _collect(full), _collect(resumed)
    assert len(full) == 9 and len(resumed) == 3
    single = _collect(images.epoch_dataset(x, y, 6, epoch=2, drop_remainder=True, **kw))
    for a, b, c in zip(full[6:], resumed, single):
        for u, v, w in zip(a, b, c):
            np.testing.assert_array_equal(u, v)
            np.testing.assert_array_equal(u, w)
    # Same example, different epochs -> different augmentation.
    e0 = {int(l): im for l, im in zip(full[0][1], full[0][0])}
    e1 = {int(l): im for b in full[3:6] for l, im in zip(b[1], b[0])}
    common = set(e0) & set(e1)
    assert common and any(not np.array_equal(e0[k], e1[k]) for k in common)


def test_search_dataset_zips_disjoint_halves_reshuffled_every_epoch():
    x, y = _arrays(40)
    ds, steps = images.search_dataset(x, y, 8, 0.6, seed=0, initial_epoch=0, epochs=2,
                                      augment=None, mean=MEAN3, std=STD3)
    assert steps == 2  # min(24 // 8, 16 // 8)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 2 * steps
    assert set(batches[0]) == {"train", "validation"}
    assert batches[0]["train"][0].shape == (8, 8, 8, 3)
    (_, y_w), (_, y_a) = images.split_train_validation(x, y, 0.6, seed=0)
    for b in batches:
        assert set(b["train"][1]) <= set(y_w) and set(b["validation"][1]) <= set(y_a)
    assert not np.array_equal(batches[0]["train"][1], batches[2]["train"][1])
    assert not np.array_equal(batches[0]["validation"][1], batches[2]["validation"][1])
    resumed, _ = images.search_dataset(x, y, 8, 0.6, seed=0, initial_epoch=1, epochs=2,
                                       augment=None, mean=MEAN3, std=STD3)
    for a, b in zip(batches[2:], resumed.as_numpy_iterator()):
        np.testing.assert_array_equal(a["validation"][0], b["validation"][0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=512), r"batch_size=512 is larger than the alpha-training split "
                           r"\(300 examples\); lower --batch_size or raise --train_portion"),
    (dict(batch_size=400, train_portion=0.3), r"batch_size=400 is larger than the "
                                              r"weight-training split \(300 examples\)"),
    (dict(train_portion=0.0), r"train_portion must be in \(0, 1\)"),
    (dict(epochs=0), r"epochs must be >= 1; received epochs=0"),
    (dict(initial_epoch=5), r"initial_epoch must be in \[0, epochs\); received "
                            r"initial_epoch=5, epochs=5"),
])
def test_search_dataset_errors(kwargs, message):
    x, y = np.zeros((1000, 4, 4, 3), np.uint8), np.zeros(1000, np.int64)
    args = dict(batch_size=64, train_portion=0.7, seed=0, initial_epoch=0, epochs=5,
                augment=None, mean=MEAN3, std=STD3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        images.search_dataset(x, y, **args)


# ---------------------------------------------------------------- files
