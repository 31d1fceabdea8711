"""Evaluating a trained recurrent language model (paper A.2.2, A.2.4; ``darts-rnn-test``): perplexity with fixed
BPTT windows and the hidden state carried (the reference's ``evaluate``), of a model or of a run's ``model.keras``
on its corpus.

A run is evaluated with its own vocabulary (the run's ``vocab.txt``): a word of the evaluated text outside it becomes
the vocabulary's ``<unk>``, and the result's ``corpus`` record (``Corpus.stats``) says how many tokens did."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from darts_tf.data.text import Corpus, batchify, describe_stats, lm_dataset, load_corpus, load_vocab
from darts_tf.rnn.networks import RNNModel
from darts_tf.rnn.ops import masked_cross_entropy
from darts_tf.run_files import RunFiles, run_dir_of


def _eval_function(model: RNNModel):
    fn = getattr(model, "_darts_eval_window", None)
    if fn is None:
        @tf.function
        def fn(window, hidden):
            outputs = model({"tokens": window["inputs"], "mask": window["mask"], "hidden": hidden}, training=False)
            total, count = masked_cross_entropy(window["targets"], outputs["logits"], window["mask"])
            return total, count, outputs["hidden"]

        object.__setattr__(model, "_darts_eval_window", fn)
    return fn


def evaluate_loss(model: RNNModel, batched_ids: np.ndarray, bptt: int) -> float:
    """Mean token cross-entropy over ``batched_ids`` [batch, n_steps] in fixed bptt windows, hidden carried."""
    dataset, _ = lm_dataset(batched_ids, bptt, variable_length=False, max_seq_len_delta=0)
    fn = _eval_function(model)
    hidden = tf.zeros([batched_ids.shape[0], model.units])
    total, count = 0.0, 0.0
    for window in dataset:
        t, c, hidden = fn({k: window[k] for k in ("inputs", "targets", "mask")}, hidden)
        total += float(t)
        count += float(c)
    return total / max(count, 1.0)


def evaluate_perplexity(model: RNNModel, batched_ids: np.ndarray, bptt: int) -> float:
    """exp(mean token cross-entropy) with fixed windows (the reference's ``evaluate``)."""
    return math.exp(evaluate_loss(model, batched_ids, bptt))


def corpus_perplexities(model, corpus: Corpus, eval_batch_size: int, test_batch_size: int, bptt: int
                        ) -> Dict[str, float]:
    """Validation (`eval_batch_size`) and test (`test_batch_size`) perplexity with fixed `bptt` windows, as the
    reference's train.py."""
    return {"valid_ppl": evaluate_perplexity(model, batchify(corpus.valid, eval_batch_size), bptt),
            "test_ppl": evaluate_perplexity(model, batchify(corpus.test, test_batch_size), bptt)}


EVAL_SETTINGS = ("eval_batch_size", "test_batch_size", "bptt")  # what evaluation takes from a run's run_config.json


def read_run_config(run_dir: str) -> Dict[str, Any]:
    path = RunFiles(run_dir).run_config
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist; pass the --output_dir of a darts-rnn-train run.")
    with open(path) as f:
        return json.load(f)


def load_model(model_path: str):
    """The model.keras of a run (or the run directory holding one)."""
    path = RunFiles(model_path).model if os.path.isdir(model_path) else model_path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file {path!r} does not exist; pass the model.keras written by darts-rnn-train "
                                "(or its output directory).")
    model = keras.models.load_model(path, compile=False)
    if not isinstance(model, RNNModel):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a recurrent language model (RNNModel); pass a "
                         "model written by darts-rnn-train.")
    return model


def evaluate(model_path: str, data_dir: Optional[str] = None) -> Dict[str, Any]:
    """Valid and test perplexity of a run's model.keras on its corpus (data_dir and batch sizes from the run) or on
    the corpus in `data_dir`, encoded with the run's vocab.txt (words outside it become <unk>; see `corpus` in the
    result)."""
    run_dir = run_dir_of(model_path)
    run = read_run_config(run_dir)
    missing = [k for k in EVAL_SETTINGS if k not in run]
    if missing:
        raise ValueError(f"{RunFiles(run_dir).run_config} has no {', '.join(missing)}: it was not written by "
                         "darts-rnn-train; pass the output directory of a darts-rnn-train run.")
    model = load_model(model_path)
    source = data_dir or run.get("data_dir")
    vocab_path = RunFiles(run_dir).vocab
    if os.path.isfile(vocab_path):
        corpus = load_corpus(source, vocab=load_vocab(vocab_path), vocab_source=vocab_path)
    else:  # a run without vocab.txt: the vocabulary is rebuilt as the run built it
        corpus = load_corpus(source, int(run.get("max_vocab", 0)), bool(run.get("strict_vocab", False)))
    logging.info("Corpus %s: %s", source, describe_stats(corpus.stats))
    if corpus.vocab_size != model.vocab_size:
        raise ValueError(f"The vocabulary has {corpus.vocab_size} words but the model {model.vocab_size}: "
                         f"{vocab_path} is not the vocabulary of {model_path}; pass the run directory the model was "
                         f"trained in.")
    return {**corpus_perplexities(model, corpus, *(int(run[k]) for k in EVAL_SETTINGS)), "model": os.path.abspath(model_path),
            "data_dir": source, "corpus": corpus.stats}
