"""Tests for darts_tf.visualize and the darts-visualize script."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from darts_tf import genotypes
from darts_tf import visualize

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF-"
_LABELLED_EDGE = re.compile(r'^\s*"?([^"\s]+)"?\s*->\s*"?([^"\s]+)"?\s*\[.*label=(\w+)', re.M)
_EDGE = re.compile(r"->")


def _labelled_edges(dot_path):
    with open(dot_path) as f:
        return _LABELLED_EDGE.findall(f.read())


def _all_edges(dot_path):
    with open(dot_path) as f:
        return len(_EDGE.findall(f.read()))


def _magic(path, n):
    with open(path, "rb") as f:
        return f.read(n)


@needs_dot
def test_cnn_pictures_are_valid_png_and_pdf(tmp_path):
    written = visualize.plot_genotype(genotypes.CNN_GENOTYPES["DARTS_V2"], str(tmp_path))
    names = sorted(os.path.basename(p) for p in written)
    assert names == ["normal.dot", "normal.pdf", "normal.png", "reduction.dot", "reduction.pdf", "reduction.png"]
    for stem in ("normal", "reduction"):
        assert _magic(tmp_path / f"{stem}.png", 8) == PNG_MAGIC
        assert _magic(tmp_path / f"{stem}.pdf", 5) == PDF_MAGIC
    # nothing left behind from the temporary render directory
    assert sorted(os.listdir(tmp_path)) == names


@pytest.mark.parametrize("name, expected", [("DARTS_V2", 8), ("NASNet", 10), ("AmoebaNet", 10)])
def test_cnn_dot_has_one_labelled_edge_per_op(tmp_path, name, expected):
    genotype = genotypes.CNN_GENOTYPES[name]
    visualize.plot_genotype(genotype, str(tmp_path), formats=())
    for stem, edges, concat in (("normal", genotype.normal, genotype.normal_concat),
                                ("reduction", genotype.reduce, genotype.reduce_concat)):
        labelled = _labelled_edges(tmp_path / f"{stem}.dot")
        assert len(labelled) == expected == len(edges)
        state = lambda j: {0: "c_{k-2}", 1: "c_{k-1}"}.get(j, str(j - 2))
        want = sorted((state(pred), str(i // 2), op) for i, (op, pred) in enumerate(edges))
        assert sorted(labelled) == want
        # op edges plus one unlabelled edge per concatenated state into c_{k}
        assert _all_edges(tmp_path / f"{stem}.dot") == expected + len(concat)


def test_cnn_dot_colors_and_output(tmp_path):
    visualize.plot_genotype(genotypes.CNN_GENOTYPES["NASNet"], str(tmp_path), formats=())
    source = (tmp_path / "normal.dot").read_text()
    assert re.search(r'"c_\{k-2\}" \[fillcolor=darkseagreen2\]', source)
    assert re.search(r'"c_\{k-1\}" \[fillcolor=darkseagreen2\]', source)
    assert re.search(r'\b4 \[fillcolor=lightblue\]', source)
    assert re.search(r'"c_\{k\}" \[fillcolor=palegoldenrod\]', source)
    # NASNet's normal cell concatenates states 2..6, i.e. nodes 0..4
    into_output = re.findall(r'(\S+) -> "c_\{k\}"', source)
    assert into_output == ["0", "1", "2", "3", "4"]


def test_rnn_dot_edges(tmp_path):
    genotype = genotypes.RNN_GENOTYPES["DARTS_V2"]
    written = visualize.plot_genotype(genotype, str(tmp_path), formats=())
    assert [os.path.basename(p) for p in written] == ["recurrent.dot"]
    labelled = _labelled_edges(tmp_path / "recurrent.dot")
    assert len(labelled) == 8
    assert sorted(labelled) == sorted((str(pred), str(i + 1), op) for i, (op, pred) in enumerate(genotype.recurrent))
    source = (tmp_path / "recurrent.dot").read_text()
    assert '"x_{t}" -> 0' in source and '"h_{t-1}" -> 0' in source
    assert len(re.findall(r'-> "h_\{t\}"', source)) == len(genotype.concat) == 8


@needs_dot
def test_rnn_pictures(tmp_path):
    written = visualize.plot_genotype(genotypes.RNN_GENOTYPES["ENAS"], str(tmp_path), formats=["png", "pdf"])
    assert sorted(os.path.basename(p) for p in written) == ["recurrent.dot", "recurrent.pdf", "recurrent.png"]
    assert _magic(tmp_path / "recurrent.png", 8) == PNG_MAGIC
    assert _magic(tmp_path / "recurrent.pdf", 5) == PDF_MAGIC
    assert len(_labelled_edges(tmp_path / "recurrent.dot")) == 11


def test_missing_dot_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(visualize.shutil, "which", lambda name: None)
    with pytest.raises(visualize.GraphvizNotFoundError, match="apt-get install graphviz"):
        visualize.plot_genotype(genotypes.CNN_GENOTYPES["DARTS_V2"], str(tmp_path))


def test_bad_format(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown picture format.*'gif'"):
        visualize.plot_genotype(genotypes.CNN_GENOTYPES["DARTS_V2"], str(tmp_path), formats=("gif",))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "darts_tf.cli.visualize", *args], capture_output=True, text=True, timeout=120)


@needs_dot
def test_cli_on_json_file(tmp_path):
    path = tmp_path / "genotype.json"
    genotypes.save_genotype(genotypes.RNN_GENOTYPES["DARTS_V1"], str(path), metadata={"source": "test"})
    out = tmp_path / "pictures"
    result = _cli(str(path), "--output_dir", str(out), "--formats", "png")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["recurrent.dot", "recurrent.png"]
    assert _magic(out / "recurrent.png", 8) == PNG_MAGIC
    assert str(out / "recurrent.png") in result.stdout


def test_cli_name_lookup_and_kind(tmp_path):
    result = _cli("DARTS_V2", "--output_dir", str(tmp_path / "cnn"), "--formats", "dot")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "cnn")) == ["normal.dot", "reduction.dot"]
    result = _cli("DARTS_V2", "--kind", "rnn", "--output_dir", str(tmp_path / "rnn"), "--formats", "dot")
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "rnn") == ["recurrent.dot"]
    result = _cli("ENAS", "--output_dir", str(tmp_path / "enas"), "--formats", "dot")  # auto finds the RNN name
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "enas") == ["recurrent.dot"]


def test_cli_bad_name_lists_known(tmp_path):
    result = _cli("DARTS_V9", "--output_dir", str(tmp_path))
    assert result.returncode != 0
    assert "Unknown genotype name 'DARTS_V9'" in result.stderr
    assert "DARTS_V2" in result.stderr and "ENAS" in result.stderr and "NASNet" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_json_and_wrong_kind(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "cnn", "normal": [["conv_9x9", 0]]}')
    result = _cli(str(bad), "--output_dir", str(tmp_path / "out"))
    assert result.returncode != 0 and "missing field" in result.stderr
    good = tmp_path / "rnn.json"
    genotypes.save_genotype(genotypes.RNN_GENOTYPES["DARTS_V2"], str(good))
    result = _cli(str(good), "--kind", "cnn", "--output_dir", str(tmp_path / "out"))
    assert result.returncode != 0 and "Expected a CNN genotype" in result.stderr
    result = _cli(str(tmp_path / "missing.json"), "--output_dir", str(tmp_path / "out"))
    assert result.returncode != 0 and "does not exist" in result.stderr
