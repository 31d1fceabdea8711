"""Artifact readers/writers: layouts, hashes, lineage, atomic publication, errors naming stage and path."""

import json
import os

import numpy as np
import pytest

from components import artifacts
from darts_tf import genotypes as gt
from darts_tf.data.images import ImageData

LINEAGE = {"stage": "derive", "search_uri": "/runs/search", "seed": 3, "flags": {"epochs": 1}, "dataset_hash": "abc"}


def _image_data(n=20):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64)
    return ImageData(x, y, x[:5], y[:5], 10, "tiny", (0.5,), (0.25,))


def test_image_dataset_round_trip_records_sizes_and_hashes(tmp_path):
    written = artifacts.write_image_dataset(str(tmp_path / "ds"), _image_data())
    meta = written.metadata
    assert meta["splits"]["train"]["size"] == 20 and meta["splits"]["test"]["size"] == 5
    assert len(meta["dataset_hash"]) == 64
    data = artifacts.read_dataset(str(tmp_path / "ds"), "search").image_data()
    assert data.train_images.dtype == np.uint8 and data.train_images.shape == (20, 8, 8, 1)
    np.testing.assert_array_equal(data.test_labels, _image_data().test_labels)
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary directory left behind


def test_dataset_hash_check_detects_a_changed_split(tmp_path):
    path = str(tmp_path / "ds")
    artifacts.write_image_dataset(path, _image_data())
    other = _image_data(21)
    np.savez(os.path.join(path, "train.npz"), images=other.train_images, labels=other.train_labels)
    with pytest.raises(artifacts.ArtifactError, match=r"\[stage 'select'\].*'train' does not match"):
        artifacts.read_dataset(path, "select", verify_hashes=True)


def test_text_dataset_copies_the_three_splits(tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    for name in ("train", "valid", "test"):
        (src / f"{name}.txt").write_text(" a b c \n d e \n")
    ds = artifacts.write_text_dataset(str(tmp_path / "ds"), str(src), "toy")
    assert ds.kind == "text" and ds.metadata["splits"]["train"]["size"] == 7  # 5 words + 2 <eos>
    assert os.path.isfile(os.path.join(ds.corpus_dir, "valid.txt"))


def test_genotype_artifact_carries_lineage(tmp_path):
    g = gt.CNN_GENOTYPES["DARTS_V2"]
    art = artifacts.write_genotype(str(tmp_path / "g"), g, LINEAGE, "derive")
    read = artifacts.read_genotype(str(tmp_path / "g"), "select")
    assert read.genotype == g and read.lineage["seed"] == 3 and read.lineage["dataset_hash"] == "abc"
    assert gt.load_genotype_file(art.json_path) == g


def test_genotype_writer_requires_lineage(tmp_path):
    with pytest.raises(ValueError, match="lineage needs"):
        artifacts.write_genotype(str(tmp_path / "g"), gt.CNN_GENOTYPES["DARTS_V2"], {"seed": 1}, "derive")
    assert not os.path.exists(tmp_path / "g")


@pytest.mark.parametrize("corruption, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"kind": "cnn", "normal": [["conv_9x9", 0]], "normal_concat": [2], "reduce": [], "reduce_concat": []}),
     "fails validation"),
])
def test_corrupt_genotype_names_the_stage_and_the_path(tmp_path, corruption, message):
    path = str(tmp_path / "g")
    artifacts.write_genotype(path, gt.CNN_GENOTYPES["DARTS_V2"], LINEAGE, "derive")
    with open(os.path.join(path, "genotype.json"), "w") as f:
        f.write(corruption)
    with pytest.raises(artifacts.ArtifactError, match=rf"\[stage 'select'\] artifact '{path}'.*{message}"):
        artifacts.read_genotype(path, "select")


def test_reader_refuses_an_artifact_of_another_type(tmp_path):
    artifacts.write_metrics(str(tmp_path / "m"), {"a": 1}, "evaluate")
    with pytest.raises(artifacts.ArtifactError, match="is a 'Metrics' artifact; expected 'Genotype'"):
        artifacts.read_genotype(str(tmp_path / "m"), "select")
    with pytest.raises(artifacts.ArtifactError, match="is not a directory"):
        artifacts.read_genotype(str(tmp_path / "missing"), "select")


def test_a_failing_writer_publishes_nothing(tmp_path):
    path = str(tmp_path / "m")
    with pytest.raises(RuntimeError, match="training died"):
        with artifacts.metrics_writer(path, "evaluate") as tmp:
            with open(os.path.join(tmp, "metrics.json"), "w") as f:
                f.write('{"half": ')
            raise RuntimeError("training died")
    assert os.listdir(tmp_path) == []


def test_a_writer_whose_output_fails_verification_publishes_nothing(tmp_path):
    path = str(tmp_path / "m")
    with pytest.raises(artifacts.ArtifactError, match="missing file 'artifact.json'"):
        with artifacts.metrics_writer(path, "evaluate"):
            pass  # never calls finish_metrics
    assert os.listdir(tmp_path) == []


def test_rewriting_replaces_an_existing_artifact_atomically(tmp_path):
    path = str(tmp_path / "m")
    os.makedirs(path)  # an orchestrator may create the output location first
    artifacts.write_metrics(path, {"a": 1}, "evaluate")
    artifacts.write_metrics(path, {"a": 2}, "evaluate")
    assert artifacts.read_metrics(path, "transfer") == {"a": 2}
    assert os.listdir(tmp_path) == ["m"]


def test_search_run_and_pictures(tmp_path):
    g = gt.CNN_GENOTYPES["DARTS_V2"]
    with artifacts.search_run_writer(str(tmp_path / "s")) as tmp:
        out = artifacts.search_output_dir(tmp)
        os.makedirs(out)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump({"history": []}, f)
        artifacts.finish_search_run(tmp, "cnn", gt.CNN_PRIMITIVES, LINEAGE, {"alpha_normal": np.zeros((14, 8))}, g)
    run = artifacts.read_search_run(str(tmp_path / "s"), "derive")
    assert run.kind == "cnn" and run.alphas()["alpha_normal"].shape == (14, 8)
    pics = artifacts.write_cell_pictures(str(tmp_path / "p"), g)
    assert [os.path.basename(p) for p in pics.paths("png")] == ["normal.png", "reduction.png"]
    assert len(pics.paths("pdf")) == 2
