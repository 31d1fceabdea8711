"""Stage `search`: one DARTS architecture search on an ingested dataset -> a `SearchRun` artifact
(final alphas, the genotype they encode with its lineage, per-epoch history and TensorBoard logs).

The data comes from the `Dataset` artifact (never re-downloaded). The network, the optimisers and the
bilevel `fit` are the library's (`darts_tf.cnn.search.run_search`, `darts_tf.rnn.search.run_search`);
this module hands them the ingested data and records the lineage.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from components import artifacts, common

STAGE = "search"
# Spec
DATASET_KEY = "dataset"  # input: Dataset
SEARCH_RUN_KEY = "search_run"  # output: SearchRun
KIND_KEY, SEED_KEY, CONFIG_KEY = "kind", "seed", "config"
INPUTS = {DATASET_KEY: artifacts.DATASET}
OUTPUTS = {SEARCH_RUN_KEY: artifacts.SEARCH_RUN}
PARAMETERS = {KIND_KEY: str, SEED_KEY: int, CONFIG_KEY: dict}
KINDS = ("cnn", "rnn")


def run(dataset: str, search_run: str, kind: str = "cnn", seed: int = 0,
        config: Optional[Dict[str, Any]] = None, verbose: Any = 2) -> artifacts.SearchRunArtifact:
    """Searches on the `Dataset` artifact at `dataset`; writes the `SearchRun` artifact at `search_run`."""
    if kind not in KINDS:
        raise ValueError(f"[stage '{STAGE}'] kind must be one of {', '.join(KINDS)}. Received: kind={kind!r}")
    data = artifacts.read_dataset(dataset, STAGE)
    expected = "images" if kind == "cnn" else "text"
    if data.kind != expected:
        raise artifacts.ArtifactError(STAGE, dataset, f"holds {data.kind}; a {kind} search needs {expected}")
    with artifacts.search_run_writer(search_run, STAGE) as tmp:
        out = artifacts.search_output_dir(tmp)
        search = _cnn_search if kind == "cnn" else _rnn_search
        result, primitives, flags = search(data, dict(config or {}), seed, out, verbose)
        lineage = {"stage": STAGE, "kind": kind, "search_uri": os.path.abspath(search_run), "seed": seed,
                   "flags": flags, "dataset": data.name, "dataset_uri": os.path.abspath(dataset),
                   "dataset_hash": data.dataset_hash, "epochs_done": result["metrics"].get("epochs_done")}
        artifacts.finish_search_run(tmp, kind, primitives, lineage, result["alphas"], result["genotype"], STAGE)
    return artifacts.read_search_run(search_run, STAGE)


def _cnn_search(data: artifacts.DatasetArtifact, config: Dict[str, Any], seed: int, output_dir: str, verbose):
    from darts_tf.cnn.search import SearchConfig, run_search

    cfg = common.config_from_dict(SearchConfig, config, STAGE, seed=seed, output_dir=output_dir,
                                  dataset=data.name, resume=False)
    result = run_search(cfg, verbose=verbose, data=data.image_data(),
                            extra_flags={"dataset_hash": data.dataset_hash})
    flags = {**cfg.to_dict(), "dataset_hash": data.dataset_hash}
    flags.pop("output_dir")
    return result, cfg.primitive_list, flags


def _rnn_search(data: artifacts.DatasetArtifact, config: Dict[str, Any], seed: int, output_dir: str, verbose):
    from darts_tf.data import text
    from darts_tf.genotypes import RNN_PRIMITIVES
    from darts_tf.rnn.search import SearchConfig, run_search

    cfg = common.config_from_dict(SearchConfig, config, STAGE, seed=seed, output_dir=output_dir,
                                  dataset=data.name, data_dir=data.corpus_dir, resume=False)
    result = run_search(cfg, verbose=verbose, corpus=text.Corpus.from_directory(data.corpus_dir),
                            extra_flags={"dataset_hash": data.dataset_hash})
    flags = {**cfg.to_dict(), "dataset_hash": data.dataset_hash}
    flags.pop("output_dir")
    return result, list(RNN_PRIMITIVES), flags
