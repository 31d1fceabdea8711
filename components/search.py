"""Stage `search`: one DARTS architecture search on an ingested dataset -> a `SearchRun` artifact
(final alphas, the genotype they encode with its lineage, per-epoch history and TensorBoard logs).

The data comes from the `Dataset` artifact (never re-downloaded). The network, the optimisers and the
bilevel `fit` are the library's, called through the task of `kind` (`darts_tf.tasks`: its `search` runs
`darts_tf.cnn.search.run_search` or `darts_tf.rnn.search.run_search`); this module hands it the ingested data
and records the lineage. With a state directory (`components.state`) the search runs there, checkpointed every
epoch, and a retry of the stage continues it from its last finished epoch.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from . import artifacts, common, state

STAGE = "search"
# Spec
DATASET_KEY = "dataset"  # input: Dataset
SEARCH_RUN_KEY = "search_run"  # output: SearchRun
KIND_KEY, SEED_KEY, CONFIG_KEY = "kind", "seed", "config"
INPUTS = {DATASET_KEY: artifacts.DATASET}
OUTPUTS = {SEARCH_RUN_KEY: artifacts.SEARCH_RUN}
PARAMETERS = {KIND_KEY: str, SEED_KEY: int, CONFIG_KEY: dict}


def run(dataset: str, search_run: str, kind: str = "cnn", seed: int = 0,
        config: Optional[Dict[str, Any]] = None, verbose: Any = 2,
        state_dir: Optional[str] = None) -> artifacts.SearchRunArtifact:
    """Searches on the `Dataset` artifact at `dataset`; writes the `SearchRun` artifact at `search_run`.

    With `state_dir` (``components.state.state_dir``) the search runs and checkpoints there, resuming what an
    earlier attempt of the same task left, and the state is removed once the artifact is published."""
    task = common.task_of(kind, STAGE)
    data = common.read_dataset_for(task, dataset, STAGE)
    kept = state.open_state(state_dir)
    with artifacts.search_run_writer(search_run, STAGE) as tmp:
        if kept is None:
            found = task.search(data, config, seed, artifacts.search_output_dir(tmp), STAGE, verbose)
        else:
            found = task.search(data, config, seed, kept.run_dir, STAGE, verbose, resume=True)
            kept.copy_run_to(artifacts.search_output_dir(tmp))
        lineage = {"stage": STAGE, "kind": task.kind, "search_uri": os.path.abspath(search_run), "seed": seed,
                   "flags": found.flags, "dataset": data.name, "dataset_uri": os.path.abspath(dataset),
                   "dataset_hash": data.dataset_hash, "epochs_done": found.metrics.get("epochs_done"),
                   "resumed_after_epoch": kept.resumed_after_epoch if kept else 0}
        artifacts.finish_search_run(tmp, task.kind, found.primitives, lineage, found.alphas, found.genotype, STAGE)
    if kept is not None:
        kept.discard()
    return artifacts.read_search_run(search_run, STAGE)
