"""darts-derive: the genotype of a search directory's alphas; an unfinished search is derived from its last finished
epoch, non-finite or damaged alphas are refused with one error line and exit status 2."""

import os
import subprocess
import sys

import numpy as np
import pytest

from darts_tf import genotypes as gt
from darts_tf.io_utils import atomic_savez, write_json
from darts_tf.run_files import RunFiles

from tests.helpers import ENV

PRIMITIVES = "none,max_pool_3x3,skip_connect,sep_conv_3x3"


def derive(search_dir, output_dir):
    """darts-derive in a subprocess (a second darts-* script imported here would define its absl flags twice)."""
    return subprocess.run([sys.executable, "-m", "darts_tf.cli.derive", f"--search_dir={search_dir}",
                           f"--output_dir={output_dir}", "--formats=png"], env=ENV, capture_output=True, text=True,
                          timeout=300)


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def alphas(seed, epochs=None):
    rng = np.random.default_rng(seed)
    shape = (epochs, 14, 4) if epochs else (14, 4)
    return {"alpha_normal": rng.normal(size=shape), "alpha_reduce": rng.normal(size=shape)}


@pytest.fixture
def search_dir(tmp_path):
    files = RunFiles(str(tmp_path / "search"))
    write_json(files.run_config, {"epochs": 5, "primitives": PRIMITIVES})
    atomic_savez(files.alpha_history, alphas(0, epochs=3))
    return files


def test_an_unfinished_search_is_derived_from_its_last_finished_epoch_and_says_so(search_dir, tmp_path):
    proc = derive(search_dir.root, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (f"note: {search_dir.root} is an unfinished search (no alphas.npz): derived from the alphas after epoch 3 "
            f"of 5 ({search_dir.alpha_history}).") in proc.stderr.splitlines()
    out = str(tmp_path / "out" / "genotype.json")
    expected = gt.derive_from_alphas({k: v[-1] for k, v in alphas(0, epochs=3).items()}, primitives=PRIMITIVES.split(","))
    assert gt.load_genotype_file(out) == expected
    meta = gt.load_genotype_metadata(out)
    assert (meta["epoch"], meta["finished"], meta["alphas"]) == (3, False, search_dir.alpha_history)


def test_a_finished_search_is_derived_from_its_final_alphas(search_dir, tmp_path):
    atomic_savez(search_dir.alphas, alphas(1))
    proc = derive(search_dir.root, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unfinished" not in proc.stderr
    out = str(tmp_path / "out" / "genotype.json")
    assert gt.load_genotype_file(out) == gt.derive_from_alphas(alphas(1), primitives=PRIMITIVES.split(","))
    assert gt.load_genotype_metadata(out)["finished"] is True


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_alphas_are_refused_with_exit_2(search_dir, tmp_path, bad):
    atomic_savez(search_dir.alphas, {k: np.full_like(v, bad) for k, v in alphas(1).items()})
    proc = derive(search_dir.root, tmp_path / "out")
    kind = "nan" if np.isnan(bad) else "inf"
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc) == [
        f"error: The alphas in {search_dir.alphas} are not finite: alpha_normal (56 of 56 values are {kind}), "
        f"alpha_reduce (56 of 56 values are {kind}). The search diverged; no genotype is derived from them. Run it "
        f"again with a lower --arch_learning_rate or --learning_rate."]
    assert not os.path.exists(tmp_path / "out")


def test_a_damaged_alpha_file_is_refused_with_exit_2(search_dir, tmp_path):
    atomic_savez(search_dir.alphas, alphas(1))
    with open(search_dir.alphas, "r+b") as f:
        f.truncate(100)
    proc = derive(search_dir.root, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc) == [
        f"error: {search_dir.alphas} is damaged (truncated or not a darts_tf alpha file: BadZipFile: File is not a zip "
        f"file): run the search again, or restore a copy of {search_dir.alphas}."]


def test_a_directory_without_alphas_or_history_and_an_output_dir_that_is_a_file_are_refused(tmp_path):
    proc = derive(tmp_path / "nope", tmp_path / "out")
    assert proc.returncode == 2
    assert error_lines(proc) == [
        f"error: {tmp_path}/nope/alphas.npz does not exist, nor {tmp_path}/nope/alpha_history.npz: --search_dir must be a "
        f"darts-search or darts-rnn-search output directory with at least one finished epoch."]
    (tmp_path / "file").write_text("x")
    proc = derive(tmp_path / "nope", tmp_path / "file")
    assert proc.returncode == 2
    assert error_lines(proc) == [f"error: --output_dir {tmp_path}/file is a file, not a directory. Choose another "
                                 f"--output_dir or remove the file."]
