"""Stage `transfer`: the chosen cell on another dataset (paper sect. 3.3).

CNN: ImageNet-style training with `darts_tf.cnn.train.train_imagenet` (the mobile setting, A.2.3; the
dataset is streamed from tfds / an image folder, or any in-memory image dataset for cheap studies).
RNN: the recurrent cell trained on an ingested WikiText-2 corpus with the 'wikitext2' preset (A.2.4).
Outputs a `Model` and a `Metrics` artifact, as `evaluate`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple

from components import artifacts, common, evaluate

STAGE = "transfer"
# Spec
GENOTYPE_KEY = "genotype"  # input: Genotype
DATASET_KEY = "dataset"  # input: Dataset (RNN only: the transfer corpus)
MODEL_KEY = "model"  # output: Model
METRICS_KEY = "metrics"  # output: Metrics
KIND_KEY, CONFIG_KEY = "kind", "config"
INPUTS = {GENOTYPE_KEY: artifacts.GENOTYPE, DATASET_KEY: artifacts.DATASET}
OUTPUTS = {MODEL_KEY: artifacts.MODEL, METRICS_KEY: artifacts.METRICS}
PARAMETERS = {KIND_KEY: str, CONFIG_KEY: dict}


def run(genotype: str, model: str, metrics: str, kind: str = "cnn", config: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None, log_metric: Optional[Callable[[str, float], None]] = None
        ) -> Tuple[artifacts.ModelArtifact, Dict[str, Any]]:
    """Trains the Genotype artifact at `genotype` on the transfer dataset (CNN: `config['dataset']`; RNN: the
    ingested corpus at `dataset`); writes the Model and Metrics artifacts at `model` and `metrics`."""
    if kind == "rnn":
        if not dataset:
            raise ValueError(f"[stage '{STAGE}'] an RNN transfer needs the ingested transfer corpus (dataset).")
        return evaluate.run(dataset, genotype, model, metrics, kind="rnn", config=config, stage=STAGE,
                            log_metric=log_metric)
    from darts_tf.cnn import train as training

    chosen = artifacts.read_genotype(genotype, STAGE)
    if chosen.genotype.kind != "cnn":
        raise artifacts.ArtifactError(STAGE, genotype, f"holds a {chosen.genotype.kind} genotype; this is a cnn "
                                                       f"pipeline")
    with artifacts.model_writer(model, STAGE) as tmp:
        cfg = common.config_from_dict(training.ImageNetConfig, config, STAGE, genotype=chosen.json_path,
                                      resume=False, output_dir=artifacts.run_dir_of(tmp))
        cfg.validate()
        lineage = {**chosen.lineage, "stage": STAGE, "genotype_uri": os.path.abspath(genotype),
                   "transfer_dataset": cfg.dataset}
        result = evaluate.train_cnn(cfg, tmp, imagenet=True)
        artifacts.finish_model(tmp, "cnn", chosen.genotype, lineage, result, STAGE)
    published = artifacts.read_model(model, STAGE)
    if published.saved_model_dir:
        result["saved_model_check"] = evaluate.check_saved_model(published.saved_model_dir, None)
    common.log_scalars(log_metric, result)
    return published, artifacts.write_metrics(metrics, {**result, "lineage": lineage}, STAGE)
