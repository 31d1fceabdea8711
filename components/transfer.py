"""Stage `transfer`: the chosen cell on another dataset (paper sect. 3.3), through the task's `transfer`.

CNN: ImageNet-style training with `darts_tf.cnn.train.train_imagenet` (the mobile setting, A.2.3; the
dataset is streamed from tfds / an image folder, or any in-memory image dataset for cheap studies).
RNN: the recurrent cell trained on an ingested WikiText-2 corpus with the 'wikitext2' preset (A.2.4); the
task says so (`transfer_reads_dataset`), and the pipeline ingests that corpus first.
Outputs a `Model` and a `Metrics` artifact, as `evaluate`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from . import artifacts, common, evaluate

STAGE = "transfer"
# Spec
GENOTYPE_KEY = "genotype"  # input: Genotype
DATASET_KEY = "dataset"  # input: Dataset (only for a task that `transfer_reads_dataset`: the transfer corpus)
# Outputs (a Model, a Metrics) and parameters (kind, config): those of `evaluate`.
MODEL_KEY, METRICS_KEY = evaluate.MODEL_KEY, evaluate.METRICS_KEY
KIND_KEY, CONFIG_KEY = evaluate.KIND_KEY, evaluate.CONFIG_KEY
INPUTS = {GENOTYPE_KEY: artifacts.GENOTYPE, DATASET_KEY: artifacts.DATASET}
OUTPUTS = dict(evaluate.OUTPUTS)
PARAMETERS = dict(evaluate.PARAMETERS)


def run(genotype: str, model: str, metrics: str, kind: str = "cnn", config: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None, log_metric: Optional[Callable[[str, float], None]] = None,
        state_dir: Optional[str] = None) -> Tuple[artifacts.ModelArtifact, Dict[str, Any]]:
    """Trains the Genotype artifact at `genotype` on the transfer dataset (CNN: `config['dataset']`; RNN: the
    ingested corpus at `dataset`; the task refuses the other); writes the Model and Metrics artifacts at `model`
    and `metrics`. `state_dir`: as `evaluate.run`'s (a retry resumes the training)."""
    task = common.task_of(kind, STAGE)
    chosen = common.read_genotype_for(task, genotype, STAGE)
    data = common.read_dataset_for(task, dataset, STAGE) if dataset else None
    return evaluate.train_and_publish(task, task.transfer, data, chosen, model, metrics, config, STAGE, log_metric,
                                      dataset_lineage_key="transfer_dataset", state_dir=state_dir)
