"""`--strategy multi_worker` (issue 21): two worker processes on localhost (TF_CONFIG with 127.0.0.1 ports) train a
tiny network under MultiWorkerMirroredStrategy. Both finish with equal weights, only the chief's output directory
holds the artifacts (the other worker's temporary directory is gone), and a run whose worker was killed resumes from
the chief's checkpoint when both restart, ending with the weights of the uninterrupted run.

Each worker runs this module as a script (`python -m tests.cnn.test_multi_worker OUT WEIGHTS [--resume]
[--die_at_epoch N]`): `darts_tf.cnn.train.train` with a callback that saves the final weights to WEIGHTS (the
non-chief's own run directory is removed when it ends) and, with --die_at_epoch, one that SIGKILLs the process when
that epoch begins. A two-worker run of 2 epochs takes about two minutes on 2 shared CPU cores (the start-up and the
tracing of the first step); the slow set runs four.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from darts_tf.distribute import WORKER_DIR_PREFIX
from darts_tf.run_files import DATA_INFO, GENOTYPE, METRICS, MODEL, RUN_CONFIG, STATE, TENSORBOARD
from tests.helpers import ENV

EPOCHS = 2
TINY = dict(dataset="digits", layers=3, init_channels=4, epochs=EPOCHS, batch_size=32, cutout_length=0,
            drop_path_prob=0.0, auxiliary=False, strategy="multi_worker", verbose=2, seed=5)
ARTIFACTS = {DATA_INFO, GENOTYPE, METRICS, MODEL, RUN_CONFIG, STATE, TENSORBOARD}
# darts-train-imagenet (the transfer stage's trainer) on the same data: the network of the CIFAR layout, 1 epoch
TRANSFER = dict(dataset="digits", network="cifar", layers=3, init_channels=4, epochs=1, batch_size=32, auxiliary=False,
                strategy="multi_worker", verbose=2, seed=5)
TIMEOUT_S = 600


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_configs(n):
    """One TF_CONFIG per worker of an `n`-worker cluster on localhost."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(n)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(n)]


def start_workers(tmp, out, *args, n=2, die=None, attempt=0, module="tests.cnn.test_multi_worker"):
    """Starts `n` worker processes of one run (writing to `out`, or each to its own of a list); `die` = (worker,
    epoch): that worker kills itself when the epoch begins. Each runs `module` as a script (its worker program: OUT
    WEIGHTS [--resume] [--die_at_epoch N]). Returns [(process, weights path, log path)]."""
    workers = []
    outs = out if isinstance(out, list) else [out] * n
    for i, (config, out) in enumerate(zip(tf_configs(n), outs)):
        weights, log = os.path.join(tmp, f"weights{i}.npz"), os.path.join(tmp, f"attempt{attempt}_worker{i}.log")
        extra = ["--die_at_epoch", str(die[1])] if die and die[0] == i else []
        with open(log, "w") as f:
            proc = subprocess.Popen([sys.executable, "-m", module, out, weights, *args, *extra],
                                    env={**ENV, "TF_CONFIG": config}, stdout=f, stderr=subprocess.STDOUT)
        workers.append((proc, weights, log))
    return workers


def wait_all(workers, timeout=TIMEOUT_S):
    deadline = time.time() + timeout
    for proc, _, log in workers:
        try:
            proc.wait(max(deadline - time.time(), 1))
        except subprocess.TimeoutExpired:
            for p, _, _ in workers:
                p.kill()
            raise AssertionError(f"a worker did not finish in {timeout} s; its log ends:\n{_tail(log)}")
    return [proc.returncode for proc, _, _ in workers]


def _tail(path, n=3000):
    with open(path) as f:
        return f.read()[-n:]


def _weights(path):
    with np.load(path) as data:
        return [data[k] for k in sorted(data.files)]


def _worker_dirs():
    import tempfile

    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith(WORKER_DIR_PREFIX)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("mw"))
    out = os.path.join(tmp, "run")
    before = _worker_dirs()
    workers = start_workers(tmp, out)
    codes = wait_all(workers)
    assert codes == [0, 0], "\n".join(_tail(log) for _, _, log in workers)
    return out, workers, before


def test_darts_train_under_multi_worker_without_tf_config_is_refused_before_it_writes(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in ENV.items() if k != "TF_CONFIG"}
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.train", "--dataset=digits", "--strategy=multi_worker",
                           f"--output_dir={out}"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TF_CONFIG is not set; strategy=multi_worker needs a JSON object like" in errors[0]
    assert not out.exists()


def check_two_workers(out, workers, before, artifacts):
    """Both workers ended with the same weights, bit for bit; only the chief's run directory `out` holds `artifacts`;
    the other worker's temporary directory is gone (`before`: those there before); each log names its role. Returns
    the chief's weights."""
    chief, other = _weights(workers[0][1]), _weights(workers[1][1])
    assert len(chief) == len(other) > 0
    for a, b in zip(chief, other):
        np.testing.assert_array_equal(a, b)
    assert set(os.listdir(out)) == artifacts
    assert _worker_dirs() - before == set(), "the non-chief worker left its temporary run directory"
    logs = [_tail(log, 10**6) for _, _, log in workers]
    assert "2 replica(s), task worker 0 (chief)" in logs[0] and "2 replica(s), task worker 1 ..." in logs[1]
    return chief


def check_a_kill_resumes(tmp, out, reference, module="tests.cnn.test_multi_worker", epochs=EPOCHS):
    """Worker 1 of a run of `module`'s workers kills itself when epoch 2 begins (after epoch 1's checkpoint), the chief
    fails with it, and a restart of both with --resume continues from epoch 1 and ends with `reference`, the
    uninterrupted run's weights, bit for bit (the same steps on the same batches)."""
    killed = start_workers(tmp, out, die=(1, 1), module=module)
    codes = wait_all(killed)
    assert codes[1] == -signal.SIGKILL, _tail(killed[1][2])
    assert codes[0] != 0, "the chief should fail when its peer is gone: " + _tail(killed[0][2])
    with np.load(os.path.join(out, STATE)) as data:
        assert json.loads(str(data["__meta__"]))["epochs_done"] == 1
    assert not os.path.exists(os.path.join(out, MODEL))
    restarted = start_workers(tmp, out, "--resume", attempt=1, module=module)
    codes = wait_all(restarted)
    assert codes == [0, 0], "\n".join(_tail(log) for _, _, log in restarted)
    assert f"Resuming {out} from the end of epoch 1 of {epochs}" in _tail(restarted[0][2], 10**6)
    chief, other = _weights(restarted[0][1]), _weights(restarted[1][1])
    assert len(chief) == len(reference)
    for a, b, want in zip(chief, other, reference):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, want)


@pytest.mark.slow
def test_two_workers_finish_with_equal_weights_and_only_the_chief_writes(uninterrupted):
    out, workers, before = uninterrupted
    chief = check_two_workers(out, workers, before, ARTIFACTS)
    with open(os.path.join(out, METRICS)) as f:
        assert json.load(f)["epochs"] == EPOCHS
    # the chief's model.keras holds the weights both workers ended with
    from darts_tf.cnn.evaluate import load_model

    model = load_model(out)
    assert len(model.weights) == len(chief)
    for v, want in zip(model.weights, chief):
        np.testing.assert_array_equal(np.asarray(v), want)


@pytest.mark.slow
def test_darts_train_imagenet_on_two_workers_ends_with_equal_weights_and_only_the_chief_writes(tmp_path):
    out, tmp = str(tmp_path / "run"), str(tmp_path)
    before = _worker_dirs()
    workers = start_workers(tmp, out, "--transfer")
    assert wait_all(workers) == [0, 0], "\n".join(_tail(log) for _, _, log in workers)
    check_two_workers(out, workers, before, ARTIFACTS)


@pytest.mark.slow
def test_a_killed_worker_and_a_restart_of_both_resume_from_the_chiefs_checkpoint(uninterrupted, tmp_path):
    check_a_kill_resumes(str(tmp_path), str(tmp_path / "run"), _weights(uninterrupted[1][0][1]))



@pytest.mark.slow
def test_workers_that_would_resume_from_different_epochs_stop_with_an_error_naming_the_storage(uninterrupted, tmp_path):
    import shutil

    chief_out, other_out = str(tmp_path / "chief"), str(tmp_path / "elsewhere")
    shutil.copytree(uninterrupted[0], chief_out)  # the chief finds the finished run's checkpoint, worker 1 nothing
    workers = start_workers(str(tmp_path), [chief_out, other_out], "--resume")
    codes = wait_all(workers)
    assert codes[0] != 0 and codes[1] != 0
    for _, _, log in workers:
        text = _tail(log, 10**6)
        assert re.search(r"The workers of this multi-worker run would resume from different epochs \(this one from "
                         r"[02]; mean 1 over 2 replicas\): every worker must read the chief's checkpoint, so "
                         r"--output_dir must be storage they all read", text), _tail(log)
    with open(os.path.join(chief_out, METRICS)) as f, open(os.path.join(uninterrupted[0], METRICS)) as g:
        assert json.load(f) == json.load(g)  # nothing rewritten


# ------------------------------------------------------------------------------------------ the worker program


def _worker_main(argv):
    from absl import logging

    from darts_tf.cnn import train

    logging.set_verbosity(logging.INFO)  # the run's log lines (role, resume) on stderr, as the scripts print them
    args = worker_arguments(argv)
    if args.transfer:  # darts-train-imagenet's run (the transfer stage) on the same tiny network and data
        train.train_imagenet(train.ImageNetConfig(**TRANSFER, output_dir=args.out, resume=args.resume),
                             callbacks=worker_callbacks(args))
        return
    train.train(train.TrainConfig(**TINY, output_dir=args.out, resume=args.resume), callbacks=worker_callbacks(args))


def worker_arguments(argv):
    """The worker program's arguments: OUT WEIGHTS [--resume] [--die_at_epoch N] [--transfer]."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("weights")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--die_at_epoch", type=int, default=None)
    parser.add_argument("--transfer", action="store_true")  # darts-train-imagenet instead of darts-train
    return parser.parse_args(argv)


def worker_callbacks(args):
    """Saves the final weights to args.weights; with --die_at_epoch, SIGKILLs this process when that epoch begins."""
    import keras

    class SaveWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            np.savez(args.weights, **{f"w{i:04d}": np.asarray(v) for i, v in enumerate(self.model.weights)})

    class DieAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == args.die_at_epoch:
                os.kill(os.getpid(), signal.SIGKILL)

    return [SaveWeights()] + ([DieAt()] if args.die_at_epoch is not None else [])


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
