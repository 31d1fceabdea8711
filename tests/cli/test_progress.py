"""Progress a user can read (issue 22): a log line before each long phase, one line per epoch when the output is not
a terminal (no carriage returns or escape codes), no Keras warning that does not apply, rnn training not silent."""

import re

import pytest

from tests.helpers import run_main_in_process

_BAR = re.compile("[\r\x1b]")
_SHUFFLE_WARNING = "`shuffle=True` was passed, but will be ignored"


def absl_messages(caplog):
    """The absl log lines (--verbosity=0: INFO, as under app.run; a re-parse of the flags resets the level)."""
    return [r.getMessage() for r in caplog.records if r.name == "absl"]


def assert_in_order(messages, prefixes):
    at = 0
    for prefix in prefixes:
        found = [i for i, m in enumerate(messages) if i >= at and m.startswith(prefix)]
        assert found, f"no log line starting with {prefix!r} after line {at} in {messages}"
        at = found[0] + 1


def epoch_lines(out, epochs):
    """Keras verbose=2: 'Epoch i/n' then one summary line per epoch, nothing else of fit's."""
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if re.fullmatch(rf"Epoch \d+/{epochs}", line)]
    assert len(starts) == epochs, out
    return [lines[i + 1] for i in starts]


def test_a_search_into_a_pipe_logs_its_phases_and_one_line_per_epoch(tmp_path, capsys, caplog, recwarn):
    from darts_tf.cli import search as search_cli

    code, out, err = run_main_in_process(search_cli.main, [
        "--verbosity=0", "--dataset=digits", "--layers=3", "--init_channels=4", "--batch_size=64", "--epochs=2",
        "--nodes=2", "--primitives=none,max_pool_3x3,skip_connect,sep_conv_3x3", f"--output_dir={tmp_path / 'run'}"],
        capsys)
    assert code == 0, err
    assert_in_order(absl_messages(caplog), [
        "Loading the dataset digits ...", "Building the search network (darts, 3 cells, C=4",
        "Starting the first step: it includes tracing the step into a graph", "First step done in "])
    for line in epoch_lines(out, 2):
        assert re.match(r"\d+/\d+ - \d+s - .*loss: ", line), line
    assert not _BAR.search(out + err), repr(out[-500:])
    assert not [w for w in recwarn if _SHUFFLE_WARNING in str(w.message)]


def test_rnn_training_is_not_silent_by_default_and_prints_one_line_per_epoch(tmp_path, capsys, caplog, recwarn):
    from darts_tf.cli import rnn_train

    rnn_train.define_flags()
    code, out, err = run_main_in_process(rnn_train.main, [
        "--verbosity=0", "--preset=smoke", "--units=16", "--epochs=2", "--batch_size=32", "--eval_batch_size=5", "--test_batch_size=3",
        f"--output_dir={tmp_path / 'run'}"], capsys)
    assert code == 0, err
    assert_in_order(absl_messages(caplog), ["Loading the corpus smoke ...", "Building the network (",
                                            "Starting the first step: it includes tracing", "First step done in "])
    assert len(epoch_lines(out, 2)) == 2
    assert "epoch 1: valid loss " in out and "epoch 2: valid loss " in out
    assert not _BAR.search(out + err), repr(out[-500:])
    assert not [w for w in recwarn if _SHUFFLE_WARNING in str(w.message)]


@pytest.mark.parametrize("given, expected", [([], 2), (["--verbose=0"], 0), (["--verbose=1"], 1)])
def test_fit_verbosity_is_one_line_per_epoch_off_a_terminal_unless_verbose_is_given(given, expected):
    from absl import flags

    from darts_tf.cli import common, rnn_train

    rnn_train.define_flags()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prog", *given])
    try:
        assert common.fit_verbose() == expected  # pytest's captured stdout is not a terminal
    finally:
        flags.FLAGS.unparse_flags()


def test_the_imagenet_learning_rate_help_says_exponential_decay():
    from darts_tf.cli.train_imagenet import IMAGENET_HELP

    assert IMAGENET_HELP["learning_rate"] == ("Initial SGD learning rate, multiplied by learning_rate_decay every epoch "
                                              "(exponential decay).")
    assert "cosine" not in IMAGENET_HELP["learning_rate"]
