"""Helpers shared by the stage executors: the stage's task (`darts_tf.tasks`), its input artifacts checked
against the task, typed configs from plain dicts (what a pipeline passes) and metric reporting."""

from __future__ import annotations

from typing import Any, Dict

from . import artifacts
from darts_tf import tasks
from darts_tf.tasks import config_from_dict

__all__ = ["config_from_dict", "log_scalars", "read_dataset_for", "read_genotype_for", "task_of"]


def task_of(kind: str, stage: str) -> tasks.Task:
    """The task of `kind`; an unknown kind raises an error naming the stage and the known kinds."""
    try:
        return tasks.get_task(kind)
    except ValueError as e:
        raise ValueError(f"[stage '{stage}'] {e} Received: kind={kind!r}") from e


def read_dataset_for(task: tasks.Task, path: str, stage: str) -> artifacts.DatasetArtifact:
    """The Dataset artifact at `path`, refused unless it holds the task's kind of data."""
    data = artifacts.read_dataset(path, stage)
    try:
        task.check_data(data)
    except tasks.DataKindError as e:
        raise artifacts.ArtifactError(stage, path, e.problem) from e
    return data


def read_genotype_for(task: tasks.Task, path: str, stage: str) -> artifacts.GenotypeArtifact:
    """The Genotype artifact at `path`, refused unless it holds a genotype of the task's kind."""
    chosen = artifacts.read_genotype(path, stage)
    if chosen.genotype.kind != task.kind:
        raise artifacts.ArtifactError(stage, path, f"holds a {chosen.genotype.kind} genotype; this is a {task.kind} "
                                                   f"pipeline")
    return chosen


def log_scalars(log_metric, metrics: Dict[str, Any], prefix: str = "") -> None:
    """Reports the numeric top-level entries of `metrics` through `log_metric(name, value)` (e.g. a KFP
    `Output[Metrics].log_metric`, which the Kubeflow UI shows); does nothing when `log_metric` is None."""
    if log_metric is None:
        return
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            log_metric(prefix + name, float(value))
