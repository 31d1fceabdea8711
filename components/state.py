"""Resumable stage state: where the long stages (search, evaluate, transfer) train, so that a retried pod continues.

A pipeline stage writes its artifacts into a directory of its pod that KFP uploads only when the stage ends; a pod
that is killed (preempted, evicted, out of memory) loses them, and KFP's retry starts a fresh pod. With a state root
(``ClusterConfig.state_root``: a PVC mount path or a bucket, gs://... through ``tf.io.gfile``), such a stage trains in

    <state_root>/<pipeline run id>/<task name>[-seed-<seed>]/run/    the trainer's run directory (checkpoint per epoch)
    <state_root>/<pipeline run id>/<task name>[-seed-<seed>]/genotype.json   the input genotype (evaluate, transfer)

instead, with the trainer's ``resume``: the first attempt starts it, a retry of the same task in the same pipeline
run (same run id, task name and seed: the same directory) restores its checkpoint and continues from the last
finished epoch. When the stage has trained, the run directory is copied into the artifact, the artifact is
published, and the state directory is removed. A new pipeline run has a new run id, hence a fresh state; without a
state root the stage trains inside its pod (a retry starts over).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

from darts_tf import io_utils

RUN_DIR = "run"
GENOTYPE_COPY = "genotype.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def state_dir(state_root: str, run_id: str, task: str, seed: Optional[int] = None) -> Optional[str]:
    """The state directory of a task of a pipeline run, or None without a `state_root`. `run_id` and `task` are
    KFP's ``{{$.pipeline_job_uuid}}`` and ``{{$.pipeline_task_name}}`` as the backend resolved them."""
    if not state_root:
        return None
    for name, value in (("run_id", run_id), ("task", task)):
        if not value or "{{" in value:
            raise ValueError(f"A resumable stage needs the pipeline run id and its task name to find its state under "
                             f"{state_root!r}. Received: {name}={value!r} (an unresolved KFP placeholder?)")
    name = _UNSAFE.sub("_", task) + ("" if seed is None else f"-seed-{int(seed)}")
    return "/".join([state_root.rstrip("/"), _UNSAFE.sub("_", run_id), name])


@dataclasses.dataclass(frozen=True)
class StageState:
    """A stage's state directory (`path`) and the epochs its checkpoint held when the stage started (0: fresh)."""

    path: str
    resumed_after_epoch: int

    @property
    def run_dir(self) -> str:
        return f"{self.path}/{RUN_DIR}"

    def keep_input(self, source: str, name: str = GENOTYPE_COPY) -> str:
        """A copy of the input file `source` in the state directory: a path the run's flags can name on every
        attempt (the checkpoint's run_config.json must match on resume)."""
        target = f"{self.path}/{name}"
        io_utils.atomic_write_bytes(target, io_utils.read_bytes(source))
        return target

    def copy_run_to(self, target: str) -> None:
        """Copies the trained run directory into `target` (a directory inside the artifact being written)."""
        io_utils.copy_tree(self.run_dir, target)

    def discard(self) -> None:
        """Removes the state once the artifact is published (a retry after this point starts over), and the run's
        directory when it was the last one there (on a disk; an object store has no empty directories)."""
        io_utils.remove_tree(self.path)
        parent = self.path.rpartition("/")[0]
        if not io_utils.is_remote(parent):
            try:
                os.rmdir(parent)
            except OSError:  # other stages of the run still keep state there (or it is gone)
                pass


def open_state(path: Optional[str]) -> Optional[StageState]:
    """The `StageState` at `path` (created if missing), or None for None."""
    if not path:
        return None
    from darts_tf import checkpoint

    io_utils.makedirs(path)
    run_dir = f"{path.rstrip('/')}/{RUN_DIR}"
    return StageState(path.rstrip("/"), checkpoint.saved_epochs(run_dir))
