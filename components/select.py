"""Stage `select`: short-train every candidate genotype from scratch, score it on a validation split carved
from the training data (never the test set), and publish the best one (paper sect. 3.2: the best of several
searches is picked by a short training run) together with the table of all candidates.

CNN candidates train with `darts_tf.cnn.train.train` (`validation_portion` > 0 reports the carved split);
RNN candidates with `darts_tf.rnn.train.fit` on the train stream minus its last `validation_portion`,
scored by validation perplexity.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from components import artifacts, common
from components.monitoring import log_stage, markdown_table

STAGE = "select"
# Spec
DATASET_KEY = "dataset"  # input: Dataset
CANDIDATES_KEY = "candidates"  # input: list of Genotype
GENOTYPE_KEY = "best_genotype"  # output: Genotype
TABLE_KEY = "selection"  # output: Metrics (the table)
KIND_KEY, CONFIG_KEY, VALIDATION_PORTION_KEY = "kind", "config", "validation_portion"
INPUTS = {DATASET_KEY: artifacts.DATASET, CANDIDATES_KEY: [artifacts.GENOTYPE]}
OUTPUTS = {GENOTYPE_KEY: artifacts.GENOTYPE, TABLE_KEY: artifacts.METRICS}
PARAMETERS = {KIND_KEY: str, CONFIG_KEY: dict}


def run(dataset: str, candidates: Sequence[str], best_genotype: str, selection: str, kind: str = "cnn",
        config: Optional[Dict[str, Any]] = None, log_metric: Optional[Callable[[str, float], None]] = None
        ) -> Tuple[artifacts.GenotypeArtifact, Dict[str, Any]]:
    """Scores every Genotype artifact in `candidates`; writes the winner and the `Metrics` table."""
    if not candidates:
        raise ValueError(f"[stage '{STAGE}'] needs at least one candidate genotype. Received: none")
    data = artifacts.read_dataset(dataset, STAGE)
    genotypes = [artifacts.read_genotype(path, STAGE) for path in candidates]  # all validated before any training
    wrong = [g.path for g in genotypes if g.genotype.kind != kind]
    if wrong:
        raise artifacts.ArtifactError(STAGE, wrong[0], f"holds a {genotypes[0].genotype.kind} genotype; "
                                                       f"this is a {kind} pipeline")
    rows: List[Dict[str, Any]] = []
    with artifacts.metrics_writer(selection, STAGE) as table_dir:
        tb_root = artifacts.tensorboard_dir_of(table_dir)
        for i, candidate in enumerate(genotypes):
            score = (_score_cnn if kind == "cnn" else _score_rnn)(data, candidate, dict(config or {}),
                                                                  os.path.join(tb_root, f"candidate_{i:02d}"))
            rows.append({"candidate": i, "genotype_uri": candidate.path, "search_uri": candidate.lineage["search_uri"],
                         "seed": candidate.lineage["seed"], "genotype": str(candidate.genotype), **score})
        higher_is_better = kind == "cnn"
        metric = "validation_accuracy" if higher_is_better else "validation_perplexity"
        best = (max if higher_is_better else min)(range(len(rows)), key=lambda i: (rows[i][metric], -i))
        table = {"metric": metric, "higher_is_better": higher_is_better, "best": best, "candidates": rows,
                 "best_" + metric: rows[best][metric], "best_seed": rows[best]["seed"]}
        log_stage(os.path.join(tb_root, "table"), scalars={f"select/best_{metric}": rows[best][metric]},
                  text={"selection": markdown_table(rows, ["candidate", "seed", metric, "search_uri"])})
        artifacts.finish_metrics(table_dir, table, STAGE)
    common.log_scalars(log_metric, {**{f"candidate_{r['candidate']}_{metric}": r[metric] for r in rows},
                                    "best_candidate": best, "best_" + metric: rows[best][metric]})
    winner = genotypes[best]
    lineage = {**winner.lineage, "stage": STAGE, "selected_from": [g.path for g in genotypes],
               "selection_metric": metric, "selection_value": rows[best][metric],
               "selection_uri": os.path.abspath(selection)}
    return artifacts.write_genotype(best_genotype, winner.genotype, lineage, STAGE), table


def _score_cnn(data: artifacts.DatasetArtifact, candidate: artifacts.GenotypeArtifact, config: Dict[str, Any],
               tensorboard_dir: str) -> Dict[str, Any]:
    from darts_tf.cnn import train as training
    from darts_tf.run_files import RunFiles

    if data.kind != "images":
        raise artifacts.ArtifactError(STAGE, data.path, f"holds {data.kind}; CNN selection needs images")
    with tempfile.TemporaryDirectory(prefix="select-") as tmp:
        cfg = common.config_from_dict(training.TrainConfig, config, STAGE, genotype=candidate.json_path,
                                      dataset=data.name, output_dir=os.path.join(tmp, "run"), resume=False,
                                      export=False)
        if not 0 < cfg.validation_portion < 1:
            raise ValueError(f"[stage '{STAGE}'] validation_portion must be in (0, 1): selection never looks at the "
                             f"test set. Received: validation_portion={cfg.validation_portion}")
        metrics = training.train(cfg)
        shutil.copytree(RunFiles(cfg.output_dir).tensorboard, tensorboard_dir)
    return {"validation_accuracy": metrics["validation_top1_accuracy"], "validation_loss": metrics["validation_loss"],
            "params_M": metrics["params_M"], "epochs": metrics["epochs"], "wall_time_s": metrics["wall_time_s"]}


@dataclasses.dataclass
class RNNSelectConfig:
    """Short training of a recurrent candidate: an RNN preset ('ptb', 'wikitext2', 'smoke') with overrides."""

    preset: str = "ptb"
    overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 300  # the paper's short training of candidates
    validation_portion: float = 0.1  # the tail of the train stream that scores candidates


def carve_validation(ids, portion: float):
    """(train, validation): the last `portion` of a 1-D token stream is held out."""
    if not 0 < portion < 1:
        raise ValueError(f"validation_portion must be in (0, 1). Received: validation_portion={portion}")
    cut = int(len(ids) * (1 - portion))
    return ids[:cut], ids[cut:]


def _score_rnn(data: artifacts.DatasetArtifact, candidate: artifacts.GenotypeArtifact, config: Dict[str, Any],
               tensorboard_dir: str) -> Dict[str, Any]:
    import time

    import keras

    from darts_tf import checkpoint
    from darts_tf.data import text
    from darts_tf.rnn import train as rnn_training

    if data.kind != "text":
        raise artifacts.ArtifactError(STAGE, data.path, f"holds {data.kind}; RNN selection needs text")
    cfg = common.config_from_dict(RNNSelectConfig, config, STAGE)
    train_cfg = rnn_training.get_preset(cfg.preset, **{**common.coerce_numbers(rnn_training.TrainConfig, cfg.overrides), "genotype": candidate.json_path,
                                                       "epochs": cfg.epochs})
    corpus = text.Corpus.from_directory(data.corpus_dir)
    train_ids, valid_ids = carve_validation(corpus.train, cfg.validation_portion)
    start = time.time()
    checkpoint.start_run(train_cfg.seed)
    model = rnn_training.compile_model(rnn_training.build_model(train_cfg, corpus.vocab_size), train_cfg)
    result = rnn_training.fit(model, train_ids, valid_ids, train_cfg, callbacks=[
        keras.callbacks.TensorBoard(tensorboard_dir, write_graph=False)])
    return {"validation_perplexity": result.best_val_ppl, "validation_loss": result.best_val_loss,
            "epochs": result.epochs_done, "wall_time_s": time.time() - start}
