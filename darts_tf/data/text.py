"""Word-level language-modelling data (the awd-lstm-lm / DARTS reference layout).

A corpus directory holds `train.txt`, `valid.txt` and `test.txt`: one sentence
per line, words separated by whitespace; `<eos>` is appended to every line. The
vocabulary is built from `train.txt` in order of first appearance.

Token streams are batchified into `[batch_size, n_steps]` (batch-major; row b is
the b-th contiguous slice of the stream) and cut into BPTT windows along the
step axis. Windows are consecutive, so a model can carry its hidden state from
one batch to the next. For `tf.function` every batch has the fixed width
`max_len = bptt + max_seq_len_delta` with a mask marking the real positions.

`smoke_corpus` writes a small *real* English corpus for offline runs: the text
of the Python reference manual that CPython ships as `pydoc_data/topics.py`
(the `pydoc_data.topics.topics` dict, ~65k words), lower-cased into words,
numbers mapped to `N` as in PTB, rare words to `<unk>`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from darts_tf.data.checks import check_batch_size, check_epochs
from darts_tf.io_utils import atomic_write_text

EOS = "<eos>"
UNK = "<unk>"
SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")
_LAYOUT = ("expected layout: DIR/train.txt, DIR/valid.txt, DIR/test.txt "
           "(one sentence per line, words separated by spaces, as PTB / WikiText-2)")


# --------------------------------------------------------------------------
# Vocabulary and corpus
# --------------------------------------------------------------------------


def tokenize_line(line: str) -> list:
    """Whitespace-split words of one line plus `<eos>` (reference tokenisation)."""
    return line.split() + [EOS]


def save_vocab(vocab: Sequence[str], path: str) -> None:
    """Writes one token per line, atomically (temp file + rename)."""
    for token in vocab:
        if not token or any(c.isspace() for c in token):
            raise ValueError(
                f"Vocabulary token {token!r} is empty or contains whitespace; "
                "tokens must be whitespace-free words.")
    atomic_write_text(path, "".join(t + "\n" for t in vocab))


def load_vocab(path: str) -> list:
    """Reads a vocabulary written by `save_vocab`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Vocabulary file {path!r} does not exist; it is written by "
            "save_vocab (one token per line) next to the trained model.")
    with open(path, encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    if not vocab:
        raise ValueError(f"Vocabulary file {path!r} is empty.")
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"Vocabulary file {path!r} has duplicate tokens.")
    return vocab


def encode_lines(lines: Sequence[str], vocab: Sequence[str], source: str = "text"
                 ) -> np.ndarray:
    """Token ids (int32) of `lines` (each + `<eos>`); OOV words -> `<unk>` if in vocab."""
    word_to_id = {w: i for i, w in enumerate(vocab)}
    unk = word_to_id.get(UNK)
    ids = []
    for lineno, line in enumerate(lines, 1):
        for word in tokenize_line(line):
            i = word_to_id.get(word, unk)
            if i is None:
                raise ValueError(
                    f"Word {word!r} ({source}, line {lineno}) is not in the training "
                    f"vocabulary and the vocabulary has no {UNK!r} token; map rare "
                    f"words to {UNK} in the corpus files (as PTB does).")
            ids.append(i)
    return np.asarray(ids, np.int32)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A word-level corpus: vocabulary and int32 id streams of the three splits."""

    vocab: list
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def from_directory(cls, path: str) -> "Corpus":
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Corpus directory {path!r} does not exist; {_LAYOUT}.")
        lines = {}
        for name in SPLIT_FILES:
            file = os.path.join(path, name)
            if not os.path.isfile(file):
                raise FileNotFoundError(f"Missing corpus file {file!r}; {_LAYOUT}.")
            with open(file, encoding="utf-8") as f:
                lines[name] = f.read().splitlines()
        if not lines["train.txt"]:
            raise ValueError(
                f"{os.path.join(path, 'train.txt')!r} is empty; the vocabulary is "
                "built from it.")
        vocab = list(dict.fromkeys(
            w for line in lines["train.txt"] for w in tokenize_line(line)))
        encoded = [encode_lines(lines[n], vocab, os.path.join(path, n))
                   for n in SPLIT_FILES]
        return cls(vocab, *encoded)

    def save_vocab(self, path: str) -> None:
        save_vocab(self.vocab, path)


# --------------------------------------------------------------------------
# Smoke corpus
# --------------------------------------------------------------------------

_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+(?:\.[0-9]+)?")


def smoke_corpus(directory: str, max_train_tokens: int = 100_000,
                 min_count: int = 2) -> str:
    """Writes the Python reference manual (`pydoc_data.topics`) as a PTB-like corpus.

    Lines become sentences (lines with fewer than 3 words are dropped), split
    deterministically 8/1/1 by line index into train/valid/test; words seen fewer
    than `min_count` times in train become `<unk>` everywhere, so valid/test
    never hold a word missing from the training vocabulary. Returns `directory`.
    """
    from pydoc_data.topics import topics

    sentences = []
    for key in sorted(topics):
        for line in topics[key].splitlines():
            words = ["N" if w[0].isdigit() else w for w in _WORD_RE.findall(line.lower())]
            if len(words) >= 3:
                sentences.append(words)
    splits = {"train.txt": [], "valid.txt": [], "test.txt": []}
    n_train = 0
    for i, words in enumerate(sentences):
        if n_train >= max_train_tokens:
            break
        name = {8: "valid.txt", 9: "test.txt"}.get(i % 10, "train.txt")
        splits[name].append(words)
        if name == "train.txt":
            n_train += len(words) + 1
    counts = {}
    for words in splits["train.txt"]:
        for w in words:
            counts[w] = counts.get(w, 0) + 1
    os.makedirs(directory, exist_ok=True)
    for name, rows in splits.items():
        text = "".join(
            " " + " ".join(w if counts.get(w, 0) >= min_count else UNK for w in words)
            + " \n" for words in rows)  # PTB's leading/trailing spaces
        atomic_write_text(os.path.join(directory, name), text)
    return os.fspath(directory)


SMOKE = "smoke"  # the name of the offline corpus (a --dataset / --data_dir value)


def load_corpus(data_dir: Optional[str], smoke_dir: str) -> Corpus:
    """The corpus in `data_dir` (train/valid/test.txt); for ``'smoke'`` the offline corpus, written to `smoke_dir`
    the first time."""
    if data_dir == SMOKE:
        if not all(os.path.isfile(os.path.join(smoke_dir, f)) for f in SPLIT_FILES):
            smoke_corpus(smoke_dir)
        return Corpus.from_directory(smoke_dir)
    return Corpus.from_directory(data_dir)


# --------------------------------------------------------------------------
# Batching and BPTT windows
# --------------------------------------------------------------------------


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """[batch_size, n_steps]: row b is the b-th contiguous slice; the tail is dropped."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"batchify expects a 1-D id stream; received shape {ids.shape}.")
    check_batch_size(batch_size)
    n_steps = len(ids) // batch_size
    if n_steps < 2:
        raise ValueError(
            f"{len(ids)} tokens are too few for batch_size={batch_size}: each batch row "
            f"needs at least 2 tokens (an input and its target); lower batch_size to "
            f"at most {max(len(ids) // 2, 1)} or use more text.")
    return ids[: n_steps * batch_size].reshape(batch_size, n_steps).astype(np.int32)


def bptt_windows(n_steps: int, bptt: int, seed: int = 0, epoch: int = 0,
                 variable_length: bool = True, max_seq_len_delta: int = 20,
                 min_len: int = 5) -> list:
    """(start, seq_len) windows over `n_steps` columns, in order, as the reference.

    Inputs are columns [start, start+seq_len), targets one step later, so the
    windows cover columns 0..n_steps-2 exactly once. Variable length: base = bptt
    with probability 0.95 else bptt/2, seq_len = max(min_len, int(N(base, 5))),
    capped at bptt + max_seq_len_delta and at the data end; random draws are a
    function of (seed, epoch). Fixed (evaluation): seq_len = bptt.
    """
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1; received bptt={bptt}.")
    if n_steps < 2:
        raise ValueError(
            f"n_steps={n_steps} leaves no (input, target) pair; batchify more text.")
    rng = np.random.default_rng([int(seed), int(epoch), 0xB977])
    windows, i, end = [], 0, n_steps - 1
    while i < end:
        if variable_length:
            base = bptt if rng.random() < 0.95 else bptt / 2.0
            seq_len = max(min_len, int(rng.normal(base, 5)))
            seq_len = min(seq_len, bptt + max_seq_len_delta)
        else:
            seq_len = bptt
        seq_len = max(1, min(seq_len, end - i))
        windows.append((i, seq_len))
        i += seq_len
    return windows


def _window_table(n_steps, bptt, seed, initial_epoch, epochs, variable_length,
                  max_seq_len_delta, min_len):
    """Windows of every epoch, padded to a common count with (0, 0) windows.

    The count is the maximum over epochs 0..epochs-1 (not initial_epoch..), so a
    resumed run pads exactly like an uninterrupted one.
    """
    per_epoch = [bptt_windows(n_steps, bptt, seed, e, variable_length,
                              max_seq_len_delta, min_len) for e in range(epochs)]
    steps = max(len(w) for w in per_epoch)
    rows = []
    for e in range(initial_epoch, epochs):
        rows.extend(per_epoch[e] + [(0, 0)] * (steps - len(per_epoch[e])))
    return np.asarray(rows, np.int32).reshape(-1, 2), steps


def _window_slicer(batched_ids: np.ndarray, max_len: int):
    """A function (start, seq_len) -> the fixed-shape window dict."""
    batch = batched_ids.shape[0]
    padded = tf.constant(np.pad(batched_ids.astype(np.int32), [(0, 0), (0, max_len + 1)]))

    def slice_window(start, seq_len):
        mask = tf.sequence_mask(seq_len, max_len, dtype=tf.int32)[None, :]
        inputs = tf.slice(padded, [0, start], [batch, max_len]) * mask
        targets = tf.slice(padded, [0, start + 1], [batch, max_len]) * mask
        return {"inputs": inputs, "targets": targets,
                "mask": tf.cast(tf.broadcast_to(mask, [batch, max_len]), tf.float32),
                "seq_len": seq_len, "start": start}

    return slice_window


def _resolve_max_len(bptt, max_seq_len_delta, max_len):
    needed = bptt + max_seq_len_delta
    if max_len is None:
        return needed
    if max_len < needed:
        raise ValueError(
            f"max_len={max_len} is shorter than the longest window "
            f"bptt + max_seq_len_delta = {needed}; raise max_len or leave it None.")
    return max_len


def lm_dataset(batched_ids: np.ndarray, bptt: int, *, seed: int = 0,
               initial_epoch: int = 0, epochs: int = 1, variable_length: bool = True,
               max_seq_len_delta: int = 20, min_len: int = 5,
               max_len: Optional[int] = None):
    """Fixed-shape BPTT batches for epochs initial_epoch..epochs-1, and steps_per_epoch.

    Each element is a dict: `inputs`, `targets` int32 [B, max_len], `mask` float32
    [B, max_len] (1 on the first `seq_len` positions), `seq_len` int32 scalar,
    `start` int32 scalar (window start column; 0 = start of an epoch, where the
    reference re-initialises the hidden state). Variable-length epochs differ in
    their number of windows, so every epoch is padded to the same
    `steps_per_epoch` with empty windows (`seq_len` 0, all-zero mask) at its end;
    a train step should skip those.
    """
    batched_ids = np.asarray(batched_ids)
    if batched_ids.ndim != 2:
        raise ValueError(
            f"batched_ids must be [batch_size, n_steps] from batchify; received "
            f"shape {batched_ids.shape}.")
    check_epochs(initial_epoch, epochs)
    max_len = _resolve_max_len(bptt, max_seq_len_delta, max_len)
    table, steps = _window_table(batched_ids.shape[1], bptt, seed, initial_epoch,
                                 epochs, variable_length, max_seq_len_delta, min_len)
    ds = tf.data.Dataset.from_tensor_slices((table[:, 0], table[:, 1]))
    ds = ds.map(_window_slicer(batched_ids, max_len), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE), steps


def lm_search_dataset(train_batched: np.ndarray, valid_batched: np.ndarray, bptt: int,
                      *, seed: int = 0, initial_epoch: int = 0, epochs: int = 1,
                      variable_length: bool = True, max_seq_len_delta: int = 20,
                      min_len: int = 5, max_len: Optional[int] = None):
    """Bilevel RNN search stream `{'train': window, 'validation': window}`, steps.

    Train windows are those of `lm_dataset`; as in the reference
    (rnn/train_search.py), the validation window paired with the train window
    starting at column i starts at i mod (n_valid_steps - 1) and has length bptt
    (capped at the data end), so the shorter validation stream is cycled.
    Padding windows are empty in both halves.
    """
    train_batched = np.asarray(train_batched)
    valid_batched = np.asarray(valid_batched)
    for what, arr in (("train_batched", train_batched), ("valid_batched", valid_batched)):
        if arr.ndim != 2:
            raise ValueError(
                f"{what} must be [batch_size, n_steps] from batchify; received "
                f"shape {arr.shape}.")
    if train_batched.shape[0] != valid_batched.shape[0]:
        raise ValueError(
            f"train and validation batch sizes differ ({train_batched.shape[0]} vs "
            f"{valid_batched.shape[0]}); batchify both with the same batch_size.")
    if valid_batched.shape[1] < 2:
        raise ValueError("valid_batched needs at least 2 steps; batchify more text.")
    check_epochs(initial_epoch, epochs)
    max_len = _resolve_max_len(bptt, max_seq_len_delta, max_len)
    table, steps = _window_table(train_batched.shape[1], bptt, seed, initial_epoch,
                                 epochs, variable_length, max_seq_len_delta, min_len)
    n_valid = valid_batched.shape[1]
    v_start = (table[:, 0] % (n_valid - 1)).astype(np.int32)
    v_len = np.minimum(bptt, n_valid - 1 - v_start)
    v_len = np.where(table[:, 1] > 0, v_len, 0).astype(np.int32)
    train_slice = _window_slicer(train_batched, max_len)
    valid_slice = _window_slicer(valid_batched, max_len)
    ds = tf.data.Dataset.from_tensor_slices((table[:, 0], table[:, 1], v_start, v_len))
    ds = ds.map(lambda s, l, vs, vl: {"train": train_slice(s, l),
                                      "validation": valid_slice(vs, vl)},
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE), steps
