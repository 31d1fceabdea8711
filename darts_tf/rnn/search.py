"""The recurrent-cell architecture search of the paper (A.1.2, reference ``rnn/train_search.py``) end to end.

``run_search(SearchConfig(...))`` loads a word-level corpus, builds ``RNNSearchNetwork`` and hands it to the
shared ``darts_tf.search.run_bilevel_search`` (per-epoch genotypes, alpha history, metrics, TensorBoard,
checkpoint/resume: the output layout is ``darts_tf.run_files``'s), plus ``vocab.txt`` of the corpus. The corpus's
vocabulary record (``Corpus.stats``: size, and how many valid/test tokens became ``<unk>``) is logged and kept with
the run's flags as ``corpus`` (run_config.json, and the genotype files' lineage).

Windows: the train stream is cut into the reference's variable-length BPTT windows; epochs differ in their number of
windows, and ``lm_search_dataset`` pads them with empty windows. The search never sees those: every epoch keeps its
first ``min over epochs`` windows (the surplus at the end of the longer epochs, a window or two, is dropped), so no
step ever runs on an empty window and the epochs of a resumed run are those of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from darts_tf import checkpoint
from darts_tf.bilevel import FLAG_METADATA, BilevelConfig, check_replica_batch
from darts_tf.data.text import (SMOKE, Corpus, batchify, bptt_windows, check_max_vocab, describe_stats, load_corpus,
                                lm_search_dataset)
from darts_tf.distribute import (SEARCH_STRATEGY_METADATA, check_strategy_name, describe, distribute_row_streams,
                                 fix_keras_multi_worker, make_strategy)
from darts_tf.early_stop import check_monitor_flags, monitor_field
from darts_tf.genotypes import RNN_PRIMITIVES, RNN_STEPS, parse_primitives
from darts_tf.io_utils import check_output_dir
from darts_tf.rnn.search_space import RNNSearchNetwork
from darts_tf.run_files import RunFiles
from darts_tf.search import run_bilevel_search, run_on_workers


@dataclasses.dataclass
class SearchConfig:
    """The PTB search of the paper (A.1.2); defaults are the reference's rnn/train_search.py."""

    output_dir: str = ""
    dataset: str = "ptb"  # a name for the records, or 'smoke' (the offline corpus of darts_tf.data.text)
    data_dir: Optional[str] = None  # directory with train.txt, valid.txt, test.txt (not needed for 'smoke')
    max_vocab: int = 0  # 0: every train word; N: the N most frequent (<eos>, <unk> included), the rest -> <unk>
    strict_vocab: bool = False  # refuse a valid/test word outside a vocabulary without <unk> (else it becomes <unk>)
    units: int = 300  # embedding = hidden size (emsize = nhid = nhidlast)
    nodes: int = RNN_STEPS  # intermediate nodes of the cell
    primitives: str = dataclasses.field(default=",".join(RNN_PRIMITIVES), metadata={"help": (
        "Candidate activations of every edge, comma-separated, in alpha's column order: a subset (at least 2) of "
        + ", ".join(RNN_PRIMITIVES) + ".")})
    batch_size: int = 256  # train and search-validation batch (the reference batchifies both with it)
    bptt: int = 35
    max_seq_len_delta: int = 20
    epochs: int = 50
    learning_rate: float = 20.0  # SGD, no momentum, scaled per window by seq_len / bptt
    weight_decay: float = 5e-7
    grad_clip: float = 0.25
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.0
    tar_beta: float = 1e-3  # temporal activation regularisation (reference --beta)
    # the bilevel step's settings (with weight_decay, arch_weight_decay, grad_clip): bilevel_config(); flag help in
    # darts_tf.bilevel.FLAG_METADATA. xi None: the current (window-scaled) weight learning rate, as the reference
    arch_mode: str = dataclasses.field(default="first_order", metadata=FLAG_METADATA["arch_mode"])
    xi: Optional[float] = dataclasses.field(default=None, metadata=FLAG_METADATA["xi"])
    exact_recompute: bool = dataclasses.field(default=True, metadata=FLAG_METADATA["exact_recompute"])
    arch_learning_rate: float = 3e-3
    arch_beta_1: float = 0.9
    arch_beta_2: float = 0.999
    arch_weight_decay: float = 1e-3
    # architecture health and early stopping (darts_tf.health, darts_tf.early_stop: run_bilevel_search reads them)
    hessian_eigenvalue: bool = monitor_field("hessian_eigenvalue")
    hessian_iterations: int = monitor_field("hessian_iterations")
    early_stop: str = monitor_field("early_stop")
    es_max_skip_connects: int = monitor_field("es_max_skip_connects")
    es_stable_epochs: int = monitor_field("es_stable_epochs")
    es_ratio: float = monitor_field("es_ratio")
    es_window: int = monitor_field("es_window")
    es_lag: int = monitor_field("es_lag")
    es_start_epoch: int = monitor_field("es_start_epoch")
    seed: int = 3
    jit_compile: bool = False
    # each replica carries the hidden state of its rows of the batch (darts_tf.distribute.distribute_row_streams)
    strategy: str = dataclasses.field(default="default", metadata=SEARCH_STRATEGY_METADATA)
    deterministic: bool = False
    resume: bool = False

    def validate(self) -> "SearchConfig":
        if not self.output_dir:
            raise ValueError("output_dir is required: the directory for the genotype, alphas, logs and checkpoints.")
        self.bilevel_config()
        check_strategy_name(self.strategy)
        check_monitor_flags(self.to_dict())
        if self.dataset != SMOKE and not self.data_dir:
            raise ValueError(f"--data_dir is required for dataset {self.dataset!r}: a directory with train.txt, "
                             f"valid.txt and test.txt (PTB / WikiText-2 layout); or pass --dataset={SMOKE}.")
        check_max_vocab(self.max_vocab)
        parse_primitives(self.primitives, RNN_PRIMITIVES)
        for name in ("units", "nodes", "batch_size", "bptt", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1. Received: {name}={getattr(self, name)}")
        for name in ("max_seq_len_delta", "learning_rate", "weight_decay", "grad_clip", "tar_beta",
                     "arch_learning_rate", "arch_weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0. Received: {name}={getattr(self, name)}")
        for name in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{name} is a dropout rate in [0, 1). Received: {name}={getattr(self, name)}")
        for name in ("arch_beta_1", "arch_beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{name} must be in [0, 1). Received: {name}={getattr(self, name)}")
        return self

    def bilevel_config(self) -> BilevelConfig:
        """The search step's settings; the virtual step is clipped to grad_clip too (the reference's RNN architect)."""
        return BilevelConfig(mode=self.arch_mode, xi=self.xi, weight_decay=self.weight_decay,
                             arch_weight_decay=self.arch_weight_decay, grad_clip=self.grad_clip,
                             unrolled_grad_clip=self.grad_clip, exact_recompute=self.exact_recompute)

    @property
    def primitive_list(self):
        return parse_primitives(self.primitives, RNN_PRIMITIVES)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def load_search_corpus(config: SearchConfig) -> Corpus:
    """The corpus of ``config.data_dir`` with its ``max_vocab`` / ``strict_vocab``; for dataset 'smoke' without a
    data_dir, the offline corpus (built in memory)."""
    source = config.data_dir or (SMOKE if config.dataset == SMOKE else None)
    logging.info("Loading the corpus %s ...", source)
    corpus = load_corpus(source, config.max_vocab, config.strict_vocab)
    logging.info("Corpus %s: %s", source, describe_stats(corpus.stats))
    return corpus


def batched_streams(corpus: Corpus, config: SearchConfig) -> Tuple[np.ndarray, np.ndarray]:
    """The train and search-validation streams as [batch_size, steps] (a corpus too small for the batch is refused)."""
    return batchify(corpus.train, config.batch_size), batchify(corpus.valid, config.batch_size)


def search_windows_per_epoch(n_steps: int, bptt: int, seed: int, epochs: int, max_seq_len_delta: int) -> Tuple[int, int]:
    """(windows kept per epoch = the fewest of any epoch, windows per epoch in the padded stream = the most)."""
    counts = [len(bptt_windows(n_steps, bptt, seed, e, True, max_seq_len_delta)) for e in range(epochs)]
    return min(counts), max(counts)


def rnn_search_dataset(train_batched: np.ndarray, valid_batched: np.ndarray, config: SearchConfig,
                       initial_epoch: int = 0) -> Tuple[tf.data.Dataset, int]:
    """``lm_search_dataset`` for epochs initial_epoch..epochs-1 with each epoch cut to the same number of real
    windows (no empty padding windows); returns (dataset, steps_per_epoch). The windows depend on the streams' length
    only, so the same rows of both streams make the same windows (``distribute.distribute_row_streams``)."""
    keep, padded = search_windows_per_epoch(train_batched.shape[1], config.bptt, config.seed, config.epochs,
                                            config.max_seq_len_delta)
    dataset, steps = lm_search_dataset(train_batched, valid_batched, config.bptt, seed=config.seed,
                                       initial_epoch=initial_epoch, epochs=config.epochs,
                                       max_seq_len_delta=config.max_seq_len_delta)
    assert steps == padded, (steps, padded)
    dataset = dataset.enumerate().filter(lambda i, _: i % padded < keep).map(lambda _, window: window)
    return dataset.prefetch(tf.data.AUTOTUNE), keep


def build_search_model(config: SearchConfig, vocab_size: int, replicas: int = 1) -> RNNSearchNetwork:
    """The compiled supernet: SGD lr 20 without momentum for w (window-scaled), Adam for alpha; under a strategy of
    `replicas` replicas, built in its scope."""
    model = RNNSearchNetwork(vocab_size, units=config.units, steps=config.nodes, primitives=config.primitive_list,
                             dropout=config.dropout,
                             dropouth=config.dropouth, dropoutx=config.dropoutx, dropouti=config.dropouti,
                             dropoute=config.dropoute, tar_beta=config.tar_beta, seed=config.seed, bptt=config.bptt,
                             bilevel=config.bilevel_config())
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(config.learning_rate),
                  arch_optimizer=keras.optimizers.Adam(config.arch_learning_rate, beta_1=config.arch_beta_1,
                                                       beta_2=config.arch_beta_2),
                  jit_compile=config.jit_compile)
    # XLA cannot change a variable's shape inside fit; each replica carries the rows of its share
    model.carried.reset(batch_size=config.batch_size // replicas)
    return model


def run_search(config: SearchConfig, callbacks: Sequence[keras.callbacks.Callback] = (),
                   verbose="auto", corpus: Optional[Corpus] = None,
                   extra_flags: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """DARTS for a recurrent cell: returns {'genotype', 'genotype_path', 'metrics', 'alphas', ...}; writes
    the search files of ``darts_tf.run_files.RunFiles`` and ``vocab.txt`` to ``config.output_dir``.

    `corpus` is used instead of loading ``config.data_dir`` when given (the pipeline's ingested copy, whose
    vocabulary was settled when it was read: ``max_vocab`` / ``strict_vocab`` must then be left at their defaults);
    `extra_flags` are recorded with the run's flags (e.g. the dataset hash).
    """
    config.validate()
    strategy = make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    check_replica_batch(config.batch_size, replicas)
    check_output_dir(config.output_dir)
    if corpus is not None and (config.max_vocab or config.strict_vocab):
        raise ValueError(f"max_vocab and strict_vocab apply where the corpus is read, and this corpus was read "
                         f"already: pass corpus=None to read config.data_dir with them, or read the corpus with them "
                         f"(Corpus.from_directory(path, max_vocab=..., strict=...)). Received: "
                         f"max_vocab={config.max_vocab}, strict_vocab={config.strict_vocab}")
    # The corpus is read and batched (a missing, malformed or too small one refused) before the run directory is
    # created.
    corpus = corpus if corpus is not None else load_search_corpus(config)
    train_batched, valid_batched = batched_streams(corpus, config)
    flags = {**config.to_dict(), **({"corpus": corpus.stats} if corpus.stats else {}), **(extra_flags or {})}
    _, steps = rnn_search_dataset(train_batched, valid_batched, config)

    def dataset(initial_epoch):  # the whole batch (one replica; the health probe's batch)
        return rnn_search_dataset(train_batched, valid_batched, config, initial_epoch)[0]

    def distributed(initial_epoch):  # each replica's rows of every window
        return distribute_row_streams(strategy, lambda start, stop: rnn_search_dataset(
            train_batched[start:stop], valid_batched[start:stop], config, initial_epoch)[0], config.batch_size)

    def search_in(write_dir):  # multi_worker: the chief writes --output_dir, every other worker a directory of its own
        checkpoint.check_run_config(write_dir, flags, config.resume)  # before writing anything
        checkpoint.start_run(config.seed, config.deterministic)
        logging.info("Building the search network (%d units, every candidate operation on every edge) ...",
                     config.units)
        with strategy.scope():  # the variables mirrored on every replica (the carried hidden state: per replica)
            model = build_search_model(config, corpus.vocab_size, replicas)
        fix_keras_multi_worker(model)  # no-op but under multi_worker
        corpus.save_vocab(RunFiles(write_dir).vocab)
        logging.info("RNN search: %s, vocabulary %d, %d train tokens, %d windows/epoch, mode %s, %s", config.dataset,
                     corpus.vocab_size, len(corpus.train), steps, config.arch_mode, describe(strategy))
        return run_bilevel_search(model, dataset, steps, config.epochs, write_dir, flags, config.resume, callbacks,
                                  verbose, fit_dataset=distributed if replicas > 1 else None)

    result = run_on_workers(strategy, config.output_dir, config.resume, search_in)
    return {**result, "corpus": corpus.stats}
