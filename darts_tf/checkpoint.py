"""Per-epoch training state on disk, written atomically, so a killed run resumes where it stopped.

One mechanism for every trainer (CNN/RNN search, evaluation): the state is every variable of the
model (weights, alphas, BatchNorm statistics, RNG seed-generator states, carried hidden states) and of its
optimizers, plus the number of finished epochs. ``run_config.json`` beside it records the flags, so a
resume with different flags is refused instead of silently mixing two runs.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from darts_tf.io_utils import atomic_savez
from darts_tf.run_files import RunFiles


def start_run(seed: int, deterministic: bool = False) -> None:
    """Starts a run from a fresh Keras session with every seed set, so that it is reproducible in any process.

    The session is cleared because layer names feed TensorFlow's graph optimiser: Grappler's arithmetic
    rewrites order floating-point sums by node name, and Keras numbers names by how many layers the process
    built before. Without the reset, a search run after other models in one process (a notebook, a test
    session, a resumed run) rounds differently from the same search in a fresh process, and Adam on
    near-zero architecture gradients magnifies that into different alphas. The global dtype policy is kept.
    """
    policy = keras.mixed_precision.global_policy()
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def state_variables(model: keras.Model, optimizers: Sequence[Any] = ()) -> List[keras.Variable]:
    """The variables that define a run's state, in a fixed order."""
    variables = list(model.variables)
    opts = list(optimizers) or [getattr(model, "optimizer", None), getattr(model, "arch_optimizer", None)]
    for opt in opts:
        if opt is not None:
            variables.extend(opt.variables)
    return variables


def save_state(directory: str, model: keras.Model, epochs_done: int, optimizers: Sequence[Any] = (),
               extra: Optional[Dict[str, Any]] = None) -> str:
    variables = state_variables(model, optimizers)
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    arrays["__paths__"] = np.array([v.path for v in variables])
    arrays["__meta__"] = np.array(json.dumps({"epochs_done": int(epochs_done), **(extra or {})}))
    path = RunFiles(directory).state
    atomic_savez(path, arrays)
    return path


def has_state(directory: str) -> bool:
    return os.path.isfile(RunFiles(directory).state)


def restore_state(directory: str, model: keras.Model, optimizers: Sequence[Any] = ()) -> Dict[str, Any]:
    """Assigns the saved values; returns the metadata ({'epochs_done': n, ...})."""
    path = RunFiles(directory).state
    variables = state_variables(model, optimizers)
    with np.load(path, allow_pickle=False) as data:
        paths = list(data["__paths__"])
        if len(paths) != len(variables):
            raise ValueError(f"Checkpoint {path} holds {len(paths)} variables but this model and its optimizers have "
                             f"{len(variables)}: it was written by a different model. Use a new output directory.")
        for i, v in enumerate(variables):
            value = data[f"v{i:05d}"]
            if tuple(value.shape) != tuple(v.shape):
                raise ValueError(f"Checkpoint {path}: variable {paths[i]} has shape {value.shape}, the model's {v.path} "
                                 f"has {tuple(v.shape)}. Use a new output directory or the same flags.")
            v.assign(value)
        return json.loads(str(data["__meta__"]))


def check_run_config(directory: str, config: Dict[str, Any], resume: bool,
                     ignore: Iterable[str] = ("resume", "epochs")) -> None:
    """Writes `config` as the run's flags, or refuses a directory that holds another run's checkpoint.

    With ``resume`` the saved flags must match (except the keys in `ignore`); without it, a directory that
    already holds a checkpoint is refused so that a run never overwrites another one by accident.
    """
    os.makedirs(directory, exist_ok=True)
    path = RunFiles(directory).run_config
    if has_state(directory) and os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if not resume:
            raise ValueError(f"Output directory {directory} already holds a run's checkpoint. Pass --resume to continue "
                             f"it, or choose a new --output_dir.")
        diffs = [k for k in sorted(set(saved) | set(config)) if k not in ignore and saved.get(k) != config.get(k)]
        if diffs:
            detail = "; ".join(f"{k}: checkpoint has {saved.get(k)!r}, now {config.get(k)!r}" for k in diffs)
            raise ValueError(f"Output directory {directory} holds another run's checkpoint with different flags ({detail}). "
                             f"Resume with the same flags or choose a new --output_dir.")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state at the end of every epoch (atomically)."""

    def __init__(self, directory: str, optimizers: Sequence[Any] = (), extra_fn=None):
        super().__init__()
        self.directory, self.optimizers, self.extra_fn = directory, optimizers, extra_fn

    def on_epoch_end(self, epoch, logs=None):
        extra = self.extra_fn(epoch) if self.extra_fn else None
        save_state(self.directory, self.model, epoch + 1, self.optimizers, extra)
