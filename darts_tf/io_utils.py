"""Atomic file and directory writes: readers (a resumed run, the next pipeline stage) never see half a file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np


def _atomic(path: str, mode: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""
    _atomic(path, "w", lambda f: f.write(text))


def atomic_savez(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """``np.savez`` to `path` through a temporary file and a rename."""
    _atomic(path, "wb", lambda f: np.savez(f, **arrays))


def json_default(value):
    """JSON for NumPy scalars and arrays (and anything else as its string)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=json_default) + "\n")


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


def _save_through_rename(path: str, save: Callable[[str], Any]) -> None:
    """`save(tmp)` to a temporary name in the same directory (keeping `path`'s suffix, which Keras checks), then a
    rename: readers never see half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        save(tmp)
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
