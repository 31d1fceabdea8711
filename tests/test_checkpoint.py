"""The per-epoch training state (darts_tf.checkpoint): restored by variable path, damaged or foreign files refused with
one error naming the file and the fix, non-finite states never saved, a full disk that keeps the last checkpoint."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from darts_tf import checkpoint
from darts_tf.checkpoint import CheckpointError
from darts_tf.guards import NonFiniteError
from darts_tf.io_utils import OutputLocationError
from darts_tf.run_files import RunFiles

from tests.helpers import ENV
from tests.file_faults import DAMAGES, damage_file, tmpfs


class Weights(keras.Model):
    """Variables `names` (created in that order) of `shape`, in a model named "net"."""

    def __init__(self, names=("first", "second"), shape=(3,)):
        super().__init__(name="net")
        for name in names:
            setattr(self, name, self.add_weight(shape=shape, initializer="zeros", name=name))

    def call(self, x):
        return x


def saved(directory, epochs_done=1, **values):
    model = Weights(tuple(values))
    for name, value in values.items():
        getattr(model, name).assign(np.full(3, value, np.float32))
    checkpoint.save_state(str(directory), model, epochs_done)
    return model


def test_restore_matches_variables_by_path_not_by_position(tmp_path):
    saved(tmp_path, first=1.0, second=2.0)
    swapped = Weights(("second", "first"))  # the same variables, created in the other order
    assert [v.path for v in swapped.variables] == ["net/second", "net/first"]
    assert checkpoint.restore_state(str(tmp_path), swapped) == {"epochs_done": 1}
    np.testing.assert_array_equal(swapped.first.numpy(), [1, 1, 1])
    np.testing.assert_array_equal(swapped.second.numpy(), [2, 2, 2])


def test_models_built_earlier_in_the_process_still_resume(tmp_path):
    """Keras numbers layer names per process ("dense_2"): a model rebuilt in the same process has other paths."""
    def net():
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(2)])

    first, second = net(), net()
    assert [v.path for v in first.variables] != [v.path for v in second.variables]
    for i, v in enumerate(first.variables):
        v.assign(np.full(v.shape, i + 1.0, np.float32))
    checkpoint.save_state(str(tmp_path), first, 1)
    checkpoint.restore_state(str(tmp_path), second)
    for a, b in zip(first.variables, second.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_checkpoint_of_other_variables_is_refused_and_nothing_is_assigned(tmp_path):
    saved(tmp_path, first=1.0, second=2.0)
    other = Weights(("first", "second", "third"))
    path = RunFiles(str(tmp_path)).state
    with pytest.raises(CheckpointError, match=rf"^{path} holds 2 variables, this model and its optimizers have 3, and "
                                              rf"they differ \(only in this model: net/third\): it was written by a "
                                              rf"different model or darts_tf version\. Resume with the flags and "
                                              rf"version that wrote it, or delete it to start over, or restore a copy\.$"):
        checkpoint.restore_state(str(tmp_path), other)
    np.testing.assert_array_equal(other.first.numpy(), [0, 0, 0])
    renamed = Weights(("first", "other"))
    with pytest.raises(CheckpointError, match=r"only in the checkpoint: net/second; only in this model: net/other"):
        checkpoint.restore_state(str(tmp_path), renamed)


def test_a_variable_of_another_shape_is_refused(tmp_path):
    saved(tmp_path, first=1.0, second=2.0)
    with pytest.raises(CheckpointError, match=r"variable net/first has shape \(3,\), the model's net/first has \(4,\)"):
        checkpoint.restore_state(str(tmp_path), Weights(shape=(4,)))


def _damage(path, how):
    if how == "other format":
        np.savez(path, weights=np.ones(3))  # an .npz, but not a darts_tf checkpoint
    elif how == "no metadata":
        arrays = dict(np.load(path))
        del arrays["__meta__"]
        np.savez(path, **arrays)
    else:
        damage_file(path, how)


@pytest.mark.parametrize("how", [*DAMAGES, "other format", "no metadata"])
def test_a_damaged_checkpoint_gives_one_error_naming_the_file_and_the_fix(tmp_path, how):
    saved(tmp_path, first=1.0, second=2.0)
    path = RunFiles(str(tmp_path)).state
    _damage(path, how)
    with pytest.raises(CheckpointError, match=rf"^{path} is damaged \(truncated or not a darts_tf checkpoint: \w+: .*\): "
                                              rf"delete it to start over, or restore a copy\.$"):
        checkpoint.restore_state(str(tmp_path), Weights())


def test_a_non_finite_state_is_not_saved_and_the_last_good_one_is_kept(tmp_path):
    model = saved(tmp_path, first=1.0, second=2.0)
    path = RunFiles(str(tmp_path)).state
    before = open(path, "rb").read()
    model.first.assign([1.0, np.nan, 1.0])
    with pytest.raises(NonFiniteError, match=rf"^After epoch 2 the training state's values are not finite: net/first "
                                             rf"\(1 of 3 values are nan\)\. The learning rate is likely too large: "
                                             rf"lower --learning_rate\. The state was not saved: {path} still holds "
                                             rf"the last good state\.$"):
        checkpoint.save_state(str(tmp_path), model, 2)
    assert open(path, "rb").read() == before


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_temporary_file(tmp_path):
    with tmpfs(str(tmp_path / "small"), "1m") as mnt:
        model = Weights(shape=(80_000,))  # 2 x 320 kB: one checkpoint fits in 1 MiB, two do not
        model.first.assign(np.ones(80_000, np.float32))
        checkpoint.save_state(mnt, model, 1)
        model.first.assign(np.full(80_000, 2.0, np.float32))
        with pytest.raises(OutputLocationError, match=rf"^Could not write {mnt}/training_state\.npz: no space left on "
                                                      rf"its filesystem \(or over quota\)\. The previous file is kept\."):
            checkpoint.save_state(mnt, model, 2)
        assert os.listdir(mnt) == ["training_state.npz"]
        restored = Weights(shape=(80_000,))
        assert checkpoint.restore_state(mnt, restored)["epochs_done"] == 1
        np.testing.assert_array_equal(restored.first.numpy(), np.ones(80_000))


def test_check_run_config_refuses_another_runs_directory(tmp_path):
    checkpoint.check_run_config(str(tmp_path), {"seed": 1}, resume=False)
    saved(tmp_path, first=1.0)
    with pytest.raises(ValueError, match=r"holds another run's checkpoint with different flags \(seed: checkpoint has "
                                         r"1, now 2\)"):
        checkpoint.check_run_config(str(tmp_path), {"seed": 2}, resume=True)


def test_resuming_a_search_from_a_truncated_checkpoint_exits_2_with_one_error_line(tmp_path):
    saved(tmp_path, first=1.0)
    path = RunFiles(str(tmp_path)).state
    _damage(path, "truncated")
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.search", f"--output_dir={tmp_path}", "--dataset=digits",
                           "--batch_size=32", "--epochs=1", "--init_channels=4", "--layers=3", "--nodes=1",
                           "--primitives=none,skip_connect", "--resume"], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {path} is damaged (truncated or not a darts_tf checkpoint: BadZipFile: File is not a zip "
                      f"file): delete it to start over, or restore a copy."], proc.stderr[-3000:]


@pytest.mark.parametrize("how", ("truncated", "garbled", "empty", "text"))
def test_a_damaged_run_config_is_refused_with_one_error_naming_the_file_and_the_fix(tmp_path, how):
    checkpoint.check_run_config(str(tmp_path), {"seed": 1, "epochs": 3}, resume=False)
    saved(tmp_path, first=1.0)
    path = RunFiles(str(tmp_path)).run_config
    damage_file(path, how)
    with pytest.raises(ValueError, match=rf"^{path} is damaged \(truncated or not a darts_tf run config: "
                                         rf"(JSONDecodeError|UnicodeDecodeError): .*\): restore a copy of it, or choose a "
                                         rf"new --output_dir \(the checkpoint cannot be resumed without the flags it was "
                                         rf"written with\)\.$"):
        checkpoint.check_run_config(str(tmp_path), {"seed": 1, "epochs": 3}, resume=True)


def test_resuming_a_search_whose_run_config_is_garbled_exits_2_with_one_error_line(tmp_path):
    saved(tmp_path, first=1.0)
    path = RunFiles(str(tmp_path)).run_config
    with open(path, "w") as f:
        f.write('{"seed": 0, "epo')  # a write cut short
    proc = subprocess.run([sys.executable, "-m", "darts_tf.cli.search", f"--output_dir={tmp_path}", "--dataset=digits",
                           "--batch_size=32", "--epochs=1", "--init_channels=4", "--layers=3", "--nodes=1",
                           "--primitives=none,skip_connect", "--resume"], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {path} is damaged (truncated or not a darts_tf run config: JSONDecodeError: Unterminated "
                      f"string starting at: line 1 column 13 (char 12)): restore a copy of it, or choose a new "
                      f"--output_dir (the checkpoint cannot be resumed without the flags it was written with)."], \
        proc.stderr[-3000:]


def test_a_checkpoint_saves_and_restores_on_a_remote_filesystem():
    """The training state on ram:// (TensorFlow's in-memory filesystem, standing in for gs://): written in one piece,
    read back, epochs counted."""
    import keras
    import tensorflow as tf

    from darts_tf import checkpoint as ckpt

    directory = "ram://checkpoint-test/run"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    ckpt.check_run_config(directory, {"lr": 1}, resume=False)
    assert not ckpt.has_state(directory) and ckpt.saved_epochs(directory) == 0
    ckpt.save_state(directory, model, 3)
    assert ckpt.has_state(directory) and ckpt.saved_epochs(directory) == 3
    saved = [v.numpy().copy() for v in model.variables]
    for v in model.variables:
        v.assign(tf.zeros_like(v))
    assert ckpt.restore_state(directory, model)["epochs_done"] == 3
    for v, want in zip(model.variables, saved):
        np.testing.assert_array_equal(v.numpy(), want)
    ckpt.check_run_config(directory, {"lr": 1}, resume=True)  # the same flags: accepted
    tf.io.gfile.rmtree("ram://checkpoint-test")
