"""The user's own images through the console scripts (issue 16): an image folder and an .npz made here, grayscale and
RGB, two sizes, run through darts-search (1 epoch), darts-derive, darts-train (1 epoch), darts-test, darts-export and
darts-predict, with the folder names as class names in the prediction; bad data is one error line, exit 2 and no
output directory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tests.helpers import ENV
from tests.image_folders import CLASSES, digit_images, write_folder

TINY_NET = ["--layers=3", "--init_channels=4", "--batch_size=16", "--epochs=1"]


def script(module, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", f"darts_tf.cli.{module}", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def metrics_of(proc):
    """The metrics JSON a training script prints last (after fit's per-epoch lines on stdout)."""
    out = proc.stdout
    return json.loads(out[out.index("{\n"):])


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A grayscale 8x8 folder: train/<class>/*.png (96 images), test/<class>/*.png (24)."""
    root = str(tmp_path_factory.mktemp("own") / "shapes")
    x, y = digit_images()
    write_folder(root, x[:96], y[:96], "train")
    write_folder(root, x[96:], y[96:], "test")
    return root


def test_a_folder_of_images_searches_derives_trains_tests_exports_and_predicts_with_its_class_names(folder, tmp_path):
    search, derived, run = tmp_path / "search", tmp_path / "derived", tmp_path / "run"
    ok(script("search", f"--dataset={folder}", f"--output_dir={search}", *TINY_NET, "--nodes=2",
              "--primitives=none,max_pool_3x3,skip_connect,sep_conv_3x3"))
    assert json.load(open(search / "run_config.json"))["dataset"] == folder
    ok(script("derive", f"--search_dir={search}", f"--output_dir={derived}", "--formats=png"))
    genotype = derived / "genotype.json"
    trained = metrics_of(ok(script("train", f"--genotype={genotype}", f"--dataset={folder}", f"--output_dir={run}",
                                   *TINY_NET, "--cutout_length=0", "--noauxiliary")))
    assert (trained["dataset"], trained["eval_examples"]) == (folder, 24)
    info = json.load(open(run / "data_info.json"))
    assert (info["class_names"], info["image_shape"], info["streamed"]) == (list(CLASSES), [8, 8, 1], False)

    tested = json.loads(ok(script("test", f"--model={run}")).stdout.strip().splitlines()[-1])
    assert (tested["num_examples"], tested["top1_accuracy"]) == (24, pytest.approx(trained["test_top1_accuracy"]))

    ok(script("export", f"--model={run}"))
    picture = os.path.join(folder, "test", CLASSES[1], sorted(os.listdir(os.path.join(folder, "test", CLASSES[1])))[0])
    lines = [json.loads(line) for line in ok(script("predict", f"--export_dir={run / 'saved_model'}", "--top_k=3",
                                                    "--json", picture)).stdout.strip().splitlines()]
    assert [line["path"] for line in lines] == [picture]
    assert sorted(c["class"] for c in lines[0]["top_k"]) == sorted(CLASSES)
    assert sum(c["probability"] for c in lines[0]["top_k"]) == pytest.approx(1.0, abs=1e-4)


def test_an_npz_of_rgb_images_with_class_names_trains_and_tests(tmp_path):
    x, y = digit_images(rgb=True, size=10)
    path = tmp_path / "tinted.npz"
    np.savez(path, x_train=x[:96], y_train=y[:96], x_test=x[96:], y_test=y[96:], class_names=np.array(CLASSES))
    run = tmp_path / "run"
    trained = metrics_of(ok(script("train", "--genotype=DARTS_V2", f"--dataset={path}", f"--output_dir={run}",
                                   *TINY_NET, "--cutout_length=0", "--noauxiliary", "--flip")))
    assert trained["eval_examples"] == 24
    info = json.load(open(run / "data_info.json"))
    assert (info["class_names"], info["image_shape"]) == (list(CLASSES), [10, 10, 3])
    assert json.load(open(run / "run_config.json"))["flip"] is True
    tested = json.loads(ok(script("test", f"--model={run}")).stdout.strip().splitlines()[-1])
    assert tested["top1_accuracy"] == pytest.approx(trained["test_top1_accuracy"])

    import tensorflow as tf

    ok(script("export", f"--model={run}"))
    picture = str(tmp_path / "tinted.png")
    tf.io.write_file(picture, tf.io.encode_png(x[100]))
    (line,) = [json.loads(line) for line in ok(script("predict", f"--export_dir={run / 'saved_model'}", "--top_k=1",
                                                      "--json", picture)).stdout.strip().splitlines()]
    assert line["path"] == picture and line["top_k"][0]["class"] in CLASSES


def test_a_folder_of_two_image_sizes_needs_image_size_and_trains_with_it(tmp_path):
    root = str(tmp_path / "mixed")
    small, y_small = digit_images(size=8, per_class=20)
    large, y_large = digit_images(size=12, per_class=20, seed=1)
    write_folder(root, small[:48], y_small[:48], "train")
    write_folder(os.path.join(root, "more"), large[:48], y_large[:48], "train")
    for label in range(len(CLASSES)):  # one folder per class: 8x8 and 12x12 images side by side
        src = os.path.join(root, "more", "train", CLASSES[label])
        for name in os.listdir(src):
            os.rename(os.path.join(src, name), os.path.join(root, "train", CLASSES[label], "l" + name))
    write_folder(root, small[48:], y_small[48:], "val")
    run = tmp_path / "run"
    proc = script("train", "--genotype=DARTS_V2", f"--dataset={root}", f"--output_dir={run}", *TINY_NET)
    assert proc.returncode == 2 and len(error_lines(proc)) == 1, proc.stderr[-3000:]
    assert "--image_size" in error_lines(proc)[0]
    assert not run.exists()
    trained = metrics_of(ok(script("train", "--genotype=DARTS_V2", f"--dataset={root}", f"--output_dir={run}",
                                   "--image_size=10", *TINY_NET, "--cutout_length=0", "--noauxiliary")))
    assert trained["eval_examples"] == 12  # the val/ split stands in for test/
    assert json.load(open(run / "data_info.json"))["image_shape"] == [10, 10, 1]


def _one_class(root):
    x, y = digit_images(per_class=10)
    write_folder(root, x[y == 0], y[y == 0], "train")
    write_folder(root, x[y == 0], y[y == 0], "test")


def _corrupt_image(root):
    x, y = digit_images(per_class=10)
    write_folder(root, x, y, "train")
    write_folder(root, x, y, "test")
    with open(os.path.join(root, "train", CLASSES[2], "bad.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")


def _npz_missing_keys(root):
    x, y = digit_images(per_class=10)
    os.makedirs(root)
    np.savez(os.path.join(root, "data.npz"), x_train=x, y_train=y)


@pytest.mark.parametrize("make, dataset, message", [
    (_one_class, "", r"at least 2 classes"),
    (_corrupt_image, "", r"bad\.png"),
    (_npz_missing_keys, "data.npz", r"x_test"),
])
def test_bad_data_is_one_error_line_exit_2_and_no_output_directory(tmp_path, make, dataset, message):
    import re

    root = str(tmp_path / "data")
    make(root)
    run = tmp_path / "run"
    for module, args in (("train", ["--genotype=DARTS_V2"]), ("search", ["--nodes=1"])):
        proc = script(module, *args, f"--dataset={os.path.join(root, dataset) if dataset else root}",
                      f"--output_dir={run}", *TINY_NET)
        assert proc.returncode == 2 and len(error_lines(proc)) == 1, (module, proc.stderr[-3000:])
        assert re.search(message, error_lines(proc)[0]), error_lines(proc)
        assert not run.exists(), module
