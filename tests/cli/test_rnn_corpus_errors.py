"""darts-rnn-train and darts-rnn-search refuse a missing, malformed or too small corpus before they create the output
directory (issues 16, 22): one `error:` line naming the directory (or file) and the expected layout, exit status 2,
and no output directory afterwards. Malformed: a split that is empty or only whitespace, a file that is not UTF-8
(the byte offset named), a word that --strict_vocab refuses, a --max_vocab that cannot hold <eos> and <unk>."""

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


def _run_refused(tmp_path, script, data, *extra):
    out = tmp_path / "run"
    proc = run_script(*script, f"--data_dir={data}", f"--output_dir={out}", *extra)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    [line] = failure_lines(proc.stderr)
    return line


@pytest.mark.parametrize("script", [TRAIN, SEARCH], ids=["rnn_train", "rnn_search"])
def test_an_empty_split_file_is_one_error_line_and_no_output_dir(tmp_path, script):
    data = _corpus(tmp_path / "corpus", ["train.txt", "valid.txt", "test.txt"])
    (data / "valid.txt").write_text(" \n\n\t\n")
    assert _run_refused(tmp_path, script, data) == (
        f"error: Corpus file '{data / 'valid.txt'}' is empty (or only whitespace) but the model is scored on it; put "
        f"at least one sentence in it; {LAYOUT}")


@pytest.mark.parametrize("script", [TRAIN, SEARCH], ids=["rnn_train", "rnn_search"])
def test_a_file_that_is_not_utf8_is_one_error_line_naming_the_byte_offset(tmp_path, script):
    data = _corpus(tmp_path / "corpus", ["train.txt", "valid.txt", "test.txt"])
    (data / "train.txt").write_bytes(b"a b c\nb \xff a\n" * 20)
    assert _run_refused(tmp_path, script, data) == (
        f"error: Corpus file '{data / 'train.txt'}' is not UTF-8 text: byte 0xff at byte offset 8 (line 2) cannot be "
        f"decoded; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8).")


@pytest.mark.parametrize("script", [TRAIN, SEARCH], ids=["rnn_train", "rnn_search"])
def test_strict_vocab_refuses_an_unseen_word_naming_file_line_and_fix(tmp_path, script):
    data = tmp_path / "corpus"
    data.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (data / name).write_text("a b c\nb c a\n" * 20)
    (data / "test.txt").write_text("a b c\n" * 5 + "a zebra c\n" + "b c a\n" * 20)
    assert _run_refused(tmp_path, script, data, "--strict_vocab") == (
        f"error: Word 'zebra' ({data / 'test.txt'}, line 6) is not in the training vocabulary and --strict_vocab "
        f"refuses it (the vocabulary has no '<unk>' token). Pass --nostrict_vocab to map unseen words to <unk> (the "
        f"rate is reported), or --max_vocab=N to cap the vocabulary (every other word becomes <unk>), or map rare "
        f"words to <unk> in the corpus files (as PTB does).")


@pytest.mark.parametrize("script", [TRAIN, SEARCH], ids=["rnn_train", "rnn_search"])
def test_a_max_vocab_below_2_is_refused(tmp_path, script):
    data = _corpus(tmp_path / "corpus", ["train.txt", "valid.txt", "test.txt"])
    assert _run_refused(tmp_path, script, data, "--max_vocab=1") == (
        "error: --max_vocab must be 0 (no cap) or >= 2 (<eos> and <unk> always count toward it). Received: max_vocab=1")
