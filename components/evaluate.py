"""Stage `evaluate`: train the selected genotype at full size from scratch, report test metrics, publish the
model (paper sect. 3.2, A.2.1 for CNN, A.2.2 for RNN).

Outputs a `Model` artifact (the trainer's run directory with its TensorBoard logs; for CNN also the serving
SavedModel, which is loaded back and run before the artifact is published) and a `Metrics` artifact.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Dict, Optional, Tuple

from components import artifacts, common

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


@dataclasses.dataclass
class RNNEvalConfig:
    """Full training of a recurrent cell: an RNN preset ('ptb', 'wikitext2', 'smoke') with overrides."""

    preset: str = "ptb"
    overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)


def run(dataset: str, genotype: str, model: str, metrics: str, kind: str = "cnn",
        config: Optional[Dict[str, Any]] = None, stage: str = STAGE,
        log_metric: Optional[Callable[[str, float], None]] = None) -> Tuple[artifacts.ModelArtifact, Dict[str, Any]]:
    """Trains the Genotype artifact at `genotype` on the Dataset artifact at `dataset`; writes the Model and
    Metrics artifacts at `model` and `metrics`; `log_metric` also receives the scalar metrics."""
    data = artifacts.read_dataset(dataset, stage)
    chosen = artifacts.read_genotype(genotype, stage)
    if chosen.genotype.kind != kind:
        raise artifacts.ArtifactError(stage, genotype, f"holds a {chosen.genotype.kind} genotype; this is a {kind} "
                                                       f"pipeline")
    lineage = {**chosen.lineage, "stage": stage, "genotype_uri": os.path.abspath(genotype),
               "eval_dataset": data.name, "eval_dataset_hash": data.dataset_hash}
    with artifacts.model_writer(model, stage) as tmp:
        if kind == "cnn":
            if data.kind != "images":
                raise artifacts.ArtifactError(stage, dataset, f"holds {data.kind}; CNN evaluation needs images")
            from darts_tf.cnn import train as training

            cfg = common.config_from_dict(training.TrainConfig, config, stage, genotype=chosen.json_path,
                                          dataset=data.name, validation_portion=0.0, resume=False, export=True,
                                          output_dir=artifacts.run_dir_of(tmp))
            result = train_cnn(cfg, tmp)
        else:
            result = train_rnn(data, chosen, common.config_from_dict(RNNEvalConfig, config, stage), tmp, stage)
        artifacts.finish_model(tmp, kind, chosen.genotype, lineage, result, stage)
    published = artifacts.read_model(model, stage)
    if published.saved_model_dir:
        result["saved_model_check"] = check_saved_model(published.saved_model_dir, data)
    common.log_scalars(log_metric, result)
    return published, artifacts.write_metrics(metrics, {**result, "lineage": lineage}, stage)


def train_cnn(cfg, writer_dir: str, imagenet: bool = False) -> Dict[str, Any]:
    """Trains with `darts_tf.cnn.train` into the Model artifact's run dir and moves its SavedModel to the top."""
    from darts_tf.cnn import train as training
    from darts_tf.run_files import RunFiles

    result = (training.train_imagenet if imagenet else training.train)(cfg)
    exported = RunFiles(cfg.output_dir).saved_model
    if os.path.isdir(exported):
        os.replace(exported, artifacts.saved_model_dir_of(writer_dir))
    return dict(result)


def check_saved_model(saved_model_dir: str, data: Optional[artifacts.DatasetArtifact]) -> Dict[str, Any]:
    """Loads the SavedModel with `darts_tf.cnn.export.load_predictor` and predicts a few test images."""
    import numpy as np

    from darts_tf.cnn.export import load_predictor

    predictor = load_predictor(saved_model_dir)
    if data is not None and data.kind == "images":
        image_data = data.image_data()
        x, y = image_data.test_images[:64], image_data.test_labels[:64]
    else:
        x, y = np.zeros((4, *predictor.image_shape), np.uint8), None
    probs = predictor.predict(x)
    if probs.shape[0] != len(x) or not np.allclose(probs.sum(-1), 1.0, atol=1e-3):
        raise RuntimeError(f"The SavedModel at {saved_model_dir!r} does not return one probability row per image.")
    out = {"examples": int(len(x))}
    if y is not None:
        out["accuracy"] = float(np.mean(probs.argmax(-1) == y))
    return out


def train_rnn(data: artifacts.DatasetArtifact, chosen: artifacts.GenotypeArtifact, cfg: RNNEvalConfig,
              writer_dir: str, stage: str) -> Dict[str, Any]:
    """Trains the recurrent cell with `darts_tf.rnn.train.train` (train split; validation: valid) into the
    artifact's run dir, which has that runner's layout (model.keras, vocab.txt, tensorboard/); test perplexity
    is that of the best validation weights."""
    from darts_tf.rnn import train as rnn_training

    if data.kind != "text":
        raise artifacts.ArtifactError(stage, data.path, f"holds {data.kind}; RNN training needs text")
    overrides = common.coerce_numbers(rnn_training.TrainConfig, cfg.overrides)
    train_cfg = rnn_training.get_preset(cfg.preset, **{**overrides, "genotype": chosen.json_path})
    result = rnn_training.train(train_cfg, output_dir=artifacts.run_dir_of(writer_dir), data_dir=data.corpus_dir,
                              preset=cfg.preset)
    return {"dataset": data.name, "preset": cfg.preset, "valid_perplexity": result["valid_ppl"],
            "test_perplexity": result["test_ppl"], "test_loss": math.log(result["test_ppl"]),
            "epochs": result["epochs_done"], "vocab_size": result["vocab_size"], "params": result["params"],
            "wall_time_s": result["wall_time_s"]}
