"""Atomic file and directory writes: readers (a resumed run, the next pipeline stage) never see half a file.

Every write goes to a temporary name beside its target and is renamed over it: a kill, a full disk or a read-only
filesystem leaves the previous file as it was and no temporary file behind. What is written gets the mode a plain
``open()`` / ``os.makedirs`` would give under the current umask (0644 / 0755 under 022), so another user or container
can read a run. ``check_output_dir`` refuses an output location that cannot take the run before any work starts.

Paths with a scheme (``gs://bucket/run``, ``s3://...``, ``hdfs://...``, TensorFlow's in-memory ``ram://``) go through
``tf.io.gfile``, which TensorFlow is only imported for then; local paths keep plain ``os`` calls. On such a
filesystem a file is written under a temporary name and renamed (an object store copies it: the object appears
whole or not at all). A directory cannot be renamed atomically there (an object store has no directories), so
``publish_directory`` copies the finished directory file by file with its *marker* files (``PUBLISH_LAST``: an
artifact's ``artifact.json``, a SavedModel's ``saved_model.pb``) last: a reader that looks for the marker first sees
the whole directory or none of it, but while an existing directory is replaced there is a moment without it. Free
space, permissions and read-only mounts cannot be checked there before the run: a failed write says so itself.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Type

import numpy as np

# A path with a URL scheme (gs://, s3://, hdfs://, ram://): a filesystem only TensorFlow's gfile reaches.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Files that `publish_directory` copies last onto a remote filesystem: their presence means the directory is whole.
PUBLISH_LAST = ("artifact.json", "saved_model.pb")


def is_remote(path: str) -> bool:
    """Whether `path` names a file on a filesystem reached through ``tf.io.gfile`` (it has a scheme: gs://, ram://);
    ``file://`` paths are local."""
    return bool(_SCHEME.match(str(path))) and not str(path).startswith("file://")


def _local(path: str) -> str:
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def absolute(path: str) -> str:
    """``os.path.abspath`` for a local path; a remote one is already absolute."""
    return path if is_remote(path) else os.path.abspath(_local(path))


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(_local(path))


def isfile(path: str) -> bool:
    """A regular file (``os.path.isfile``; remote: exists and is no directory)."""
    if is_remote(path):
        return _gfile().exists(path) and not _gfile().isdir(path)
    return os.path.isfile(_local(path))


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(_local(path))


def makedirs(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, or ``tf.io.gfile.makedirs``."""
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(_local(path), exist_ok=True)


def listdir(path: str) -> List[str]:
    return [n.rstrip("/") for n in _gfile().listdir(path)] if is_remote(path) else os.listdir(_local(path))


def file_size(path: str) -> int:
    return _gfile().stat(path).length if is_remote(path) else os.path.getsize(_local(path))


def open_file(path: str, mode: str = "r") -> IO:
    """``open(path, mode)`` (text modes as UTF-8), or a ``tf.io.gfile.GFile``; a missing file raises
    FileNotFoundError either way."""
    if not is_remote(path):
        return open(_local(path), mode, **({} if "b" in mode else {"encoding": "utf-8"}))
    if "r" in mode and not _gfile().exists(path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    return _gfile().GFile(path, mode)


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def remove_tree(path: str) -> None:
    """Removes a file or a directory tree if it exists."""
    if is_remote(path):
        if _gfile().isdir(path):
            _gfile().rmtree(path)
        elif _gfile().exists(path):
            _gfile().remove(path)
    elif os.path.isdir(_local(path)) and not os.path.islink(_local(path)):
        shutil.rmtree(_local(path))
    elif os.path.lexists(_local(path)):
        os.remove(_local(path))


def walk_files(directory: str) -> List[str]:
    """Every file below `directory`, as paths relative to it ('/'-separated), sorted."""
    found = []
    if is_remote(directory):
        base = directory.rstrip("/")
        for parent, _, names in _gfile().walk(base):
            rel = parent.rstrip("/")[len(base):].lstrip("/")
            found.extend(f"{rel}/{n}" if rel else n for n in names)
    else:
        directory = _local(directory)
        for parent, _, names in os.walk(directory):
            rel = os.path.relpath(parent, directory).replace(os.sep, "/")
            found.extend(n if rel == "." else f"{rel}/{n}" for n in names)
    return sorted(found)


def _publish_order(files: Sequence[str]) -> List[str]:
    """Deeper files first, then the top level, the `PUBLISH_LAST` markers at the very end (at any depth)."""
    return sorted(files, key=lambda f: (os.path.basename(f) in PUBLISH_LAST, f.count("/") == 0, f))


def copy_tree(src: str, dst: str) -> List[str]:
    """Copies the files of directory `src` into `dst` (created; existing files replaced), each through a temporary
    name, the `PUBLISH_LAST` markers last; local or remote on either side. Returns the relative paths copied."""
    files = _publish_order(walk_files(src))
    makedirs(dst)
    for rel in files:
        source, target = f"{src.rstrip('/')}/{rel}", f"{dst.rstrip('/')}/{rel}"
        if not is_remote(src) and not is_remote(dst):
            source, target = os.path.join(_local(src), *rel.split("/")), os.path.join(_local(dst), *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _atomic(target, "wb", lambda f, s=source: _copy_into(s, f))
        else:
            parent = target.rsplit("/", 1)[0]
            makedirs(parent)
            _atomic(target, "wb", lambda f, s=source: _copy_into(s, f))
    return files


def _copy_into(source: str, f) -> None:
    with open_file(source, "rb") as src:
        shutil.copyfileobj(src, f, 1 << 22)


class OutputLocationError(ValueError):
    """An output path that cannot be written (a file, read-only, not writable, full); the message says the fix."""


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by setting it, which would race
    with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(directory: bool = False) -> int:
    """The mode ``open(path, 'w')`` (0666) or ``os.makedirs`` (0777) would give under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def _write_error(path: str, e: OSError) -> OutputLocationError:
    """The clear error of a failed write of `path` (the previous file, if any, is left as it was)."""
    kept = " The previous file is kept." if os.path.exists(path) else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputLocationError(f"Could not write {path}: no space left on its filesystem (or over quota).{kept} "
                                   f"Free some space or choose another output directory, then run again.")
    if e.errno == errno.EROFS:
        return OutputLocationError(f"Could not write {path}: its filesystem is read-only.{kept} Choose a writable "
                                   f"output directory.")
    return OutputLocationError(f"Could not write {path}: {e.strerror}.{kept} Check the permissions of "
                               f"{os.path.dirname(path)} or choose another output directory.")


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _atomic(path: str, mode: str, write) -> None:
    if is_remote(path):
        return _atomic_remote(path, mode, write)
    path = os.path.abspath(_local(path))
    directory = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            os.fchmod(f.fileno(), _default_mode())  # mkstemp makes 0600
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            raise _write_error(path, e) from e
        raise


def _remote_temporary(path: str) -> str:
    parent, _, name = path.rstrip("/").rpartition("/")
    return f"{parent}/.tmp-{uuid.uuid4().hex[:12]}-{name}"


def _atomic_remote(path: str, mode: str, write) -> None:
    """`write(f)` into a temporary file beside `path` on a gfile filesystem, then a rename over `path`."""
    gfile = _gfile()
    gfile.makedirs(path.rstrip("/").rpartition("/")[0])
    tmp = _remote_temporary(path)
    try:
        with gfile.GFile(tmp, mode) as f:
            write(f)
        gfile.rename(tmp, path, overwrite=True)
    except BaseException as e:
        with contextlib.suppress(Exception):
            if gfile.exists(tmp):
                gfile.remove(tmp)
        if not isinstance(e, Exception) or isinstance(e, (ValueError, TypeError)):
            raise
        raise OutputLocationError(f"Could not write {path}: {type(e).__name__}: {e}. Check that the location exists "
                                  f"and that this process may write there (credentials, bucket permissions), or "
                                  f"choose another output directory.") from e


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""
    _atomic(path, "w", lambda f: f.write(text))


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file and a rename."""
    _atomic(path, "wb", lambda f: f.write(data))


def atomic_savez(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """``np.savez`` to `path` through a temporary file and a rename (in memory first on a remote filesystem, whose
    files cannot seek)."""
    if is_remote(path):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
    else:
        _atomic(path, "wb", lambda f: np.savez(f, **arrays))


class DamagedFileError(ValueError):
    """A file of a run that cannot be read back (truncated, garbled, or not what darts_tf writes)."""


def load_npz(path: str, what: str, fix: str, error: Type[ValueError] = DamagedFileError) -> Dict[str, np.ndarray]:
    """Every array of the ``.npz`` file `path` (a darts_tf `what`: "checkpoint", "alpha file"), read into memory; a
    file that cannot be read raises one `error` naming it and `fix` (what the user should do)."""
    try:
        source = io.BytesIO(read_bytes(path)) if is_remote(path) else path
        with np.load(source, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise
    except Exception as e:  # zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError: all mean a damaged file
        raise error(damaged_message(path, what, e, fix)) from e


def load_json(path: str, what: str, fix: str, error: Type[ValueError] = DamagedFileError) -> Any:
    """The JSON document `path` (a darts_tf `what`: "run config", "metrics file"); a file that cannot be read back
    (truncated, garbled, not UTF-8) raises one `error` naming it and `fix`, as `load_npz` does."""
    try:
        with open_file(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError, OSError) as e:  # json.JSONDecodeError is a ValueError
        raise error(damaged_message(path, what, e, fix)) from e


def damaged_message(path: str, what: str, cause: BaseException, fix: str) -> str:
    return f"{path} is damaged (truncated or not a darts_tf {what}: {type(cause).__name__}: {cause}): {fix}"


def json_default(value):
    """JSON for NumPy scalars and arrays (and anything else as its string)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _non_finite_at(data: Any, where: str = "") -> List[str]:
    """Where in `data` (JSON-like) a number is NaN or infinite: 'history[1].loss', ..."""
    if isinstance(data, np.ndarray):
        return _non_finite_at(data.tolist(), where)
    if isinstance(data, dict):
        return [w for k, v in data.items() for w in _non_finite_at(v, f"{where}.{k}" if where else str(k))]
    if isinstance(data, (list, tuple)):
        return [w for i, v in enumerate(data) for w in _non_finite_at(v, f"{where}[{i}]")]
    if isinstance(data, (float, np.floating)) and not np.isfinite(data):
        return [where or "the value"]
    return []


def write_json(path: str, data: Any) -> None:
    """`data` as JSON to `path`, atomically. NaN and infinity (which JSON has not) are refused: nothing is written."""
    try:
        text = json.dumps(data, indent=1, sort_keys=True, default=json_default, allow_nan=False)
    except ValueError:
        bad = _non_finite_at(data)
        if not bad:
            raise
        raise ValueError(f"Refusing to write {path}: {', '.join(bad[:5])} {'is' if len(bad) == 1 else 'are'} not "
                         f"finite (NaN or infinity), which JSON cannot hold. Nothing was written.") from None
    atomic_write_text(path, text + "\n")


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_output_dir(path: str, needed_bytes: int = 0, flag: str = "--output_dir") -> None:
    """Refuses an output directory the run could not write, before any data is loaded or model built.

    `path` may not exist yet (it is created later); the checks are made on it or its nearest existing parent:
    not a regular file, writable by this user, not on a read-only filesystem, and at least `needed_bytes` free
    (an estimate of the first checkpoint, e.g. ``darts_tf.checkpoint.state_size_bytes``). Raises
    ``OutputLocationError`` (a ValueError) naming the path and the fix.

    On a remote filesystem (gs://, ram://) only "not a file" is checked: free space, permissions and read-only
    mounts are not visible from here, and the first write that fails says so.
    """
    if is_remote(path):
        if exists(path) and not isdir(path):
            raise OutputLocationError(f"{flag} {path} is a file, not a directory. Choose another {flag} or remove "
                                      f"the file.")
        return
    path = os.path.abspath(_local(path))
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        what = f"{flag} {path}" if existing == path else f"{flag} {path} cannot be created: {existing}"
        raise OutputLocationError(f"{what} is a file, not a directory. Choose another {flag} or remove the file.")
    stat = os.statvfs(existing)
    if stat.f_flag & os.ST_RDONLY:
        raise OutputLocationError(f"{flag} {path} is on a read-only filesystem ({existing}). Choose a writable "
                                  f"{flag}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputLocationError(f"{flag} {path} is not writable by this user ({existing} is not). Choose another "
                                  f"{flag} or change its permissions.")
    free = stat.f_bavail * stat.f_frsize
    if needed_bytes > free:
        raise OutputLocationError(f"{flag} {path} has {free / 2**20:.1f} MiB free on its filesystem, but the first "
                                  f"checkpoint needs about {needed_bytes / 2**20:.1f} MiB. Free some space or choose "
                                  f"another {flag}.")


@contextlib.contextmanager
def publish_directory(path: str, verify: Optional[Callable[[str], Any]] = None) -> Iterator[str]:
    """Yields a temporary directory beside `path` to fill; on success (and after `verify(tmp)`, if given, returned)
    it replaces `path` by a rename (an existing one is swapped out first), so readers see the old content or the
    whole new one, never half. On any error the temporary directory is removed and `path` is left as it was.

    On a remote filesystem (gs://, ram://; no atomic directory rename) the finished directory is copied into place
    file by file, the `PUBLISH_LAST` markers last, after an existing `path` is removed (see the module docstring)."""
    if is_remote(path):
        with _publish_remote(path.rstrip("/"), verify) as tmp:
            yield tmp
        return
    path = os.path.abspath(_local(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{os.path.basename(path)}-")
    try:
        os.chmod(tmp, _default_mode(directory=True))  # mkdtemp makes 0700
        yield tmp
        if verify is not None:
            verify(tmp)
        if os.path.lexists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".old-{os.path.basename(path)}-")
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            if os.path.isdir(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _publish_remote(path: str, verify: Optional[Callable[[str], Any]]) -> Iterator[str]:
    tmp = _remote_temporary(path)
    makedirs(tmp)
    try:
        yield tmp
        if verify is not None:
            verify(tmp)
        remove_tree(path)
        copy_tree(tmp, path)
    finally:
        with contextlib.suppress(Exception):
            remove_tree(tmp)


# The names of this module's temporaries: a file or directory being written (.tmp-), one being replaced (.old-).
TEMPORARY_PREFIXES = (".tmp-", ".old-")


def remove_temporaries(directory: str) -> List[str]:
    """Removes the temporaries that writers killed mid-write left in `directory` and below (never read: each is
    renamed over its target only once complete); returns their paths. Call it when a run starts in its directory,
    where no other process writes, so that killed and resumed runs do not pile them up."""
    removed = []
    if is_remote(directory):
        for rel in walk_files(directory) if isdir(directory) else []:
            parts = rel.split("/")
            hit = next((i for i, p in enumerate(parts) if p.startswith(TEMPORARY_PREFIXES)), None)
            if hit is not None:
                path = "/".join([directory.rstrip("/"), *parts[:hit + 1]])
                if path not in removed:
                    remove_tree(path)
                    removed.append(path)
        return removed
    for parent, subdirs, names in os.walk(directory):
        for name in [*names, *subdirs]:
            if name.startswith(TEMPORARY_PREFIXES):
                path = os.path.join(parent, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
                removed.append(path)
        subdirs[:] = [d for d in subdirs if not d.startswith(TEMPORARY_PREFIXES)]
    return removed


def _save_through_rename(path: str, save: Callable[[str], Any]) -> None:
    """`save(tmp)` to a temporary name in the same directory (keeping `path`'s suffix, which Keras checks), then a
    rename: readers never see half a file. A remote `path` is saved to a local temporary file and copied up."""
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="darts-save-") as local:
            tmp = os.path.join(local, path.rstrip("/").rpartition("/")[2])
            save(tmp)
            _atomic(path, "wb", lambda f: _copy_into(tmp, f))
        return
    path = _local(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        save(tmp)
        os.chmod(tmp, _default_mode())  # whatever mode the saver chose, the file follows the umask
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_model_atomic(model, path: str) -> None:
    """``model.save`` (a `.keras` file) written atomically."""
    _save_through_rename(path, model.save)


def save_weights_atomic(model, path: str) -> None:
    """``model.save_weights`` (a `.weights.h5` file) written atomically."""
    _save_through_rename(path, model.save_weights)
