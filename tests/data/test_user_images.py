"""Tests for darts_tf.data.user_images through images.load_image_data: image folders, .npz files, offline tfds."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from darts_tf.data import images, user_images

# ---------------------------------------------------------------- builders of small data


def _digit_images(n, size=8):
    """`n` sklearn digits as uint8 (n, size, size) and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images[:n] * (255.0 / 16.0)).astype(np.uint8)
    if size != 8:
        x = np.repeat(np.repeat(x, size // 8, axis=1), size // 8, axis=2)
    return x, bunch.target[:n].astype(np.int64)


def _write_image(path, array, fmt="png"):
    array = np.asarray(array, np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    encoded = tf.io.encode_png(array) if fmt == "png" else tf.io.encode_jpeg(array, quality=100)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, encoded)


def _folder(root, classes=("cat", "dog", "emu"), per_class=(3, 2), test_dir="test", size=8, channels=1, seed=0):
    """root/train/<class>/*.png and root/<test_dir>/<class>/*.png of random pixels; returns root."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class[0]), (test_dir, per_class[1])):
        for c in classes:
            for i in range(n):
                _write_image(os.path.join(root, split, c, f"{i}.png"),
                             rng.integers(0, 256, (size, size, channels), dtype=np.uint8))
    return str(root)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _good_arrays(n_train=12, n_test=6, size=8, classes=3):
    rng = np.random.default_rng(1)
    return dict(x_train=rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
                y_train=np.arange(n_train) % classes,
                x_test=rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
                y_test=np.arange(n_test) % classes)


# ---------------------------------------------------------------- folders


def test_folder_of_grayscale_digits_keeps_labels_and_sorted_class_names(tmp_path):
    x, y = _digit_images(30)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for i, (image, label) in enumerate(zip(x, y)):
        split = "test" if i % 3 == 0 else "train"  # digits 0..9 repeat, so each class is in both splits
        _write_image(str(tmp_path / split / names[label] / f"{i:03d}.png"), image)
    d = images.load_image_data(str(tmp_path))
    assert d.class_names == tuple(sorted(names)) and d.num_classes == 10
    assert d.train_images.shape == (20, 8, 8, 1) and d.test_images.shape == (10, 8, 8, 1)
    assert d.train_images.dtype == np.uint8 and d.train_labels.dtype == np.int64
    assert d.name == str(tmp_path)
    # each image comes back exactly (PNG is lossless) under the index of its folder name
    by_pixels = {x[i].tobytes(): names[y[i]] for i in range(30)}
    for image, label in zip(np.concatenate([d.train_images, d.test_images]),
                            np.concatenate([d.train_labels, d.test_labels])):
        assert d.class_names[label] == by_pixels[image[..., 0].tobytes()]
    assert (d.mean, d.std) == images.channel_stats(d.train_images)


def test_folder_of_rgb_with_val_split_and_alpha_dropped(tmp_path):
    root = _folder(tmp_path / "rgb", classes=("a", "b"), test_dir="val", channels=3)
    rgba = np.random.default_rng(3).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    _write_image(os.path.join(root, "train", "a", "rgba.png"), rgba)
    (tmp_path / "rgb" / "train" / ".DS_Store").write_bytes(b"\0junk")  # hidden files are skipped
    (tmp_path / "rgb" / "train" / "a" / ".hidden").write_bytes(b"\0junk")
    d = images.load_image_data(root)
    assert d.train_images.shape == (7, 8, 8, 3) and d.test_images.shape == (4, 8, 8, 3)
    assert d.class_names == ("a", "b") and list(d.train_labels) == [0, 0, 0, 0, 1, 1, 1]
    assert any(np.array_equal(im, rgba[..., :3]) for im in d.train_images)


def test_folder_mixing_gray_and_rgb_is_rgb(tmp_path):
    root = _folder(tmp_path / "mix", classes=("a", "b"), channels=1)
    _write_image(os.path.join(root, "test", "b", "colour.jpg"),
                 np.full((8, 8, 3), (200, 10, 10), np.uint8), fmt="jpeg")
    d = images.load_image_data(root)
    assert d.image_shape == (8, 8, 3) and len(d.mean) == 3
    gray = d.train_images[0]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])  # grayscale repeated into R, G, B


def test_folder_reads_bmp_and_the_first_frame_of_a_gif(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    root = _folder(tmp_path / "fmt", classes=("a", "b"), channels=3)
    red, blue = (np.full((8, 8, 3), c, np.uint8) for c in ((255, 0, 0), (0, 0, 255)))
    Image.fromarray(red).save(os.path.join(root, "train", "a", "x.bmp"))
    frames = [Image.fromarray(red), Image.fromarray(blue)]
    frames[0].save(os.path.join(root, "train", "b", "anim.gif"), save_all=True, append_images=frames[1:])
    d = images.load_image_data(root)
    assert d.train_images.shape == (8, 8, 8, 3)
    assert sum(np.array_equal(x, red) for x in d.train_images) == 2  # the BMP and the GIF's first frame
    assert not any(np.array_equal(x, blue) for x in d.train_images)


def test_folder_of_mixed_sizes_needs_image_size(tmp_path):
    root = _folder(tmp_path / "sizes", classes=("a", "b"))
    _write_image(os.path.join(root, "train", "b", "big.png"), np.zeros((12, 10, 1), np.uint8))
    big = os.path.join(root, "train", "b", "big.png")
    with pytest.raises(ValueError, match=rf"Images in '{root}' have different sizes: '.*0\.png' is 8x8 but "
                                         rf"'{big}' is 12x10\. Pass image_size=N \(--image_size N\)"):
        images.load_image_data(root)
    d = images.load_image_data(root, image_size=6)
    assert d.train_images.shape == (7, 6, 6, 1) and d.test_images.shape == (4, 6, 6, 1)


def test_resize_of_a_constant_image_keeps_its_value(tmp_path):
    root = str(tmp_path / "const")
    for split in ("train", "test"):
        for c, value in (("dark", 10), ("light", 250)):
            _write_image(os.path.join(root, split, c, "x.png"), np.full((5, 7, 1), value, np.uint8))
    d = images.load_image_data(root, image_size=16)
    assert d.image_shape == (16, 16, 1)
    assert set(np.unique(d.train_images[d.train_labels == 0])) == {10}
    assert set(np.unique(d.train_images[d.train_labels == 1])) == {250}


@pytest.mark.parametrize("layout, message", [
    ("no_train", r"Image folder '.*' has no train/ sub-directory; expected layout: DIR/train/<class>/"),
    ("no_test", r"Image folder '.*' has no test/ or val/ sub-directory; add one with the same class folders"),
    ("no_classes", r"'.*train' has no class folders; put each class's images in its own folder train/<class>/"),
    ("one_class", r"'.*train' has a single class folder 'a'; a classifier needs at least 2 classes"),
    ("differ", r"The class folders of '.*train' and '.*test' differ: only in train/: \['c'\], "
               r"only in test/: \['d'\]\. Give both splits the same class folders"),
    ("empty_class", r"Class folder '.*test/b' has no image files; put the images of class 'b' there"),
])
def test_malformed_folders_name_the_problem(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "no_train":
        (root / "test" / "a").mkdir(parents=True)
    elif layout == "no_test":
        _folder(root, classes=("a", "b"), per_class=(1, 0))  # writes no test/ at all
        assert not (root / "test").exists()
    elif layout == "no_classes":
        (root / "train").mkdir(parents=True)
        (root / "test").mkdir()
        (root / "train" / "loose.png").write_bytes(b"")
    elif layout == "one_class":
        _folder(root, classes=("a",))
    elif layout == "differ":
        _folder(root, classes=("a", "b", "c"))
        _folder(root, classes=("d",))
        for d in (root / "train" / "d", root / "test" / "c"):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    elif layout == "empty_class":
        _folder(root, classes=("a", "b"))
        for f in (root / "test" / "b").iterdir():
            f.unlink()
    with pytest.raises(ValueError, match=message):
        images.load_image_data(str(root))


@pytest.mark.parametrize("contents", [b"not an image at all", b"\x89PNG\r\n\x1a\n truncated"])
def test_corrupt_image_names_the_file(tmp_path, contents):
    root = _folder(tmp_path / "bad", classes=("a", "b"))
    bad = os.path.join(root, "train", "b", "broken.png")
    with open(bad, "wb") as f:
        f.write(contents)
    with pytest.raises(ValueError, match=rf"Cannot decode image file '{bad}' \(.*\); replace or remove it "
                                         r"\(readable formats: PNG, JPEG, BMP, GIF\)"):
        images.load_image_data(root)


def test_missing_paths_are_file_not_found(tmp_path):
    for missing in (str(tmp_path / "nope"), "nope.npz", "rel/dir", "darts_tf_nope/x.npz", "trailing/"):
        with pytest.raises(FileNotFoundError, match=rf"Dataset path '{missing}' does not exist; pass an existing "
                                                    r"image folder \(DIR/train/<class>/, DIR/test/<class>/\) or "
                                                    r"\.npz file"):
            images.load_image_data(missing)


def test_bare_name_of_an_existing_folder(tmp_path, monkeypatch):
    _folder(tmp_path / "mydata", classes=("a", "b"))
    (tmp_path / "notdata").mkdir()
    monkeypatch.chdir(tmp_path)
    assert images.load_image_data("mydata").class_names == ("a", "b")
    with pytest.raises(ValueError, match=r"Unknown dataset 'notdata'\..*The directory 'notdata' exists but has no "
                                         r"train/ sub-directory"):
        images.load_image_data("notdata")


def test_bad_image_size():
    with pytest.raises(ValueError, match=r"image_size must be a non-negative integer .*Received: image_size=-1"):
        images.load_image_data("digits", image_size=-1)
    with pytest.raises(ValueError, match=r"Received: image_size=2\.5"):
        images.load_image_data("digits", image_size=2.5)


# ---------------------------------------------------------------- npz


def test_npz_nhw_gets_a_channel_axis_and_default_class_names(tmp_path):
    arrays = _good_arrays()
    d = images.load_image_data(_npz(tmp_path / "g.npz", **arrays))
    assert d.train_images.shape == (12, 8, 8, 1) and d.test_images.shape == (6, 8, 8, 1)
    np.testing.assert_array_equal(d.train_images[..., 0], arrays["x_train"])
    assert d.num_classes == 3 and d.class_names == ("0", "1", "2")
    assert d.train_labels.dtype == np.int64 and d.name == str(tmp_path / "g.npz")
    assert (d.mean, d.std) == images.channel_stats(d.train_images)


def test_npz_nhwc_with_class_names_and_resize(tmp_path):
    rng = np.random.default_rng(2)
    path = _npz(tmp_path / "c.npz", x_train=rng.integers(0, 256, (8, 10, 10, 3), dtype=np.uint8),
                y_train=np.array([0, 1] * 4, np.uint8).reshape(-1, 1),  # (N, 1) as keras.datasets gives
                x_test=rng.integers(0, 256, (2, 10, 10, 3), dtype=np.uint8), y_test=np.array([1, 0]),
                class_names=np.array(["bird", "plane", "superman"]))
    d = images.load_image_data(path, image_size=4)
    assert d.train_images.shape == (8, 4, 4, 3) and d.test_images.shape == (2, 4, 4, 3)
    assert d.num_classes == 3 and d.class_names == ("bird", "plane", "superman")
    assert list(d.train_labels) == [0, 1] * 4


def test_npz_mixing_gray_and_rgb_splits_is_rgb(tmp_path):
    a = _good_arrays(classes=2)
    a["x_test"] = np.zeros((6, 8, 8, 3), np.uint8)
    d = images.load_image_data(_npz(tmp_path / "m.npz", **a))
    assert d.image_shape == (8, 8, 3) and d.test_images.shape == (6, 8, 8, 3)


def _bad(**changes):
    arrays = _good_arrays()
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize("arrays, message", [
    (_bad(x_test=None, y_test=None),
     r"'.*bad\.npz' is missing the keys \['x_test', 'y_test'\]; it has \['x_train', 'y_train'\]\. An image "
     r"\.npz holds x_train, y_train, x_test, y_test"),
    (_bad(x_train=np.zeros((12, 8, 8), np.float32)),
     r"x_train in '.*' must be uint8 \(0\.\.255\)\. Received: dtype=float32\. Convert it with"),
    (_bad(x_test=np.zeros((6, 8, 8, 2), np.uint8)),
     r"x_test in '.*' must be NHW \(grayscale\) or NHWC with C in \(1, 3\)\. Received: shape=\(6, 8, 8, 2\)"),
    (_bad(x_train=np.zeros((12, 64), np.uint8)), r"x_train .* Received: shape=\(12, 64\)"),
    (_bad(y_train=np.zeros(11, np.int64)), r"x_train in '.*' has 12 images but y_train has 11 labels"),
    (_bad(y_test=np.zeros(6, np.float32)),
     r"y_test in '.*' must hold integer class indices\. Received: dtype=float32"),
    (_bad(y_test=np.zeros((6, 2), np.int64)), r"y_test in '.*' must be a 1-D array .* Received: shape=\(6, 2\)"),
    (_bad(y_train=-np.ones(12, np.int64)), r"y_train in '.*' has negative labels \(min -1\)"),
    (_bad(y_test=np.full(6, 5), class_names=np.array(["a", "b", "c"])),
     r"y_test in '.*' has label 5, outside \[0, 3\) for the 3 class_names; class_names needs one name per class"),
    (_bad(class_names=np.array([1, 2, 3])), r"class_names in '.*' must be a 1-D array of strings\. Received: "
                                            r"dtype=int64"),
    (_bad(class_names=np.array(["a", "b", "a"])), r"class_names in '.*' repeats \['a'\]"),
    (_bad(y_train=np.zeros(12, np.int64), y_test=np.zeros(6, np.int64)),
     r"'.*' has 1 class \(labels 0\.\.0\); a classifier needs at least 2 classes"),
    (_bad(x_test=np.zeros((6, 9, 9), np.uint8)),
     r"x_train in '.*' has 8x8 images but x_test 9x9\. Pass image_size=N \(--image_size N\)"),
    (_bad(x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64)), r"x_test in '.*' holds no images"),
])
def test_malformed_npz_names_the_problem(tmp_path, arrays, message):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        images.load_image_data(path)


def test_npz_that_is_not_an_npz(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"'.*junk\.npz' is not a readable \.npz file .*np\.savez\(path, x_train="):
        images.load_image_data(str(tmp_path / "junk.npz"))
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"holds a single array, not an \.npz archive"):
        images.load_image_data(str(tmp_path / "single.npy"))
    np.savez(tmp_path / "obj.npz", **_good_arrays(), class_names=np.array(["a", None, "c"], dtype=object))
    with pytest.raises(ValueError, match=r"class_names in '.*obj\.npz' is an object array; save it as a string "
                                         r"array"):
        images.load_image_data(str(tmp_path / "obj.npz"))


# ---------------------------------------------------------------- ImageData, tfds names, offline


def test_image_data_class_names_default_and_check():
    x = np.zeros((2, 4, 4, 1), np.uint8)
    y = np.zeros(2, np.int64)
    d = images.ImageData(x, y, x, y, 3, "t", (0.5,), (0.2,))
    assert d.class_names == ("0", "1", "2")
    with pytest.raises(ValueError, match=r"ImageData 't' has num_classes=3 but 2 class_names; give one name per "
                                         r"class\. Received: class_names=\('a', 'b'\)"):
        images.ImageData(x, y, x, y, 3, "t", (0.5,), (0.2,), ("a", "b"))


def _named_tfds_builder():
    import tensorflow_datasets as tfds

    class DartsTfNamedImages(tfds.core.GeneratorBasedBuilder):
        """Two named classes of 6x6 RGB noise, generated offline."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(6, 6, 3)),
                    "label": tfds.features.ClassLabel(names=["ant", "bee"])}),
                supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(8), "test": self._generate_examples(4)}

        def _generate_examples(self, n):
            rng = np.random.default_rng(n)
            for i in range(n):
                yield i, {"image": rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "label": i % 2}

    return DartsTfNamedImages


def test_digits_and_tfds_class_names_and_resize(tmp_path):
    assert images.load_image_data("digits").class_names == tuple("0123456789")
    _named_tfds_builder()(data_dir=str(tmp_path)).download_and_prepare()
    d = images.load_image_data("darts_tf_named_images", data_dir=str(tmp_path), download=False, image_size=4)
    assert d.class_names == ("ant", "bee") and d.train_images.shape == (8, 4, 4, 3)
    assert d.test_images.shape == (4, 4, 4, 3) and d.mean == images.channel_stats(d.train_images)[0]
    versioned = images.load_image_data("darts_tf_named_images:1.0.0", data_dir=str(tmp_path), download=False)
    assert versioned.class_names == ("ant", "bee") and versioned.train_images.shape == (8, 6, 6, 3)


def test_community_name_is_refused_offline():
    with pytest.raises(ValueError, match=r"tfds dataset 'huggingface:mnist' is in a community namespace, which tfds "
                                         r"looks up over the network; it cannot be loaded with downloading disabled"):
        images.load_image_data("huggingface:mnist", download=False)


_OFFLINE_SCRIPT = r"""
import os, socket, sys, time
import numpy as np

attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network access attempted in an offline test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import tensorflow as tf
from tensorflow.python.lib.io import file_io

class _RefuseRemote:  # TF's C++ filesystems (gs://, s3://, http) do not go through Python sockets
    def __init__(self, inner):
        self._inner = inner
    def __getattr__(self, name):
        fn = getattr(self._inner, name)
        if not callable(fn):
            return fn
        def checked(*args, **kwargs):
            for a in args:
                s = a.decode("utf-8", "replace") if isinstance(a, bytes) else a
                if isinstance(s, str) and "://" in s:
                    attempts.append((name, s))
                    raise OSError(f"remote path {s!r} touched in an offline test")
            return fn(*args, **kwargs)
        return checked
file_io._pywrap_file_io = _RefuseRemote(file_io._pywrap_file_io)

from darts_tf.data import images
folder, npz, empty = sys.argv[1:4]
assert images.load_image_data(folder, download=False).num_classes == 2
assert "tensorflow_datasets" not in sys.modules, "a path source imported tensorflow_datasets"
assert images.load_image_data(npz, download=False).num_classes == 3
assert "tensorflow_datasets" not in sys.modules, "a path source imported tensorflow_datasets"
start = time.time()
try:
    images.load_image_data("cifar10", data_dir=empty, download=False)
except FileNotFoundError as e:
    assert "not prepared" in str(e) and "downloading is disabled" in str(e), e
else:
    raise AssertionError("cifar10 loaded from an empty data_dir")
elapsed = time.time() - start
assert not attempts, attempts
print(f"OFFLINE-OK {elapsed:.2f}")
"""


def test_offline_loading_never_touches_the_network(tmp_path):
    """Folder, npz and an unprepared tfds name with download=False, in a fresh interpreter (no tfds caches) whose
    Python sockets and TensorFlow remote filesystems (gs://, the tfds community catalogue) refuse every use."""
    folder = _folder(tmp_path / "f", classes=("a", "b"), per_class=(1, 1))
    npz = _npz(tmp_path / "n.npz", **_good_arrays())
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_GCE_CHECK": "true"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT, folder, npz, str(tmp_path / "empty")],
                         capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    elapsed = float(out.stdout.split("OFFLINE-OK")[1])
    assert elapsed < 5.0, f"the unprepared tfds dataset took {elapsed:.1f}s to refuse"


def test_path_sources_do_not_use_the_socket_in_process(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    start = time.time()
    assert images.load_image_data(_folder(tmp_path / "f", classes=("a", "b")), download=False).num_classes == 2
    assert images.load_image_data(_npz(tmp_path / "n.npz", **_good_arrays()), download=False).num_classes == 3
    with pytest.raises(FileNotFoundError, match=r"'cifar10' is not prepared at .* downloading is disabled"):
        images.load_image_data("cifar10", data_dir=str(tmp_path / "empty"), download=False)
    assert time.time() - start < 10


def test_resize_images_is_a_no_op_at_the_same_size():
    x = np.random.default_rng(0).integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    assert user_images.resize_images(x, 5) is x and user_images.resize_images(x, 0) is x
    assert user_images.resize_images(x, 2).shape == (3, 2, 2, 3)


def test_dataset_artifact_keeps_class_names(tmp_path):
    """components/artifacts stores ImageData.class_names; an artifact written before them reads as '0', '1', ..."""
    import json

    from components import artifacts

    d = images.load_image_data(_npz(tmp_path / "c.npz", **_good_arrays(), class_names=np.array(["x", "y", "z"])))
    artifacts.write_image_dataset(str(tmp_path / "ds"), d)
    assert artifacts.read_dataset(str(tmp_path / "ds"), "search").image_data().class_names == ("x", "y", "z")
    meta_path = tmp_path / "ds" / artifacts.METADATA_FILE
    meta = json.loads(meta_path.read_text())
    del meta["class_names"]
    meta_path.write_text(json.dumps(meta))
    old = artifacts.read_dataset(str(tmp_path / "ds"), "search", verify_hashes=True).image_data()
    assert old.class_names == ("0", "1", "2") and old.num_classes == 3
