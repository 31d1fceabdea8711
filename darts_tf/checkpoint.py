"""Per-epoch training state on disk, written atomically, so a killed run resumes where it stopped.

One mechanism for every trainer (CNN/RNN search, evaluation): the state is every variable of the
model (weights, alphas, BatchNorm statistics, RNG seed-generator states, carried hidden states) and of its
optimizers, plus the number of finished epochs. ``run_config.json`` beside it records the flags, so a
resume with different flags is refused instead of silently mixing two runs.

The state is one ``.npz`` file written through ``darts_tf.io_utils`` (built in memory and written in one piece on a
remote filesystem, gs:// or ram://), so a run directory may live on a bucket as well as on a disk.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from darts_tf.guards import SEARCH_RATE_FLAGS, WEIGHT_RATE_FLAGS, check_finite, lower_rate_hint
from darts_tf import io_utils
from darts_tf.graph_options import apply_graph_options
from darts_tf.io_utils import atomic_savez, damaged_message, load_json, load_npz, remove_temporaries, write_json
from darts_tf.run_files import RunFiles


def start_run(seed: int, deterministic: bool = False) -> None:
    """Starts a run from a fresh Keras session with every seed set, so that it is reproducible in any process.

    The session is cleared because layer names feed TensorFlow's graph optimiser: Grappler's arithmetic
    rewrites order floating-point sums by node name, and Keras numbers names by how many layers the process
    built before. Without the reset, a search run after other models in one process (a notebook, a test
    session, a resumed run) rounds differently from the same search in a fresh process, and Adam on
    near-zero architecture gradients magnifies that into different alphas. The global dtype policy is kept.
    The traced steps then get darts_tf's Grappler options (``graph_options``: one round, no memory optimizer).
    """
    policy = keras.mixed_precision.global_policy()
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_global_policy(policy)
    apply_graph_options()
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


class CheckpointError(ValueError):
    """A training_state.npz that cannot be resumed (damaged, from another model or version); the message names the
    file and the fix."""


_START_OVER = "delete it to start over, or restore a copy"


def state_size_bytes(model: keras.Model, optimizers: Sequence[Any] = ()) -> int:
    """About the size of the model's checkpoint file (what ``io_utils.check_output_dir`` needs free before the first
    epoch): the bytes of every state variable, plus room for the names and metadata."""
    return sum(np.asarray(v.numpy()).nbytes for v in state_variables(model, optimizers)) + 65536


def save_state(directory: str, model: keras.Model, epochs_done: int, optimizers: Sequence[Any] = (),
               extra: Optional[Dict[str, Any]] = None) -> str:
    """Writes the run's state to ``training_state.npz`` (atomically); a state holding NaN or inf is refused
    (``guards.NonFiniteError``) and the previous checkpoint is kept."""
    variables = state_variables(model, optimizers)
    values = [np.asarray(v.numpy()) for v in variables]
    path = RunFiles(directory).state
    rates = SEARCH_RATE_FLAGS if hasattr(model, "arch_variables") else WEIGHT_RATE_FLAGS
    kept = f"{path} still holds the last good state" if io_utils.isfile(path) else "no checkpoint was written"
    check_finite({v.path: x for v, x in zip(variables, values)}, f"After epoch {epochs_done} the training state's values",
                 f"{lower_rate_hint(rates)}. The state was not saved: {kept}.")
    arrays = {f"v{i:05d}": x for i, x in enumerate(values)}
    arrays["__paths__"] = np.array([v.path for v in variables])
    arrays["__meta__"] = np.array(json.dumps({"epochs_done": int(epochs_done), **(extra or {})}))
    atomic_savez(path, arrays)
    return path


def has_state(directory: str) -> bool:
    return io_utils.isfile(RunFiles(directory).state)


_KERAS_UID = re.compile(r"_\d+(?=/|_|$)")


def _canonical(path: str) -> str:
    """A variable path without Keras' per-process name counters ("dense_3/kernel" -> "dense/kernel")."""
    return _KERAS_UID.sub("", path)


def _keyed(paths: Sequence[str], key) -> List[Tuple[str, int]]:
    """(key(path), how many earlier paths had that key): unique names for a list of possibly repeated keys."""
    seen: Dict[str, int] = {}
    out = []
    for p in paths:
        k = key(p)
        out.append((k, seen.get(k, 0)))
        seen[k] = seen.get(k, 0) + 1
    return out


def _match(saved: Sequence[str], wanted: Sequence[str]) -> Optional[List[int]]:
    """For each wanted variable path, the index of the saved variable with that path, or None if the paths differ.

    Exact paths first (a resume in a fresh process, where Keras names every layer as the run did); else the paths
    without Keras' name counters, which differ when models were built before in the process (tests, notebooks).
    """
    for key in (lambda p: p, _canonical):
        index = {k: i for i, k in enumerate(_keyed(saved, key))}
        keys = _keyed(wanted, key)
        if all(k in index for k in keys) and len(keys) == len(index):
            return [index[k] for k in keys]
    return None


def restore_state(directory: str, model: keras.Model, optimizers: Sequence[Any] = ()) -> Dict[str, Any]:
    """Assigns the saved values to the model's and optimizers' variables, matched by path; returns the metadata
    ({'epochs_done': n, ...}). A damaged or incompatible file raises one ``CheckpointError`` and assigns nothing."""
    path = RunFiles(directory).state
    variables = state_variables(model, optimizers)
    data = load_npz(path, "checkpoint", f"{_START_OVER}.", CheckpointError)
    try:
        saved = [str(p) for p in data["__paths__"]]
        meta = json.loads(str(data["__meta__"]))
        values = [data[f"v{i:05d}"] for i in range(len(saved))]
        int(meta["epochs_done"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(damaged_message(path, "checkpoint", e, f"{_START_OVER}.")) from e
    order = _match(saved, [v.path for v in variables])
    if order is None:
        have = {_canonical(p) for p in saved}
        want = {_canonical(v.path) for v in variables}
        detail = "; ".join(f"{label}: {', '.join(sorted(names)[:4])}{' ...' if len(names) > 4 else ''}"
                           for label, names in (("only in the checkpoint", have - want),
                                                ("only in this model", want - have)) if names)
        raise CheckpointError(f"{path} holds {len(saved)} variables, this model and its optimizers have "
                              f"{len(variables)}, and they differ ({detail or 'in how often a name repeats'}): it was "
                              f"written by a different model or darts_tf version. Resume with the flags and version "
                              f"that wrote it, or {_START_OVER}.")
    for v, i in zip(variables, order):
        if tuple(values[i].shape) != tuple(v.shape):
            raise CheckpointError(f"Checkpoint {path}: variable {saved[i]} has shape {values[i].shape}, the model's "
                                  f"{v.path} has {tuple(v.shape)}. Use a new output directory or the same flags.")
    for v, i in zip(variables, order):
        v.assign(values[i])
    return meta


def check_run_config(directory: str, config: Dict[str, Any], resume: bool,
                     ignore: Iterable[str] = ("resume", "epochs")) -> None:
    """Writes `config` as the run's flags, or refuses a directory that holds another run's checkpoint.

    With ``resume`` the saved flags must match (except the keys in `ignore`); without it, a directory that
    already holds a checkpoint is refused so that a run never overwrites another one by accident. An accepted run
    first removes the temporary files that a killed run left behind (``io_utils.remove_temporaries``).
    """
    io_utils.makedirs(directory)
    path = RunFiles(directory).run_config
    if has_state(directory) and io_utils.isfile(path):
        saved = load_json(path, "run config", "restore a copy of it, or choose a new --output_dir (the checkpoint "
                          "cannot be resumed without the flags it was written with).")
        if not resume:
            raise ValueError(f"Output directory {directory} already holds a run's checkpoint. Pass --resume to continue "
                             f"it, or choose a new --output_dir.")
        diffs = [k for k in sorted(set(saved) | set(config)) if k not in ignore and saved.get(k) != config.get(k)]
        if diffs:
            detail = "; ".join(f"{k}: checkpoint has {saved.get(k)!r}, now {config.get(k)!r}" for k in diffs)
            raise ValueError(f"Output directory {directory} holds another run's checkpoint with different flags ({detail}). "
                             f"Resume with the same flags or choose a new --output_dir.")
    remove_temporaries(directory)
    write_json(path, config)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state at the end of every epoch (atomically)."""

    def __init__(self, directory: str, optimizers: Sequence[Any] = (), extra_fn=None):
        super().__init__()
        self.directory, self.optimizers, self.extra_fn = directory, optimizers, extra_fn

    def on_epoch_end(self, epoch, logs=None):
        extra = self.extra_fn(epoch) if self.extra_fn else None
        save_state(self.directory, self.model, epoch + 1, self.optimizers, extra)


def saved_epochs(directory: str) -> int:
    """The epochs finished according to the checkpoint in `directory` (0 without one or when it does not read back:
    the run that resumes it then reports the damage itself)."""
    if not has_state(directory):
        return 0
    try:
        meta = load_npz(RunFiles(directory).state, "checkpoint", f"{_START_OVER}.", CheckpointError)["__meta__"]
        return int(json.loads(str(meta))["epochs_done"])
    except (CheckpointError, KeyError, ValueError, TypeError):
        return 0
