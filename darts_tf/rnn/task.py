"""The RNN task (paper sect. 3.1.2, 3.2, 3.3): a recurrent cell searched on a word-level corpus, selected by a
short training scored on the tail of the train stream, evaluated on PTB (A.2.2) and transferred by training on
another ingested corpus, WikiText-2 (A.2.4).

The library calls are ``darts_tf.rnn.search.run_search``, ``darts_tf.rnn.train.train`` (the whole run) /
``fit`` (a compiled model on id streams) and ``darts_tf.rnn.export``. Training settings are an RNN preset
('ptb', 'wikitext2', 'smoke') with overrides (`RNNSelectConfig`, `RNNEvalConfig`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Dict, List

import numpy as np

from darts_tf import checkpoint
from darts_tf import task as base
from darts_tf.data import text
from darts_tf.rnn import export
from darts_tf.rnn import search as rnn_search
from darts_tf.rnn import train as rnn_train

CHECK_TOKENS = 64  # test tokens the exported SavedModel is run on


@dataclasses.dataclass
class RNNEvalConfig:
    """Full training of a recurrent cell: an RNN preset ('ptb', 'wikitext2', 'smoke') with overrides."""

    preset: str = "ptb"
    overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)


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


def preset_config(preset: str, overrides: Dict[str, Any], stage: str, **fixed: Any) -> rnn_train.TrainConfig:
    """The registered preset with `overrides` (numbers as a pipeline passes them) and then `fixed` applied."""
    base.check_settings(rnn_train.TrainConfig, overrides, stage)
    return rnn_train.get_preset(preset, **{**base.coerce_numbers(rnn_train.TrainConfig, overrides), **fixed})


@base.register_task
class RNNTask(base.Task):
    kind = "rnn"
    data_kind = "text"
    alpha_names = ("alpha_recurrent",)
    search_config = rnn_search.SearchConfig
    select_config = RNNSelectConfig
    evaluate_config = RNNEvalConfig
    transfer_config = RNNEvalConfig
    selection_metric = "validation_perplexity"
    higher_is_better = False
    transfer_reads_dataset = True  # the transfer corpus is ingested like the search corpus

    def load_data(self, dataset: base.Dataset) -> text.Corpus:
        """The ingested corpus (vocabulary from train.txt, id streams of the three splits; ingest wrote it with its
        max_vocab / strict_vocab applied, so its vocabulary is closed)."""
        self.check_data(dataset)
        return text.Corpus.from_directory(dataset.corpus_dir)

    def primitives(self, config: rnn_search.SearchConfig) -> List[str]:
        return config.primitive_list

    def search_data_settings(self, dataset):
        return {"data_dir": dataset.corpus_dir}

    def run_search(self, config, data, extra_flags, verbose):
        if config.max_vocab or config.strict_vocab:  # the search's own vocabulary settings: it re-reads the ingested
            data = None                              # corpus (config.data_dir) with them
        return rnn_search.run_search(config, verbose=verbose, corpus=data, extra_flags=extra_flags)

    def short_train(self, dataset, genotype_path, values, tensorboard_dir, stage="select") -> Dict[str, Any]:
        """`darts_tf.rnn.train.fit` on the train stream minus its last `validation_portion`, scored by the
        validation perplexity of that tail."""
        import keras

        cfg = base.config_from_dict(RNNSelectConfig, values, stage)
        train_cfg = preset_config(cfg.preset, cfg.overrides, stage, genotype=genotype_path, epochs=cfg.epochs)
        self.check_data(dataset)  # the corpus read as `train` reads it (max_vocab / strict_vocab of the preset)
        corpus = text.Corpus.from_directory(dataset.corpus_dir, max_vocab=train_cfg.max_vocab,
                                            strict=train_cfg.strict_vocab)
        train_ids, valid_ids = carve_validation(corpus.train, cfg.validation_portion)
        start = time.time()
        checkpoint.start_run(train_cfg.seed)
        model = rnn_train.compile_model(rnn_train.build_model(train_cfg, corpus.vocab_size), train_cfg)
        result = rnn_train.fit(model, train_ids, valid_ids, train_cfg, callbacks=[
            keras.callbacks.TensorBoard(tensorboard_dir, write_graph=False)])
        return {"validation_perplexity": result.best_val_ppl, "validation_loss": result.best_val_loss,
                "epochs": result.epochs_done, "wall_time_s": time.time() - start}

    def train(self, dataset, genotype_path, values, run_dir, stage="evaluate", resume=False) -> Dict[str, Any]:
        """`darts_tf.rnn.train.train` (train split; validation: valid) with the SavedModel export; test perplexity
        is that of the best validation weights."""
        self.check_data(dataset)
        cfg = base.config_from_dict(RNNEvalConfig, values, stage)
        train_cfg = preset_config(cfg.preset, cfg.overrides, stage, genotype=genotype_path)
        result = rnn_train.train(train_cfg, output_dir=run_dir, data_dir=dataset.corpus_dir, preset=cfg.preset,
                                 export=True, resume=resume)
        return {"dataset": dataset.name, "preset": cfg.preset, "valid_perplexity": result["valid_ppl"],
                "test_perplexity": result["test_ppl"], "test_loss": math.log(result["test_ppl"]),
                "epochs": result["epochs_done"], "vocab_size": result["vocab_size"], "params": result["params"],
                "wall_time_s": result["wall_time_s"]}

    def transfer(self, dataset, genotype_path, values, run_dir, stage="transfer", resume=False) -> Dict[str, Any]:
        """`train` on the other ingested corpus (the 'wikitext2' preset in the paper setting)."""
        if dataset is None:
            raise ValueError(f"[stage '{stage}'] the rnn transfer trains on another ingested corpus: pass its "
                             f"Dataset artifact (dataset=...).")
        return self.train(dataset, genotype_path, values, run_dir, stage, resume)

    def load_predictor(self, export_dir: str) -> export.LanguageModelPredictor:
        return export.load_predictor(export_dir)

    def check_export(self, export_dir, dataset=None) -> Dict[str, Any]:
        """Runs the first test tokens of `dataset` (or token 0) through the SavedModel: every row of next-token
        log-probabilities must be a distribution; on real text, also their perplexity."""
        predictor = self.load_predictor(export_dir)
        corpus = self.load_data(dataset) if dataset is not None and dataset.kind == self.data_kind else None
        real = corpus is not None and corpus.vocab == predictor.vocab and len(corpus.test) > 1
        tokens = np.asarray(corpus.test[:CHECK_TOKENS + 1] if real else np.zeros(4), np.int32)
        log_probs, _ = predictor.log_probs(tokens[None, :-1])
        if log_probs.shape[1] != len(tokens) - 1 or not np.allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-3):
            raise RuntimeError(f"The SavedModel at {export_dir!r} does not return a next-token distribution per token.")
        out = {"tokens": int(len(tokens) - 1)}
        if real:
            picked = np.take_along_axis(log_probs[0], tokens[1:, None].astype(np.int64), axis=-1)
            out["perplexity"] = float(np.exp(-picked.mean()))
        return out
