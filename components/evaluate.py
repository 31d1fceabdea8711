"""Stage `evaluate`: train the selected genotype at full size from scratch, report test metrics, publish the
model (paper sect. 3.2, A.2.1 for CNN, A.2.2 for RNN) through the task's `train`.

Outputs a `Model` artifact (the trainer's run directory with its TensorBoard logs, and the serving SavedModel,
which is loaded back and run with the task's `check_export` before the metrics are published) and a `Metrics`
artifact. With a state directory (`components.state`) the training runs there, checkpointed every epoch, and a retry
of the stage continues it from its last finished epoch.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple

from darts_tf import tasks

from . import artifacts, common, state

STAGE = "evaluate"
# Spec
DATASET_KEY = "dataset"  # input: Dataset
GENOTYPE_KEY = "genotype"  # input: Genotype
MODEL_KEY = "model"  # output: Model
METRICS_KEY = "metrics"  # output: Metrics
KIND_KEY, CONFIG_KEY = "kind", "config"
INPUTS = {DATASET_KEY: artifacts.DATASET, GENOTYPE_KEY: artifacts.GENOTYPE}
OUTPUTS = {MODEL_KEY: artifacts.MODEL, METRICS_KEY: artifacts.METRICS}
PARAMETERS = {KIND_KEY: str, CONFIG_KEY: dict}

LogMetric = Optional[Callable[[str, float], None]]


def run(dataset: str, genotype: str, model: str, metrics: str, kind: str = "cnn",
        config: Optional[Dict[str, Any]] = None, log_metric: LogMetric = None, state_dir: Optional[str] = None
        ) -> Tuple[artifacts.ModelArtifact, Dict[str, Any]]:
    """Trains the Genotype artifact at `genotype` on the Dataset artifact at `dataset`; writes the Model and
    Metrics artifacts at `model` and `metrics`; `log_metric` also receives the scalar metrics. With `state_dir`
    (``components.state.state_dir``) it trains there and resumes an earlier attempt's checkpoint."""
    task = common.task_of(kind, STAGE)
    chosen = common.read_genotype_for(task, genotype, STAGE)
    data = common.read_dataset_for(task, dataset, STAGE)
    return train_and_publish(task, task.train, data, chosen, model, metrics, config, STAGE, log_metric,
                             state_dir=state_dir)


def train_and_publish(task: tasks.Task, train: Callable[..., Dict[str, Any]],
                      data: Optional[artifacts.DatasetArtifact], chosen: artifacts.GenotypeArtifact, model: str,
                      metrics: str, config: Optional[Dict[str, Any]], stage: str, log_metric: LogMetric,
                      dataset_lineage_key: Optional[str] = None, state_dir: Optional[str] = None
                      ) -> Tuple[artifacts.ModelArtifact, Dict[str, Any]]:
    """`train(data, genotype_path, config, run_dir, stage, resume)` (the task's `train` or `transfer`) into a Model
    artifact at `model`, whose SavedModel is checked once published; then the Metrics artifact at `metrics`.
    `dataset_lineage_key` records in the lineage the name of the dataset trained on (its metrics' 'dataset').
    With `state_dir` the run trains (and resumes) in that directory and is copied into the artifact when done."""
    lineage = {**chosen.lineage, "stage": stage, "genotype_uri": os.path.abspath(chosen.path)}
    if data is not None:
        lineage.update(eval_dataset=data.name, eval_dataset_hash=data.dataset_hash)
    kept = state.open_state(state_dir)
    lineage["resumed_after_epoch"] = kept.resumed_after_epoch if kept else 0
    with artifacts.model_writer(model, stage) as tmp:
        if kept is None:
            result = train(data, chosen.json_path, config, artifacts.run_dir_of(tmp), stage)
        else:
            result = train(data, kept.keep_input(chosen.json_path), config, kept.run_dir, stage, resume=True)
            kept.copy_run_to(artifacts.run_dir_of(tmp))
        if dataset_lineage_key:
            lineage[dataset_lineage_key] = result.get("dataset")
        artifacts.adopt_saved_model(tmp)
        artifacts.finish_model(tmp, task.kind, chosen.genotype, lineage, result, stage)
    if kept is not None:
        kept.discard()
    published = artifacts.read_model(model, stage)
    if published.saved_model_dir:
        result["saved_model_check"] = task.check_export(published.saved_model_dir, data)
    common.log_scalars(log_metric, result)
    return published, artifacts.write_metrics(metrics, {**result, "lineage": lineage}, stage)
