"""Fault injection (issue 22): tiny runs of darts-search, darts-train and darts-rnn-train killed with SIGKILL at 10
seeded random moments and resumed each time (tests/kill_loop.py): after every kill every artifact reads back, and the
finished run equals an uninterrupted one. Each takes 2-4 minutes on 2 CPU cores."""

import json
import os

import numpy as np
import pytest

from darts_tf.run_files import RunFiles
from darts_tf.search import load_search_alphas
from tests import kill_loop
from tests.cli.test_diverging_training import TINY_CNN_TRAIN, TINY_RNN_TRAIN

pytestmark = pytest.mark.slow

KILLS = 10
TINY_SEARCH = ["--dataset=digits", "--batch_size=32", "--epochs=3", "--init_channels=4", "--layers=3", "--nodes=2",
               "--primitives=none,max_pool_3x3,skip_connect,sep_conv_3x3", "--train_portion=0.5", "--seed=3",
               "--arch_learning_rate=3e-3", "--deterministic"]


def killed_and_uninterrupted(tmp_path, module, args, kind, seed, check=None):
    """(killed run directory, uninterrupted run directory, attempts) of `python -m module args --output_dir=...`."""
    reference, killed = str(tmp_path / "uninterrupted"), str(tmp_path / "killed")
    timeline = kill_loop.time_run([module, *args, f"--output_dir={reference}"], reference)
    attempts = kill_loop.kill_and_resume([module, *args, f"--output_dir={killed}"], killed, timeline, kind,
                                         kills=KILLS, seed=seed, check=check)
    report = kill_loop.describe(attempts)
    print(f"{module}: uninterrupted run {timeline}\n{report}")  # shown with -s, and on failure
    assert sum(a.kill_s is not None for a in attempts) == KILLS, report
    assert any(a.kill_s is not None and a.resumed_after > 0 for a in attempts), f"no kill after a checkpoint:\n{report}"
    assert not attempts[-1].temporaries, f"a resumed run leaves the killed runs' temporary files:\n{report}"
    return killed, reference, report


def _arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _metrics(run_dir, ignore=("wall_time_s",)):
    with open(RunFiles(run_dir).metrics) as f:
        metrics = json.load(f)
    return {k: v for k, v in metrics.items() if k not in ignore}


def test_a_search_killed_10_times_ends_with_the_alphas_of_an_uninterrupted_run(tmp_path):
    def derivable(out):  # what darts-derive reads: never a half-written or temporary file
        files = RunFiles(out)
        if os.path.isfile(files.alphas) or os.path.isfile(files.alpha_history):
            load_search_alphas(out)

    killed, reference, report = killed_and_uninterrupted(tmp_path, "darts_tf.cli.search", TINY_SEARCH, "cnn", 22,
                                                         derivable)
    for name in ("alphas.npz", "alpha_history.npz"):
        got, want = _arrays(os.path.join(killed, name)), _arrays(os.path.join(reference, name))
        assert got.keys() == want.keys(), name
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}:{key}\n{report}")
    assert load_search_alphas(killed).finished


def test_a_training_killed_10_times_ends_with_the_metrics_of_an_uninterrupted_run(tmp_path):
    killed, reference, report = killed_and_uninterrupted(tmp_path, "darts_tf.cli.train", [*TINY_CNN_TRAIN, "--epochs=8"],
                                                         "cnn", 23)
    assert _metrics(killed) == _metrics(reference), report


def test_an_rnn_training_killed_10_times_ends_with_the_metrics_of_an_uninterrupted_run(tmp_path):
    killed, reference, report = killed_and_uninterrupted(
        tmp_path, "darts_tf.cli.rnn_train", [*TINY_RNN_TRAIN, "--epochs=3", "--batch_size=16"], "rnn", 24)
    assert _metrics(killed) == _metrics(reference), report  # the offline corpus is built in memory: same data_dir
