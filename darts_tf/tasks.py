"""The task families of darts_tf by kind: ``get_task('cnn')`` / ``get_task('rnn')``; the stages (``components/``)
and the pipeline (``pipelines/``) ask it and never switch on the kind (``darts_tf.task`` says what a task is).

A family's module is imported the first time its task is asked for, so importing this module loads neither
TensorFlow nor Keras (compiling a pipeline does not need them).
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple, Type

from darts_tf.task import (REGISTERED, DataKindError, Dataset, SearchOutcome, Task, check_settings, coerce_numbers,
                           config_from_dict, register_task)

__all__ = ["DataKindError", "Dataset", "SearchOutcome", "Task", "check_settings", "coerce_numbers", "config_from_dict",
           "register_task", "known_kinds", "get_task", "BUILTIN_FAMILIES"]


def _cnn() -> Type[Task]:
    from darts_tf.cnn.task import CNNTask

    return CNNTask


def _rnn() -> Type[Task]:
    from darts_tf.rnn.task import RNNTask

    return RNNTask


# The families that ship with darts_tf: kind -> the import of its task (which registers it).
BUILTIN_FAMILIES: Dict[str, Callable[[], Type[Task]]] = {"cnn": _cnn, "rnn": _rnn}


def known_kinds() -> Tuple[str, ...]:
    return tuple(sorted(set(BUILTIN_FAMILIES) | set(REGISTERED)))


def get_task(kind: str) -> Task:
    """The task of `kind`; an unknown kind raises a ValueError listing the known ones."""
    if kind not in REGISTERED and kind in BUILTIN_FAMILIES:
        BUILTIN_FAMILIES[kind]()
    if kind not in REGISTERED:
        raise ValueError(f"Unknown task kind {kind!r}. Known kinds: {', '.join(known_kinds())}.")
    return REGISTERED[kind]()
