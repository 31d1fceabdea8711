"""A training whose learning rate makes it diverge stops at once (darts_tf.guards): one `error:` line naming the epoch,
the step and the flag to lower, exit status 2, and no metrics.json (nothing is written from non-finite values)."""

import os

import pytest

from tests.cli.test_errors import run_script
from tests.helpers import failure_lines

TINY_CNN_TRAIN = ["--dataset=digits", "--layers=3", "--init_channels=4", "--epochs=2", "--batch_size=32",
                  "--cutout_length=0"]
TINY_RNN_TRAIN = ["--preset=smoke", "--units=16", "--epochs=2", "--batch_size=8", "--eval_batch_size=5",
                  "--test_batch_size=3"]


@pytest.mark.parametrize("module, args, loss", [
    ("darts_tf.cli.train", TINY_CNN_TRAIN, r"loss=nan"),
    ("darts_tf.cli.rnn_train", TINY_RNN_TRAIN, r"grad_norm=nan, loss=nan, ppl=nan"),
])
def test_a_diverging_learning_rate_stops_the_training_with_one_error_line_and_exit_2(tmp_path, module, args, loss):
    out = tmp_path / "run"
    proc = run_script(module, *args, "--learning_rate=1e30", f"--output_dir={out}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = failure_lines(proc.stderr)
    assert line.startswith("error: Training diverged at epoch 1, step "), line
    assert f"the loss is not finite ({loss}). The learning rate is likely too large: lower --learning_rate, " in line
    assert line.endswith("No epoch finished, so there is no checkpoint. Nothing was written from the non-finite "
                         "values."), line
    assert "Traceback" not in proc.stderr
    written = set(os.listdir(out))
    assert not written & {"metrics.json", "model.keras", "training_state.npz", "alphas.npz"}, written
