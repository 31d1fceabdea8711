"""What the Kubeflow UI shows: the artifacts' KFP metadata (type, size, hashes, seed, lineage) and the Markdown /
HTML pages (genotype card, cell pictures, selection table)."""

import json
import os
import types

import numpy as np
import pytest

from components import artifacts, reports
from darts_tf import genotypes as gt
from darts_tf.data.images import ImageData

LINEAGE = {"stage": "derive", "search_uri": "/runs/search", "seed": 3, "flags": {"epochs": 1}, "dataset_hash": "abc",
           "dataset": "digits"}


def _kfp_artifact(path):
    return types.SimpleNamespace(path=path, metadata={})


def test_dataset_metadata_has_the_hash_and_split_sizes(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, 20).astype(np.int64)
    written = artifacts.write_image_dataset(str(tmp_path / "ds"), ImageData(x, y, x[:5], y[:5], 10, "tiny", (0.5,),
                                                                            (0.25,)))
    out = _kfp_artifact(written.path)
    reports.describe(out)
    meta = out.metadata
    assert meta["darts_type"] == "Dataset" and meta["dataset_hash"] == written.dataset_hash
    assert meta["splits"]["train"]["size"] == 20 and len(meta["splits"]["test"]["sha256"]) == 64
    assert meta["num_files"] == 3 and meta["size_bytes"] > 0 and meta["num_classes"] == 10
    json.dumps(meta)  # KFP stores it as a protobuf Struct: JSON only


def test_search_run_and_genotype_metadata_carry_seed_hashes_and_lineage(tmp_path):
    genotype = gt.CNN_GENOTYPES["DARTS_V2"]
    path = str(tmp_path / "search_run")
    with artifacts.search_run_writer(path) as tmp:
        os.makedirs(artifacts.search_output_dir(tmp))
        with open(os.path.join(artifacts.search_output_dir(tmp), "metrics.json"), "w") as f:
            json.dump({"history": []}, f)
        artifacts.finish_search_run(tmp, "cnn", list(gt.CNN_PRIMITIVES), {**LINEAGE, "stage": "search",
                                    "epochs_done": 50, "resumed_after_epoch": 17},
                                    {"alpha_normal": np.zeros((14, 8)), "alpha_reduce": np.ones((14, 8))}, genotype)
    meta = artifacts.kfp_metadata(path)
    assert meta["darts_type"] == "SearchRun" and meta["seed"] == 3 and meta["epochs_done"] == 50
    assert meta["resumed_after_epoch"] == 17 and len(meta["alphas_sha256"]) == 64
    assert meta["genotype_sha256"] == artifacts.genotype_sha256(genotype) and meta["dataset_hash"] == "abc"
    assert "flags" not in meta  # the full record stays in the artifact
    written = artifacts.write_genotype(str(tmp_path / "g"), genotype, LINEAGE, "derive")
    meta = artifacts.kfp_metadata(written.path)
    assert (meta["darts_type"], meta["seed"], meta["search_uri"]) == ("Genotype", 3, "/runs/search")
    assert meta["genotype_sha256"] == artifacts.genotype_sha256(gt.genotype_from_json(gt.genotype_to_json(genotype)))
    json.dumps(meta)


def test_the_genotype_card_lists_every_edge_and_the_lineage(tmp_path):
    chosen = artifacts.write_genotype(str(tmp_path / "g"), gt.CNN_GENOTYPES["DARTS_V2"], LINEAGE, "derive")
    card = reports.genotype_markdown(chosen, "Derived genotype")
    assert card.startswith("# Derived genotype (CNN)")
    assert "## normal cell" in card and "## reduction cell" in card
    assert card.count("| `sep_conv_3x3` |") + card.count("`sep_conv_3x3` |") >= 1
    assert "| seed | `3` |" in card and "| dataset_hash | `abc` |" in card
    edges = [line for line in card.splitlines() if line.startswith("| ") and line.endswith("` |") and "`" in line
             and line.split("|")[1].strip().isdigit()]
    assert len(edges) == 16  # 8 edges per CNN cell
    rnn = artifacts.write_genotype(str(tmp_path / "r"), gt.RNN_GENOTYPES["DARTS_V2"], LINEAGE, "derive")
    assert "## recurrent cell" in reports.genotype_markdown(rnn)


def test_the_pictures_page_inlines_every_png(tmp_path):
    pytest.importorskip("graphviz")
    genotype = gt.CNN_GENOTYPES["DARTS_V2"]
    pictures = artifacts.write_cell_pictures(str(tmp_path / "pictures"), genotype, formats=("png",))
    chosen = artifacts.write_genotype(str(tmp_path / "g"), genotype, LINEAGE, "derive")
    page = reports.pictures_html(pictures, chosen)
    assert page.count("src='data:image/png;base64,") == 2 and "normal cell" in page and "reduction cell" in page
    assert "search seed 3" in page
    path = reports.write_page(str(tmp_path / "out" / "cell_pictures"), page)
    assert open(path).read() == page
    meta = artifacts.kfp_metadata(pictures.path)
    assert meta["darts_type"] == "CellPictures" and sorted(meta["files"]) == sorted(pictures.files)


def test_the_selection_table_marks_the_best_candidate():
    table = {"metric": "validation_accuracy", "higher_is_better": True, "best": 1, "candidates": [
        {"candidate": 0, "seed": 1, "validation_accuracy": 0.5, "genotype": "G0", "search_uri": "/s/1"},
        {"candidate": 1, "seed": 2, "validation_accuracy": 0.75, "genotype": "G1", "search_uri": "/s/2"}]}
    text = reports.selection_markdown(table)
    assert "higher is better" in text and "| 1 **(best)** | 2 | 0.75 | `G1` | /s/2 |" in text
    assert "| 0 | 1 | 0.5 | `G0` | /s/1 |" in text
