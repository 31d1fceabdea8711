"""Stage `search`: one DARTS architecture search on an ingested dataset -> a `SearchRun` artifact
(final alphas, the genotype they encode with its lineage, per-epoch history and TensorBoard logs).

The data comes from the `Dataset` artifact (never re-downloaded). The network, the optimisers and the
bilevel `fit` are `darts_tf.search_runner`'s (`build_cnn_search_model`, `run_bilevel_search`) and the data
streams `darts_tf.data`'s (`images.search_dataset`, `text.lm_search_dataset`); this module only feeds them
in-memory data, because `run_cnn_search` loads its dataset by name.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass
class RNNSearchConfig:
    """The recurrent-cell search of the paper (A.1.2); defaults are the reference's rnn/train_search.py.

    The weights train on the corpus' train split and alpha on its valid split, as the reference does.
    """

    units: int = 300  # embedding = hidden size
    steps: int = 8  # intermediate nodes of the cell
    batch_size: int = 256
    bptt: int = 35
    max_seq_len_delta: int = 20
    epochs: int = 50
    learning_rate: float = 20.0
    weight_decay: float = 5e-7
    grad_clip: float = 0.25
    arch_learning_rate: float = 3e-3
    arch_weight_decay: float = 1e-3
    arch_mode: str = "first_order"
    xi: Optional[float] = None
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.0
    tar_beta: float = 1e-3
    seed: int = 3
    output_dir: str = ""

    def validate(self) -> "RNNSearchConfig":
        from darts_tf.bilevel import check_arch_mode

        check_arch_mode(self.arch_mode)
        for name in ("units", "steps", "batch_size", "bptt", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if not self.output_dir:
            raise ValueError("output_dir is required.")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


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
    from darts_tf.search_runner import SearchConfig, run_cnn_search

    cfg = common.config_from_dict(SearchConfig, config, STAGE, seed=seed, output_dir=output_dir,
                                  dataset=data.name, resume=False)
    result = run_cnn_search(cfg, verbose=verbose, data=data.image_data(),
                            extra_flags={"dataset_hash": data.dataset_hash})
    flags = {**cfg.to_dict(), "dataset_hash": data.dataset_hash}
    flags.pop("output_dir")
    return result, cfg.primitive_list, flags


def _rnn_search(data: artifacts.DatasetArtifact, config: Dict[str, Any], seed: int, output_dir: str, verbose):
    import keras

    from darts_tf.data import text
    from darts_tf.genotypes import RNN_PRIMITIVES
    from darts_tf.search_runner import run_bilevel_search

    cfg = common.config_from_dict(RNNSearchConfig, config, STAGE, seed=seed, output_dir=output_dir).validate()
    keras.utils.set_random_seed(cfg.seed)
    corpus = text.Corpus.from_directory(data.corpus_dir)
    train_b = text.batchify(corpus.train, cfg.batch_size)
    valid_b = text.batchify(corpus.valid, cfg.batch_size)

    def stream(initial_epoch):
        return text.lm_search_dataset(train_b, valid_b, cfg.bptt, seed=cfg.seed, initial_epoch=initial_epoch,
                                      epochs=cfg.epochs, max_seq_len_delta=cfg.max_seq_len_delta)

    _, steps = stream(0)
    model = _rnn_search_network(
        corpus.vocab_size, units=cfg.units, steps=cfg.steps, dropout=cfg.dropout, dropouth=cfg.dropouth,
        dropoutx=cfg.dropoutx, dropouti=cfg.dropouti, dropoute=cfg.dropoute, tar_beta=cfg.tar_beta, seed=cfg.seed,
        arch_mode=cfg.arch_mode, xi=cfg.xi, weight_decay=cfg.weight_decay, arch_weight_decay=cfg.arch_weight_decay,
        grad_clip=cfg.grad_clip)
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(cfg.learning_rate),
                  arch_optimizer=keras.optimizers.Adam(cfg.arch_learning_rate, beta_1=0.9, beta_2=0.999))
    flags = {**cfg.to_dict(), "dataset": data.name, "dataset_hash": data.dataset_hash}
    flags.pop("output_dir")
    result = run_bilevel_search(model, lambda e: stream(e)[0], steps, cfg.epochs, output_dir,
                                {**flags, "output_dir": output_dir}, False, verbose=verbose)
    return result, list(RNN_PRIMITIVES), flags


def _rnn_search_network(*args, **kwargs):
    """`darts_tf.rnn.models.RNNSearchNetwork`, plus the `alphas_numpy()` that `search_runner.ArchitectureLogger`
    reads where the library class does not have it yet."""
    from darts_tf.rnn.models import RNNSearchNetwork

    if hasattr(RNNSearchNetwork, "alphas_numpy"):
        return RNNSearchNetwork(*args, **kwargs)

    class LoggedRNNSearchNetwork(RNNSearchNetwork):
        def alphas_numpy(self):
            import keras

            return {"alpha_recurrent": keras.ops.convert_to_numpy(self.alpha)}

    return LoggedRNNSearchNetwork(*args, **kwargs)
