"""SavedModel export of a trained recurrent language model, and a predictor that serves it without Keras.

An export (this module is its one writer and one reader; the layout is `darts_tf.export_common`'s)::

    export_dir/<version>/       with version=N (TF Serving's / KServe's base path is export_dir), else export_dir/
        saved_model.pb, variables/   the SavedModel, written with keras.export.ExportArchive, three signatures:
            'serving_default'   tokens int32 [-1, -1]
                                -> log_probs float32 [-1, -1, vocab] (log p(next token | tokens up to t)),
                                   hidden float32 [-1, units] (the state after the last token)
            'with_hidden'       tokens int32 [-1, -1], hidden float32 [-1, units] -> log_probs, hidden
            'serving_text'      sentences string [-1] (one line of text each)
                                -> token_ids int32 [-1, -1] (padded with 0 after `lengths`), lengths int32 [-1],
                                   log_probs float32 [-1, -1, vocab], predicted_words string [-1, -1] (the most
                                   probable next word after each token; '' in the padding),
                                   sentence_log_prob float32 [-1] (sum of log p(token t+1 | tokens up to t))
        assets/vocab.txt        the vocabulary the graph's lookup tables read (token id = line number)
        vocab.txt               the same file, for readers without TensorFlow
        genotype.json           the recurrent cell
        metadata.json           vocabulary size, units, signatures, run metadata

'serving_text' tokenises as training does (`darts_tf.data.text.tokenize_line`: split on whitespace, append
`<eos>`); words outside the vocabulary become `<unk>` (an InvalidArgumentError when the vocabulary has none).
The graph is the evaluation network (``training=False``: no dropout), so it is deterministic; 'serving_default'
and 'serving_text' start from a zero hidden state, 'with_hidden' continues from the hidden state a previous call
returned. Token ids outside [0, vocab) fail with an InvalidArgumentError naming the range.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from darts_tf import export_common
from darts_tf.data.text import EOS, UNK, load_vocab, save_vocab

SIGNATURE_KEY = "serving_default"
WITH_HIDDEN_KEY = "with_hidden"
TEXT_SIGNATURE_KEY = "serving_text"
TOKENS_KEY = "tokens"
HIDDEN_KEY = "hidden"
LOG_PROBS_KEY = "log_probs"
SENTENCES_KEY = "sentences"
TOKEN_IDS_KEY = "token_ids"
LENGTHS_KEY = "lengths"
PREDICTED_WORDS_KEY = "predicted_words"
SENTENCE_LOG_PROB_KEY = "sentence_log_prob"
VOCAB_FILE = "vocab.txt"
GENOTYPE_FILE = export_common.GENOTYPE_FILE
METADATA_FILE = export_common.METADATA_FILE
_WRITTEN_BY = "darts-rnn-train --export"


class LanguageModelServing:
    """The functions of the exported graph over one language model; `keras.export.ExportArchive` traces them.
    `vocab_file` is the vocabulary the lookup tables are initialised from (it becomes a SavedModel asset)."""

    def __init__(self, model, vocab_file: str, vocab: Sequence[str]):
        self.model = model
        self.vocab_size, self.units = int(model.vocab_size), int(model.units)
        vocab = list(vocab)
        self.unk_id = vocab.index(UNK) if UNK in vocab else -1
        line = tf.lookup.TextFileIndex
        self.word_ids = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(vocab_file, tf.string, line.WHOLE_LINE, tf.int64, line.LINE_NUMBER),
            default_value=self.unk_id)
        self.words = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(vocab_file, tf.int64, line.LINE_NUMBER, tf.string, line.WHOLE_LINE),
            default_value="")

    def serve(self, tokens):
        return self.serve_with_hidden(tokens, tf.zeros([tf.shape(tokens)[0], self.units], tf.float32))

    def serve_with_hidden(self, tokens, hidden):
        vocab = self.vocab_size
        in_range = tf.logical_and(tf.reduce_all(tokens >= 0), tf.reduce_all(tokens < vocab))
        check = tf.debugging.Assert(in_range, [f"token ids must be in [0, {vocab}); received min/max",
                                               tf.reduce_min(tokens), tf.reduce_max(tokens)])
        with tf.control_dependencies([check]):
            tokens = tf.identity(tokens)
        outputs = self.model({"tokens": tokens, "hidden": hidden}, training=False)
        log_probs = tf.nn.log_softmax(tf.cast(outputs["logits"], tf.float32), axis=-1)
        return {LOG_PROBS_KEY: log_probs, HIDDEN_KEY: tf.cast(outputs["hidden"], tf.float32)}

    def serve_text(self, sentences):
        words = tf.strings.split(sentences)  # ragged [batch, (words)]: split on whitespace, as str.split()
        words = tf.concat([words, tf.RaggedTensor.from_tensor(tf.fill([tf.shape(sentences)[0], 1], EOS))], axis=1)
        ids = tf.ragged.map_flat_values(self.word_ids.lookup, words)
        known = tf.debugging.Assert(tf.reduce_all(ids.flat_values >= 0), [
            f"a word is not in the vocabulary and it has no {UNK} token; unknown words:",
            tf.boolean_mask(words.flat_values, ids.flat_values < 0)], summarize=5)
        with tf.control_dependencies([known]):
            tokens = tf.cast(ids.to_tensor(default_value=0), tf.int32)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        log_probs = self.serve(tokens)[LOG_PROBS_KEY]
        mask = tf.sequence_mask(lengths, tf.shape(tokens)[1])
        predicted = tf.where(mask, self.words.lookup(tf.argmax(log_probs, axis=-1)), "")
        picked = tf.gather(log_probs[:, :-1], tokens[:, 1:], batch_dims=2)  # log p(token t+1 | tokens up to t)
        scored = tf.cast(mask[:, 1:], tf.float32)
        return {TOKEN_IDS_KEY: tokens, LENGTHS_KEY: lengths, LOG_PROBS_KEY: log_probs, PREDICTED_WORDS_KEY: predicted,
                SENTENCE_LOG_PROB_KEY: tf.reduce_sum(picked * scored, axis=1)}


def serving_archive(functions: LanguageModelServing):
    import keras

    archive = keras.export.ExportArchive()
    archive.track(functions.model)
    archive.track(functions.word_ids)
    archive.track(functions.words)
    tokens = tf.TensorSpec([None, None], tf.int32, name=TOKENS_KEY)
    archive.add_endpoint(SIGNATURE_KEY, functions.serve, [tokens])
    archive.add_endpoint(WITH_HIDDEN_KEY, functions.serve_with_hidden,
                         [tokens, tf.TensorSpec([None, functions.units], tf.float32, name=HIDDEN_KEY)])
    archive.add_endpoint(TEXT_SIGNATURE_KEY, functions.serve_text, [tf.TensorSpec([None], tf.string, name=SENTENCES_KEY)])
    return archive


def export_saved_model(model, export_dir: str, vocab: Sequence[str], metadata: Optional[Dict[str, Any]] = None, *,
                       version: Optional[int] = None) -> str:
    """Writes the SavedModel (the vocabulary as its asset), vocab.txt, genotype.json and metadata.json to
    `export_dir/<version>/` (`version=None`: to `export_dir` itself), atomically. Returns the directory holding
    saved_model.pb."""
    from darts_tf import genotypes as gt

    if len(vocab) != int(model.vocab_size):
        raise ValueError(f"The vocabulary has {len(vocab)} tokens but the model's vocab_size is {model.vocab_size}; "
                         "pass the vocabulary the model was trained with.")
    units = int(model.units)
    signatures = {
        SIGNATURE_KEY: {"inputs": {TOKENS_KEY: "int32 [-1, -1]"}, "outputs": {
            LOG_PROBS_KEY: f"float32 [-1, -1, {len(vocab)}]", HIDDEN_KEY: f"float32 [-1, {units}]"}},
        WITH_HIDDEN_KEY: {"inputs": {TOKENS_KEY: "int32 [-1, -1]", HIDDEN_KEY: f"float32 [-1, {units}]"},
                          "outputs": {LOG_PROBS_KEY: f"float32 [-1, -1, {len(vocab)}]",
                                      HIDDEN_KEY: f"float32 [-1, {units}]"}},
        TEXT_SIGNATURE_KEY: {"inputs": {SENTENCES_KEY: "string [-1]"}, "outputs": {
            TOKEN_IDS_KEY: "int32 [-1, -1]", LENGTHS_KEY: "int32 [-1]", LOG_PROBS_KEY: f"float32 [-1, -1, {len(vocab)}]",
            PREDICTED_WORDS_KEY: "string [-1, -1]", SENTENCE_LOG_PROB_KEY: "float32 [-1]"}}}
    info = {"vocab_size": len(vocab), "units": units, "version": version, "signatures": signatures,
            "vocab_file": VOCAB_FILE, "vocab_asset": os.path.join("assets", VOCAB_FILE),
            "tokenisation": f"whitespace split + {EOS!r}; unknown words -> {UNK!r}"}
    with export_common.publish_export(export_dir, version) as tmp:
        vocab_file = os.path.join(tmp, VOCAB_FILE)
        save_vocab(vocab, vocab_file)
        export_common.write_archive(serving_archive(LanguageModelServing(model, vocab_file, vocab)), tmp)
        gt.save_genotype(model.genotype, os.path.join(tmp, GENOTYPE_FILE))
        export_common.write_metadata(tmp, info, metadata)
    return export_common.target_dir(export_dir, version)


class LanguageModelPredictor:
    """Serves an export with ``tf.saved_model.load`` (no Keras, no darts_tf model classes). `export_dir` is a
    SavedModel directory or a base path of numbered versions (the highest is served)."""

    def __init__(self, export_dir: str):
        self.export_dir = export_common.resolve_saved_model_dir(export_dir, _WRITTEN_BY)
        self._loaded = tf.saved_model.load(self.export_dir)
        self._serve = self._loaded.signatures[SIGNATURE_KEY]
        self._serve_with_hidden = self._loaded.signatures[WITH_HIDDEN_KEY]
        self._serve_text = self._loaded.signatures.get(TEXT_SIGNATURE_KEY)  # exports from before the text signature
        self.vocab: List[str] = load_vocab(os.path.join(self.export_dir, VOCAB_FILE))
        self.metadata: Dict[str, Any] = export_common.read_metadata(self.export_dir)
        hidden = export_common.signature_spec(self._serve_with_hidden, HIDDEN_KEY)
        self.units = int(hidden.shape[-1]) if hidden.shape[-1] is not None else int(self._loaded.units.numpy())
        vocab_size = int(self.metadata.get("vocab_size") or self._loaded.vocab_size.numpy())
        if len(self.vocab) != vocab_size:
            raise ValueError(f"{self.export_dir}: {VOCAB_FILE} has {len(self.vocab)} tokens but the model has "
                             f"{vocab_size}.")
        self._ids = {w: i for i, w in enumerate(self.vocab)}

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

    def score_text(self, sentences: Sequence[str]) -> Dict[str, np.ndarray]:
        """'serving_text' on lines of text: token_ids, lengths, log_probs, predicted_words, sentence_log_prob."""
        if self._serve_text is None:
            raise ValueError(f"{self.export_dir} has no {TEXT_SIGNATURE_KEY!r} signature; export the model again.")
        out = self._serve_text(**{SENTENCES_KEY: tf.constant(list(sentences), tf.string)})
        return {k: v.numpy() for k, v in out.items()}

    def next_words(self, words: Sequence[str], k: int = 5) -> List[Tuple[str, float]]:
        """The k most probable next words after `words`, with their probabilities."""
        log_probs, _ = self.log_probs(self.encode(words)[None])
        last = log_probs[0, -1]
        order = np.argsort(-last, kind="stable")[:max(1, int(k))]
        return [(self.vocab[i], float(np.exp(last[i]))) for i in order]


def load_predictor(export_dir: str) -> LanguageModelPredictor:
    """A `LanguageModelPredictor` of a SavedModel directory or of a base path of numbered versions (the highest)."""
    return LanguageModelPredictor(export_dir)
