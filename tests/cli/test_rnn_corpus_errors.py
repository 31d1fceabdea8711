"""darts-rnn-train and darts-rnn-search refuse a missing, malformed or too small corpus before they create the output
directory (issue 22): one `error:` line naming the directory (or file) and the expected layout, exit status 2, and
no output directory afterwards."""

import pytest

from tests.cli.test_errors import run_script
from tests.helpers import failure_lines

LAYOUT = ("expected layout: DIR/train.txt, DIR/valid.txt, DIR/test.txt (one sentence per line, words separated by "
          "spaces, as PTB / WikiText-2).")
TRAIN = ("darts_tf.cli.rnn_train", "--preset=smoke", "--units=16", "--epochs=1")
SEARCH = ("darts_tf.cli.rnn_search", "--dataset=ptb", "--units=16", "--epochs=1", "--batch_size=4")


def _corpus(root, files):
    root.mkdir()
    for name in files:
        (root / name).write_text("a b c <unk>\nb c a\n" * 20)
    return root


@pytest.mark.parametrize("script", [TRAIN, SEARCH], ids=["rnn_train", "rnn_search"])
def test_a_missing_corpus_directory_is_one_error_line_exit_2_and_no_output_dir(tmp_path, script):
    out, data = tmp_path / "run", tmp_path / "no_such_corpus"
    proc = run_script(*script, f"--data_dir={data}", f"--output_dir={out}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert failure_lines(proc.stderr) == [f"error: Corpus directory '{data}' does not exist; {LAYOUT}"]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("script", [TRAIN, SEARCH], ids=["rnn_train", "rnn_search"])
def test_a_corpus_without_test_txt_is_refused_before_the_output_dir_is_created(tmp_path, script):
    out, data = tmp_path / "run", _corpus(tmp_path / "corpus", ["train.txt", "valid.txt"])
    proc = run_script(*script, f"--data_dir={data}", f"--output_dir={out}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = failure_lines(proc.stderr)
    assert line == f"error: Missing corpus file '{data / 'test.txt'}'; {LAYOUT}"
    assert not out.exists()


def test_a_search_corpus_too_small_for_the_batch_is_refused_before_the_output_dir_is_created(tmp_path):
    out, data = tmp_path / "run", _corpus(tmp_path / "corpus", ["train.txt", "valid.txt", "test.txt"])
    proc = run_script(*SEARCH[:-1], "--batch_size=1000", f"--data_dir={data}", f"--output_dir={out}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = failure_lines(proc.stderr)
    assert line.startswith("error: 180 tokens are too few for batch_size=1000: "), line
    assert not out.exists()
