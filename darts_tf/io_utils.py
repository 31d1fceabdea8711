"""Atomic file and directory writes: readers (a resumed run, the next pipeline stage) never see half a file.

Every write goes to a temporary name beside its target and is renamed over it: a kill, a full disk or a read-only
filesystem leaves the previous file as it was and no temporary file behind. What is written gets the mode a plain
``open()`` / ``os.makedirs`` would give under the current umask (0644 / 0755 under 022), so another user or container
can read a run. ``check_output_dir`` refuses an output location that cannot take the run before any work starts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Type

import numpy as np


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
    path = os.path.abspath(path)
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


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""
    _atomic(path, "w", lambda f: f.write(text))


def atomic_savez(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """``np.savez`` to `path` through a temporary file and a rename."""
    _atomic(path, "wb", lambda f: np.savez(f, **arrays))


class DamagedFileError(ValueError):
    """A file of a run that cannot be read back (truncated, garbled, or not what darts_tf writes)."""


def load_npz(path: str, what: str, fix: str, error: Type[ValueError] = DamagedFileError) -> Dict[str, np.ndarray]:
    """Every array of the ``.npz`` file `path` (a darts_tf `what`: "checkpoint", "alpha file"), read into memory; a
    file that cannot be read raises one `error` naming it and `fix` (what the user should do)."""
    try:
        with np.load(path, allow_pickle=False) as data:
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
        with open(path, encoding="utf-8") as f:
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
    """
    path = os.path.abspath(path)
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
    whole new one, never half. On any error the temporary directory is removed and `path` is left as it was."""
    path = os.path.abspath(path)
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


# The names of this module's temporaries: a file or directory being written (.tmp-), one being replaced (.old-).
TEMPORARY_PREFIXES = (".tmp-", ".old-")


def remove_temporaries(directory: str) -> List[str]:
    """Removes the temporaries that writers killed mid-write left in `directory` and below (never read: each is
    renamed over its target only once complete); returns their paths. Call it when a run starts in its directory,
    where no other process writes, so that killed and resumed runs do not pile them up."""
    removed = []
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
    rename: readers never see half a file."""
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
