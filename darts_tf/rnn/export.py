"""SavedModel export of a trained recurrent language model, and a predictor that serves it without Keras.

An export directory (this module is its one writer and one reader)::

    saved_model.pb, variables/, ...   the SavedModel, two signatures:
        'serving_default':  tokens int32 [batch, time]
        'with_hidden':      tokens int32 [batch, time], hidden float32 [batch, units]
        -> log_probs float32 [batch, time, vocab] (log p(next token | tokens up to t)), hidden float32 [batch, units]
    vocab.txt                         the vocabulary, one token per line (token id = line number)
    genotype.json                     the recurrent cell
    metadata.json                     vocabulary size, units, signature names, run metadata

The graph is the evaluation network (``training=False``: no dropout), so it is deterministic; 'serving_default'
starts from a zero hidden state and 'with_hidden' continues from the hidden state a previous call returned. Token ids
outside [0, vocab) fail with an InvalidArgumentError naming the range.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from darts_tf.data.text import UNK, load_vocab, save_vocab

SIGNATURE_KEY = "serving_default"
WITH_HIDDEN_KEY = "with_hidden"
TOKENS_KEY = "tokens"
HIDDEN_KEY = "hidden"
LOG_PROBS_KEY = "log_probs"
VOCAB_FILE = "vocab.txt"
GENOTYPE_FILE = "genotype.json"
METADATA_FILE = "metadata.json"


class LanguageModelServing(tf.Module):
    """Token ids (and optionally the hidden state) -> next-token log-probabilities and the final hidden state."""

    def __init__(self, model):
        super().__init__(name="darts_rnn_serving")
        self.model = model
        self.vocab_size = tf.Variable(int(model.vocab_size), dtype=tf.int32, trainable=False, name="vocab_size")
        self.units = tf.Variable(int(model.units), dtype=tf.int32, trainable=False, name="units")
        tokens = tf.TensorSpec([None, None], tf.int32, name=TOKENS_KEY)
        hidden = tf.TensorSpec([None, int(model.units)], tf.float32, name=HIDDEN_KEY)
        self.serve = tf.function(self._serve, input_signature=[tokens])
        self.serve_with_hidden = tf.function(self._serve_with_hidden, input_signature=[tokens, hidden])

    def _serve(self, tokens):
        return self._serve_with_hidden(tokens, tf.zeros([tf.shape(tokens)[0], self.model.units], tf.float32))

    def _serve_with_hidden(self, tokens, hidden):
        vocab = int(self.model.vocab_size)
        in_range = tf.logical_and(tf.reduce_all(tokens >= 0), tf.reduce_all(tokens < vocab))
        check = tf.debugging.Assert(in_range, [f"token ids must be in [0, {vocab}); received min/max",
                                               tf.reduce_min(tokens), tf.reduce_max(tokens)])
        with tf.control_dependencies([check]):
            tokens = tf.identity(tokens)
        outputs = self.model({"tokens": tokens, "hidden": hidden}, training=False)
        log_probs = tf.nn.log_softmax(tf.cast(outputs["logits"], tf.float32), axis=-1)
        return {LOG_PROBS_KEY: log_probs, HIDDEN_KEY: tf.cast(outputs["hidden"], tf.float32)}


def export_saved_model(model, export_dir: str, vocab: Sequence[str],
                          metadata: Optional[Dict[str, Any]] = None) -> str:
    """Writes the SavedModel, vocab.txt, genotype.json and metadata.json to `export_dir` atomically."""
    from darts_tf import genotypes as gt
    from darts_tf.io_utils import publish_directory

    if len(vocab) != int(model.vocab_size):
        raise ValueError(f"The vocabulary has {len(vocab)} tokens but the model's vocab_size is {model.vocab_size}; "
                         "pass the vocabulary the model was trained with.")
    module = LanguageModelServing(model)
    with publish_directory(export_dir) as tmp:
        tf.saved_model.save(module, tmp, signatures={
            SIGNATURE_KEY: module.serve.get_concrete_function(),
            WITH_HIDDEN_KEY: module.serve_with_hidden.get_concrete_function()})
        save_vocab(vocab, os.path.join(tmp, VOCAB_FILE))
        gt.save_genotype(model.genotype, os.path.join(tmp, GENOTYPE_FILE))
        info = {"vocab_size": int(model.vocab_size), "units": int(model.units), "signatures": {
                    SIGNATURE_KEY: {"inputs": [TOKENS_KEY], "outputs": [LOG_PROBS_KEY, HIDDEN_KEY]},
                    WITH_HIDDEN_KEY: {"inputs": [TOKENS_KEY, HIDDEN_KEY], "outputs": [LOG_PROBS_KEY, HIDDEN_KEY]}},
                "vocab_file": VOCAB_FILE, "run": dict(metadata or {})}
        gt.atomic_write_text(os.path.join(tmp, METADATA_FILE), json.dumps(info, indent=1) + "\n")
    return os.path.abspath(export_dir)


class LanguageModelPredictor:
    """Serves an export directory with ``tf.saved_model.load`` (no Keras, no darts_tf model classes)."""

    def __init__(self, export_dir: str):
        if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
            raise FileNotFoundError(f"{export_dir!r} is not a SavedModel directory (no saved_model.pb); pass the "
                                    "directory written by darts-rnn-train --export.")
        self.export_dir = export_dir
        self._loaded = tf.saved_model.load(export_dir)
        self._serve = self._loaded.signatures[SIGNATURE_KEY]
        self._serve_with_hidden = self._loaded.signatures[WITH_HIDDEN_KEY]
        self.vocab: List[str] = load_vocab(os.path.join(export_dir, VOCAB_FILE))
        self.units = int(self._loaded.units.numpy())
        if len(self.vocab) != int(self._loaded.vocab_size.numpy()):
            raise ValueError(f"{export_dir}: {VOCAB_FILE} has {len(self.vocab)} tokens but the model has "
                             f"{int(self._loaded.vocab_size.numpy())}.")
        self._ids = {w: i for i, w in enumerate(self.vocab)}
        with open(os.path.join(export_dir, METADATA_FILE)) as f:
            self.metadata: Dict[str, Any] = json.load(f)

    def encode(self, words: Sequence[str]) -> np.ndarray:
        """Token ids of `words`; unknown words map to <unk> (an error if the vocabulary has none)."""
        unk = self._ids.get(UNK)
        ids = []
        for w in words:
            i = self._ids.get(w, unk)
            if i is None:
                raise ValueError(f"Word {w!r} is not in the vocabulary and it has no {UNK!r} token.")
            ids.append(i)
        return np.asarray(ids, np.int32)

    def log_probs(self, tokens, hidden=None) -> Tuple[np.ndarray, np.ndarray]:
        """(log p(next | prefix) [batch, time, vocab], final hidden [batch, units]) for token ids [batch, time]."""
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be integer ids [batch, time]; received {tokens.dtype} {tokens.shape}.")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= len(self.vocab)):
            raise ValueError(f"token ids must be in [0, {len(self.vocab)}); received min {tokens.min()}, "
                             f"max {tokens.max()}.")
        tokens = tf.constant(tokens.astype(np.int32))
        if hidden is None:
            out = self._serve(**{TOKENS_KEY: tokens})
        else:
            hidden = np.asarray(hidden, np.float32)
            if hidden.shape != (tokens.shape[0], self.units):
                raise ValueError(f"hidden must be [batch, units] = [{tokens.shape[0]}, {self.units}]; received "
                                 f"{hidden.shape}.")
            out = self._serve_with_hidden(**{TOKENS_KEY: tokens, HIDDEN_KEY: tf.constant(hidden)})
        return out[LOG_PROBS_KEY].numpy(), out[HIDDEN_KEY].numpy()

    def next_words(self, words: Sequence[str], k: int = 5) -> List[Tuple[str, float]]:
        """The k most probable next words after `words`, with their probabilities."""
        log_probs, _ = self.log_probs(self.encode(words)[None])
        last = log_probs[0, -1]
        order = np.argsort(-last, kind="stable")[:max(1, int(k))]
        return [(self.vocab[i], float(np.exp(last[i]))) for i in order]


def load_predictor(export_dir: str) -> LanguageModelPredictor:
    return LanguageModelPredictor(export_dir)
