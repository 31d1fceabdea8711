"""Stage `select`: short-train every candidate genotype from scratch, score it on a validation split carved
from the training data (never the test set), and publish the best one (paper sect. 3.2: the best of several
searches is picked by a short training run) together with the table of all candidates.

Each candidate is trained by the task's `short_train` (CNN: `darts_tf.cnn.train.train` with
`validation_portion` > 0; RNN: `darts_tf.rnn.train.fit` on the train stream minus its last
`validation_portion`) and ranked by the task's `selection_metric` (validation accuracy, validation perplexity).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import artifacts, common
from .monitoring import log_stage, markdown_table

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
    task = common.task_of(kind, STAGE)
    if not candidates:
        raise ValueError(f"[stage '{STAGE}'] needs at least one candidate genotype. Received: none")
    data = common.read_dataset_for(task, dataset, STAGE)
    # every candidate is validated before any training
    genotypes = [common.read_genotype_for(task, path, STAGE) for path in candidates]
    metric, higher_is_better = task.selection_metric, task.higher_is_better
    rows: List[Dict[str, Any]] = []
    with artifacts.metrics_writer(selection, STAGE) as table_dir:
        tb_root = artifacts.tensorboard_dir_of(table_dir)
        for i, candidate in enumerate(genotypes):
            score = task.short_train(data, candidate.json_path, config, os.path.join(tb_root, f"candidate_{i:02d}"),
                                     STAGE)
            rows.append({"candidate": i, "genotype_uri": candidate.path, "search_uri": candidate.lineage["search_uri"],
                         "seed": candidate.lineage["seed"], "genotype": str(candidate.genotype), **score})
        best = (max if higher_is_better else min)(range(len(rows)), key=lambda i: (rows[i][metric], -i))
        table = {"metric": metric, "higher_is_better": higher_is_better, "best": best, "candidates": rows,
                 "best_" + metric: rows[best][metric], "best_seed": rows[best]["seed"]}
        log_stage(os.path.join(tb_root, "table"), scalars={f"select/best_{metric}": rows[best][metric]},
                  text={"selection": markdown_table(rows, ["candidate", "seed", metric, "search_uri"])})
        from darts_tf import summaries  # TensorFlow is imported by the stage's work only

        for row in rows:  # one HParams session per candidate: seed -> score, in TensorBoard's HParams dashboard
            summaries.write_hparams(os.path.join(tb_root, "hparams", f"candidate_{row['candidate']:02d}"),
                                    {"candidate": row["candidate"], "seed": row["seed"],
                                     "selected": row["candidate"] == best, "search_uri": row["search_uri"]},
                                    {f"select/{metric}": row[metric]})
        artifacts.finish_metrics(table_dir, table, STAGE)
    common.log_scalars(log_metric, {**{f"candidate_{r['candidate']}_{metric}": r[metric] for r in rows},
                                    "best_candidate": best, "best_" + metric: rows[best][metric]})
    winner = genotypes[best]
    lineage = {**winner.lineage, "stage": STAGE, "selected_from": [g.path for g in genotypes],
               "selection_metric": metric, "selection_value": rows[best][metric],
               "selection_uri": os.path.abspath(selection)}
    return artifacts.write_genotype(best_genotype, winner.genotype, lineage, STAGE), table
