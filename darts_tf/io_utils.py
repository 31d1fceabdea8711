"""Atomic file writes: readers (a resumed run, the next pipeline stage) never see half a file."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict

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
