"""Argument checks shared by the input pipelines (`images`, `text`): one clear ValueError each."""

from __future__ import annotations


def check_epochs(initial_epoch: int, epochs: int) -> None:
    """`epochs` >= 1 and `initial_epoch` in [0, epochs): something is left to train."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1; received epochs={epochs}.")
    if not 0 <= initial_epoch < epochs:
        raise ValueError(
            f"initial_epoch must be in [0, epochs); received initial_epoch="
            f"{initial_epoch}, epochs={epochs}. Nothing is left to train.")


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; received batch_size={batch_size}.")


def check_batch(batch_size: int, n: int, what: str, fix: str) -> None:
    """A positive batch size no larger than the `n` examples of `what`; the error ends with `fix`."""
    check_batch_size(batch_size)
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {what} ({n} examples); {fix}.")
