"""Fault injection for the scripts' `--resume` (issue 22): a run killed with SIGKILL at seeded random moments and
restarted with `--resume` until it finishes, with every artifact in its output directory checked after every kill.

`time_run` runs the script once uninterrupted and records when its epoch checkpoints appear; `kill_and_resume` uses
that timeline to draw each kill moment uniformly before the moment the attempt would finish (from the epochs its
checkpoint still lacks): mostly after the start-up (TensorFlow's import, the data, the network: most of a tiny run),
so that most kills land during the training and the final writes, the others from `first_s` on. A kill before the
attempt's first checkpoint just restarts it; an attempt that finishes before its kill leaves a finished run, whose
restarts are then killed during their restore and final writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Callable, List, Optional, Sequence

import numpy as np

from darts_tf import genotypes as gt
from darts_tf.io_utils import TEMPORARY_PREFIXES
from darts_tf.run_files import GENOTYPE, GENOTYPES, STATE, TENSORBOARD
from tests.helpers import ENV

_POLL_S = 0.05


def epochs_done(out_dir: str) -> int:
    """The epochs finished according to the run's checkpoint (0 without one)."""
    path = os.path.join(out_dir, STATE)
    if not os.path.isfile(path):
        return 0
    with np.load(path) as data:
        return int(json.loads(str(data["__meta__"]))["epochs_done"])


def check_artifacts(out_dir: str, kind: str) -> List[str]:
    """Reads back every file of the run directory `out_dir` (except TensorBoard's append-only event logs): JSON
    loads, .npz archives load every array, genotype files validate (`kind` 'cnn' or 'rnn'), .keras archives and .h5
    files are whole. Raises AssertionError naming a file that does not; returns the temporary files left behind (their
    names start with one of darts_tf.io_utils' ``TEMPORARY_PREFIXES``, which no reader opens)."""
    import h5py

    temporaries = []
    for directory, subdirs, names in os.walk(out_dir):
        subdirs[:] = [d for d in subdirs if os.path.relpath(os.path.join(directory, d), out_dir) != TENSORBOARD]
        for name in names:
            path = os.path.join(directory, name)
            if name.startswith(TEMPORARY_PREFIXES):
                temporaries.append(os.path.relpath(path, out_dir))
                continue
            try:
                if name.endswith(".json"):
                    with open(path) as f:
                        json.load(f)
                    if name == GENOTYPE or os.path.basename(directory) == GENOTYPES:
                        gt.load_genotype_file(path, kind)
                elif name.endswith(".npz"):
                    with np.load(path, allow_pickle=False) as data:
                        for key in data.files:
                            data[key]
                elif name.endswith(".keras"):
                    with zipfile.ZipFile(path) as archive:
                        assert archive.testzip() is None
                elif name.endswith(".h5"):
                    with h5py.File(path, "r") as f:
                        f.visit(lambda _: None)
            except Exception as e:
                raise AssertionError(f"{path} does not read back after a kill: {type(e).__name__}: {e}") from e
    return temporaries


@dataclasses.dataclass
class Timeline:
    """When an uninterrupted run wrote each epoch's checkpoint and when it exited, in seconds from its start."""

    checkpoints_s: List[float]
    exit_s: float

    def finish_s(self, done: int) -> float:
        """About when an attempt that resumes after `done` epochs exits: start-up and the first (traced) epoch take
        as long as in the uninterrupted run, every later epoch as long as one of its epochs, then the final writes
        (a finished run's restart: start-up, restore and the final writes)."""
        n = len(self.checkpoints_s)
        epoch = (self.checkpoints_s[-1] - self.checkpoints_s[0]) / max(n - 1, 1)
        first = self.checkpoints_s[0]  # start-up, tracing the step and one epoch
        final = self.exit_s - self.checkpoints_s[-1]
        return first - epoch + final if done >= n else first + (n - done - 1) * epoch + final

    def training_starts_s(self) -> float:
        """About when an attempt's first epoch begins (start-up done; tracing the step is part of that epoch)."""
        n = len(self.checkpoints_s)
        return self.checkpoints_s[0] - (self.checkpoints_s[-1] - self.checkpoints_s[0]) / max(n - 1, 1)

    def kill_moment(self, rng: random.Random, done: int, first_s: float, training_share: float,
                    observed_s: float = float("inf")) -> float:
        """A moment before the attempt resuming after `done` epochs would finish (`observed_s`: how long such an
        attempt took when it ran to the end): with probability `training_share` after its start-up (during the
        training and the final writes), else anywhere from `first_s`."""
        end = max(first_s, 0.95 * min(self.finish_s(done), observed_s))
        start = min(max(first_s, self.training_starts_s()), end) if rng.random() < training_share else first_s
        return rng.uniform(start, end)


def _start(cmd: Sequence[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *cmd], env=ENV, stdout=log, stderr=subprocess.STDOUT)


def _failure(cmd: Sequence[str], log, code: int) -> str:
    log.seek(0)
    return f"{' '.join(cmd)} exited {code}:\n{log.read().decode(errors='replace')[-3000:]}"


def time_run(cmd: Sequence[str], out_dir: str, timeout_s: float = 300) -> Timeline:
    """Runs `python -m cmd` to completion (asserting exit 0), watching its checkpoint."""
    checkpoints, seen, start = [], None, time.time()
    with tempfile.TemporaryFile() as log:
        proc = _start(cmd, log)
        while proc.poll() is None:
            path = os.path.join(out_dir, STATE)
            stamp = os.stat(path).st_mtime_ns if os.path.isfile(path) else None
            if stamp != seen and stamp is not None:
                checkpoints.append(time.time() - start)
                seen = stamp
            assert time.time() - start < timeout_s, f"{' '.join(cmd)} ran past {timeout_s} s"
            time.sleep(_POLL_S)
        assert proc.returncode == 0, _failure(cmd, log, proc.returncode)
    assert checkpoints, f"{' '.join(cmd)} wrote no {STATE}"
    return Timeline(checkpoints, time.time() - start)


@dataclasses.dataclass
class Attempt:
    resumed_after: int  # epochs in the checkpoint when the attempt started
    kill_s: Optional[float]  # when it was killed (None: it ran to the end)
    temporaries: List[str]  # temporary files found after it


def kill_and_resume(cmd: Sequence[str], out_dir: str, timeline: Timeline, kind: str, kills: int = 10, seed: int = 0,
                    first_s: float = 3.0, training_share: float = 0.75, resume_flag: str = "--resume",
                    check: Optional[Callable[[str], None]] = None) -> List[Attempt]:
    """Starts `python -m cmd`, kills it with SIGKILL at a random moment, checks the artifacts (`check_artifacts` and
    `check(out_dir)`), and restarts it with `resume_flag`, `kills` times; then lets it finish (asserting exit 0)."""
    rng, attempts, finished_in = random.Random(seed), [], {}
    while len(attempts) < 3 * kills:
        killed = sum(a.kill_s is not None for a in attempts)
        done = epochs_done(out_dir)
        kill_s = None
        if killed < kills:
            kill_s = timeline.kill_moment(rng, done, first_s, training_share, finished_in.get(done, float("inf")))
        with tempfile.TemporaryFile() as log:
            start = time.time()
            proc = _start([*cmd, *([resume_flag] if attempts else [])], log)
            try:
                code = proc.wait(timeout=kill_s)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                code = proc.wait()
            if code != -signal.SIGKILL:  # it finished before its kill moment: later attempts restart a finished run
                assert code == 0, _failure(cmd, log, code)
                kill_s, finished_in[done] = None, time.time() - start
        attempts.append(Attempt(done, kill_s, check_artifacts(out_dir, kind)))
        if check is not None:
            check(out_dir)
        if kill_s is None and killed >= kills:
            return attempts
    raise AssertionError(f"{kills} kills did not happen in {len(attempts)} attempts:\n{describe(attempts)}")


def describe(attempts: Sequence[Attempt]) -> str:
    """One line per attempt, for the assertion messages."""
    return "\n".join(f"attempt {i}: resumed after {a.resumed_after} epochs, "
                     f"{'killed at %.1f s' % a.kill_s if a.kill_s is not None else 'ran to the end'}"
                     f"{', temporaries: ' + ', '.join(a.temporaries) if a.temporaries else ''}"
                     for i, a in enumerate(attempts))
