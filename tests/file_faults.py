"""Faults of files and filesystems for the tests: a file damaged in place, and a small tmpfs mounted for a test
(full or read-only output locations; root only, the test is skipped with the reason otherwise)."""

import contextlib
import io
import os
import subprocess

import numpy as np
import pytest

DAMAGES = ("truncated", "garbled", "empty", "npy", "text")


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def damage_file(path: str, how: str) -> None:
    """Damages the file `path` in place, `how` one of ``DAMAGES``: cut in half, 64 bytes in the middle flipped, emptied,
    replaced by a single .npy array, or by a line of text."""
    data = open(path, "rb").read()
    middle = len(data) // 2
    data = {"truncated": lambda: data[:middle],
            "garbled": lambda: data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:],
            "empty": lambda: b"",
            "npy": lambda: _npy(np.ones(3)),
            "text": lambda: b"not an archive\n"}[how]()
    with open(path, "wb") as f:
        f.write(data)


def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here (mount {' '.join(args)}: {proc.stderr.strip()})")


@contextlib.contextmanager
def tmpfs(path: str, size: str = "1m") -> str:
    """A `size` tmpfs mounted at `path` (created) for the block; unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    os.makedirs(path, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=True)


def remount_readonly(path: str) -> None:
    """Makes the tmpfs at `path` read-only (what is on it stays readable)."""
    _mount("-o", "remount,ro", path)
