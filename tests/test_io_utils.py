"""Atomic writes (darts_tf.io_utils): modes that follow the umask, the output-location check made before any work,
and full or read-only filesystems that leave the previous file and no temporary file behind."""

import os
import stat
import subprocess
import tempfile

import numpy as np
import pytest

from darts_tf import io_utils
from darts_tf.io_utils import (DamagedFileError, OutputLocationError, atomic_savez, atomic_write_text,
                               check_output_dir, load_npz, publish_directory, write_json)

from tests.file_faults import DAMAGES, damage_file, remount_readonly, tmpfs

def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                        (0o002, 0o664, 0o775)], indirect=["umask"])
def test_atomic_writes_get_the_mode_of_a_plain_open_under_the_umask(tmp_path, umask, file_mode, dir_mode):
    assert io_utils.current_umask() == umask
    with open(tmp_path / "plain", "w"):
        pass
    os.makedirs(tmp_path / "plain_dir")
    assert (mode(tmp_path / "plain"), mode(tmp_path / "plain_dir")) == (file_mode, dir_mode)
    atomic_write_text(str(tmp_path / "a.txt"), "text")
    atomic_savez(str(tmp_path / "b.npz"), {"x": np.zeros(3)})
    write_json(str(tmp_path / "c.json"), {"x": 1})
    with publish_directory(str(tmp_path / "published")) as tmp:
        atomic_write_text(os.path.join(tmp, "inside.txt"), "text")
    assert {name: mode(tmp_path / name) for name in ("a.txt", "b.npz", "c.json")} == dict.fromkeys(
        ("a.txt", "b.npz", "c.json"), file_mode)
    assert mode(tmp_path / "published") == dir_mode and mode(tmp_path / "published" / "inside.txt") == file_mode


@pytest.mark.parametrize("umask, file_mode", [(0o022, 0o644), (0o077, 0o600)], indirect=["umask"])
def test_keras_files_saved_through_a_rename_follow_the_umask(tmp_path, umask, file_mode):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    for name, save, keras_save in (("m.keras", io_utils.save_model_atomic, model.save),
                                   ("w.weights.h5", io_utils.save_weights_atomic, model.save_weights)):
        # a saver that makes its file 0600 (as mkstemp does): the published file still follows the umask
        io_utils._save_through_rename(str(tmp_path / name), lambda p: (keras_save(p), os.chmod(p, 0o600)))
        assert mode(tmp_path / name) == file_mode
        save(model, str(tmp_path / ("again-" + name)))
        assert mode(tmp_path / ("again-" + name)) == file_mode
    assert sorted(os.listdir(tmp_path)) == ["again-m.keras", "again-w.weights.h5", "m.keras", "w.weights.h5"]


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputLocationError, match=rf"^--output_dir {tmp_path}/f is a file, not a directory\. Choose "
                                                  rf"another --output_dir or remove the file\.$"):
        check_output_dir(str(tmp_path / "f"))
    with pytest.raises(OutputLocationError, match=rf"^--output_dir {tmp_path}/f/run cannot be created: {tmp_path}/f "
                                                  rf"is a file, not a directory\."):
        check_output_dir(str(tmp_path / "f" / "run"))


def test_an_output_dir_that_does_not_exist_yet_passes_and_is_not_created(tmp_path):
    check_output_dir(str(tmp_path / "new" / "run"), needed_bytes=1024)
    assert os.listdir(tmp_path) == []


def test_an_output_dir_without_the_space_for_the_first_checkpoint_is_refused(tmp_path):
    with pytest.raises(OutputLocationError, match=rf"^--output_dir {tmp_path}/run has [\d.]+ MiB free on its "
                                                  rf"filesystem, but the first checkpoint needs about 953674316406\.2 "
                                                  rf"MiB\. Free some space or choose another --output_dir\.$"):
        check_output_dir(str(tmp_path / "run"), needed_bytes=10**18)


def test_an_output_dir_on_a_read_only_filesystem_is_refused(tmp_path):
    with tmpfs(str(tmp_path / "ro")) as mnt:
        os.makedirs(os.path.join(mnt, "existing"))
        remount_readonly(mnt)
        for path in (os.path.join(mnt, "existing"), os.path.join(mnt, "new", "run")):
            with pytest.raises(OutputLocationError, match=rf"^--output_dir {path} is on a read-only filesystem "
                                                          rf"\(.*\)\. Choose a writable --output_dir\.$"):
                check_output_dir(path)


def test_an_atomic_write_on_a_read_only_filesystem_says_so(tmp_path):
    with tmpfs(str(tmp_path / "ro")) as mnt:
        atomic_write_text(os.path.join(mnt, "a.txt"), "old")
        remount_readonly(mnt)
        with pytest.raises(OutputLocationError, match=r"Could not write .*/a\.txt: its filesystem is read-only\. The "
                                                      r"previous file is kept\. Choose a writable output directory\."):
            atomic_write_text(os.path.join(mnt, "a.txt"), "new")
        assert open(os.path.join(mnt, "a.txt")).read() == "old"


def _check_as(uid, path):
    """check_output_dir(path) in a forked child that runs as `uid` (None: as this user): its error message or ''."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return from here
        message = ""
        try:
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            check_output_dir(path)
        except BaseException as e:  # everything goes back to the parent
            message = str(e) or type(e).__name__
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        message = f.read()
    os.waitpid(pid, 0)
    return message


def test_an_output_dir_this_user_cannot_write_is_refused(tmp_path):
    """As root every directory is writable, so the check runs as `nobody` there."""
    top = tempfile.mkdtemp(dir="/tmp" if os.geteuid() == 0 else str(tmp_path))
    locked = os.path.join(top, "locked")
    try:
        os.chmod(top, 0o755)
        os.makedirs(locked)
        os.chmod(locked, 0o555)
        assert _check_as(65534 if os.geteuid() == 0 else None, os.path.join(locked, "run")) == (
            f"--output_dir {locked}/run is not writable by this user ({locked} is not). Choose another --output_dir "
            f"or change its permissions.")
    finally:
        os.chmod(locked, 0o755)
        subprocess.run(["rm", "-rf", top], check=True)


def _left(directory):
    return sorted(os.listdir(directory))


def test_a_full_disk_keeps_the_previous_npz_and_leaves_no_temporary_file(tmp_path):
    with tmpfs(str(tmp_path / "small"), "1m") as mnt:
        path = os.path.join(mnt, "alphas.npz")
        atomic_savez(path, {"a": np.arange(10.0)})
        with pytest.raises(OutputLocationError, match=rf"^Could not write {path}: no space left on its filesystem \(or "
                                                      rf"over quota\)\. The previous file is kept\. Free some space or "
                                                      rf"choose another output directory, then run again\.$"):
            atomic_savez(path, {"a": np.zeros(300_000)})  # 2.4 MB
        np.testing.assert_array_equal(load_npz(path, "alpha file", "-")["a"], np.arange(10.0))
        assert _left(mnt) == ["alphas.npz"]


def test_a_full_disk_keeps_the_previous_json_and_leaves_no_temporary_file(tmp_path):
    with tmpfs(str(tmp_path / "small"), "1m") as mnt:
        path = os.path.join(mnt, "metrics.json")
        write_json(path, {"epoch": 1})
        with pytest.raises(OutputLocationError, match=r"no space left on its filesystem.*The previous file is kept"):
            write_json(path, {"epoch": 2, "log": "x" * 2_000_000})
        assert open(path).read() == '{\n "epoch": 1\n}\n'
        assert _left(mnt) == ["metrics.json"]


def test_json_with_nan_or_infinity_is_refused_and_nothing_is_written(tmp_path):
    path = str(tmp_path / "metrics.json")
    write_json(path, {"history": [{"loss": 1.0}]})
    with pytest.raises(ValueError, match=rf"^Refusing to write {path}: history\[1\]\.loss, final\.val_loss are not "
                                         rf"finite \(NaN or infinity\), which JSON cannot hold\. Nothing was written\.$"):
        write_json(path, {"history": [{"loss": 1.0}, {"loss": float("nan")}], "final": {"val_loss": np.float32("inf")}})
    assert open(path).read() == '{\n "history": [\n  {\n   "loss": 1.0\n  }\n ]\n}\n'


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_npz_gives_one_error_naming_the_file_and_the_fix(tmp_path, how):
    path = str(tmp_path / "alphas.npz")
    atomic_savez(path, {"a": np.arange(1000.0), "b": np.ones(1000)})
    damage_file(path, how)
    with pytest.raises(DamagedFileError, match=rf"^{path} is damaged \(truncated or not a darts_tf alpha file: \w+: .*"
                                               rf"\): run the search again\.$"):
        load_npz(path, "alpha file", "run the search again.")


# ------------------------------------------------------------------------------ remote filesystems (tf.io.gfile)
# TensorFlow's in-memory filesystem (ram://, one per process) stands in for gs://, s3://, hdfs://.


@pytest.fixture
def ram(request):
    """A fresh ram:// directory, removed afterwards."""
    import tensorflow as tf

    root = f"ram://io-utils/{request.node.name}"
    yield root
    if tf.io.gfile.exists(root):
        tf.io.gfile.rmtree(root)


def test_paths_with_a_scheme_are_remote_and_file_urls_local():
    assert io_utils.is_remote("gs://bucket/run") and io_utils.is_remote("ram://x") and io_utils.is_remote("s3://b/k")
    assert not io_utils.is_remote("/tmp/run") and not io_utils.is_remote("runs/x") and not io_utils.is_remote("file:///t")
    assert io_utils.absolute("gs://bucket/run") == "gs://bucket/run"


def test_atomic_writes_json_and_npz_round_trip_on_a_remote_filesystem(ram):
    atomic_write_text(f"{ram}/a/b.txt", "text")  # parents are created
    write_json(f"{ram}/c.json", {"x": 1})
    atomic_savez(f"{ram}/d.npz", {"x": np.arange(3)})
    io_utils.atomic_write_bytes(f"{ram}/e.bin", b"\x00\x01")
    assert io_utils.read_bytes(f"{ram}/a/b.txt") == b"text"
    assert io_utils.load_json(f"{ram}/c.json", "test file", "fix") == {"x": 1}
    np.testing.assert_array_equal(load_npz(f"{ram}/d.npz", "test file", "fix")["x"], np.arange(3))
    assert io_utils.walk_files(ram) == ["a/b.txt", "c.json", "d.npz", "e.bin"]  # no temporary left behind
    assert io_utils.isfile(f"{ram}/c.json") and io_utils.isdir(f"{ram}/a") and not io_utils.isfile(f"{ram}/a")
    with pytest.raises(FileNotFoundError):
        load_npz(f"{ram}/missing.npz", "test file", "fix")


def test_a_damaged_remote_npz_is_one_clear_error(ram):
    io_utils.atomic_write_bytes(f"{ram}/state.npz", b"PK\x03\x04 not really a zip")
    with pytest.raises(DamagedFileError, match=r"state\.npz is damaged .*: restore it"):
        load_npz(f"{ram}/state.npz", "checkpoint", "restore it")


def test_publish_directory_on_a_remote_filesystem_copies_the_markers_last(ram, monkeypatch):
    target = f"{ram}/artifact"
    atomic_write_text(f"{target}/old.txt", "old")
    order = []
    original = io_utils._atomic_remote
    monkeypatch.setattr(io_utils, "_atomic_remote",
                        lambda path, mode, write: (order.append(path.rsplit("/", 1)[-1]), original(path, mode, write)))
    with publish_directory(target, verify=lambda d: io_utils.isfile(f"{d}/artifact.json") or 1 / 0) as tmp:
        write_json(f"{tmp}/artifact.json", {"type": "X"})
        atomic_write_text(f"{tmp}/sub/deep.txt", "deep")
        atomic_write_text(f"{tmp}/top.txt", "top")
    assert io_utils.walk_files(target) == ["artifact.json", "sub/deep.txt", "top.txt"]  # replaced as a whole
    published = [name for name in order if not name.startswith(".tmp-")]
    assert published[-1] == "artifact.json" and published.index("deep.txt") < published.index("top.txt")
    assert [n for n in io_utils.listdir(ram)] == ["artifact"]  # the temporary directory is gone


def test_a_failed_remote_publish_leaves_the_previous_directory(ram):
    target = f"{ram}/artifact"
    atomic_write_text(f"{target}/kept.txt", "kept")
    with pytest.raises(ZeroDivisionError):
        with publish_directory(target, verify=lambda d: 1 / 0) as tmp:
            atomic_write_text(f"{tmp}/new.txt", "new")
    assert io_utils.walk_files(target) == ["kept.txt"] and io_utils.listdir(ram) == ["artifact"]


def test_check_output_dir_on_a_remote_filesystem_refuses_only_a_file(ram):
    check_output_dir(f"{ram}/new-run")  # nothing to check beyond this: no statvfs on an object store
    atomic_write_text(f"{ram}/a-file", "x")
    with pytest.raises(OutputLocationError, match="is a file, not a directory"):
        check_output_dir(f"{ram}/a-file")


def test_remove_temporaries_and_copy_tree_on_a_remote_filesystem(ram, tmp_path):
    atomic_write_text(f"{ram}/run/.tmp-123-state.npz", "half")
    atomic_write_text(f"{ram}/run/sub/.tmp-x/left.txt", "half")
    atomic_write_text(f"{ram}/run/kept.json", "{}")
    removed = io_utils.remove_temporaries(f"{ram}/run")
    assert sorted(p.rsplit("/", 1)[-1] for p in removed) == [".tmp-123-state.npz", ".tmp-x"]
    assert io_utils.walk_files(f"{ram}/run") == ["kept.json"]
    assert io_utils.copy_tree(f"{ram}/run", str(tmp_path / "local")) == ["kept.json"]  # remote -> local
    assert (tmp_path / "local" / "kept.json").read_text() == "{}"
    io_utils.copy_tree(str(tmp_path / "local"), f"{ram}/back")  # local -> remote
    assert io_utils.read_bytes(f"{ram}/back/kept.json") == b"{}"


def test_keras_files_save_to_a_remote_filesystem_through_a_local_temporary(ram):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    io_utils.save_model_atomic(model, f"{ram}/m.keras")
    io_utils.save_weights_atomic(model, f"{ram}/w.weights.h5")
    assert io_utils.walk_files(ram) == ["m.keras", "w.weights.h5"]
    assert keras.models.load_model(f"{ram}/m.keras").count_params() == model.count_params()
