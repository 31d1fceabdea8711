"""Word-level language-modelling data (the awd-lstm-lm / DARTS reference layout).

A corpus directory holds `train.txt`, `valid.txt` and `test.txt`: UTF-8 text, one sentence per line, words separated
by whitespace; `<eos>` is appended to every line. None of the three may be empty (or only whitespace).

Vocabulary (`Corpus.from_texts` / `from_directory` / `load_corpus`, parameters `max_vocab` and `strict`):

* ``max_vocab=0`` (no cap): every word of `train.txt`, in order of first appearance (the reference's order: PTB
  keeps its ids). A valid/test word that `train.txt` lacks becomes `<unk>`; when `train.txt` has no `<unk>` of its
  own, `<unk>` is then appended as the last id (a corpus that maps nothing gets no extra token).
* ``max_vocab=N``: the N most frequent words of `train.txt` (ties: the earlier first appearance wins), `<eos>` and
  `<unk>` always among them and counted in N; every other word becomes `<unk>` in train, valid and test. The ids
  are in order of first appearance in the mapped train stream (`<unk>` last if it never occurs there), so writing the
  mapped corpus out (`Corpus.write_directory`) and reading it back gives the same vocabulary and ids.
* ``strict=True``: today's refusal. A valid/test word outside the vocabulary is an error naming the file, the line
  and the word, unless the vocabulary has `<unk>` (because `train.txt` uses it, as PTB, or because of a cap).
* ``vocab=[...]``: a fixed vocabulary (a trained model's vocab.txt); words outside it become its `<unk>`.

`Corpus.stats` records, per split, how many tokens became `<unk>`; `describe_stats` is its log line.

Token streams are batchified into `[batch_size, n_steps]` (batch-major; row b is
the b-th contiguous slice of the stream) and cut into BPTT windows along the
step axis. Windows are consecutive, so a model can carry its hidden state from
one batch to the next. For `tf.function` every batch has the fixed width
`max_len = bptt + max_seq_len_delta` with a mask marking the real positions.

`smoke_texts` builds a small *real* English corpus in memory for offline runs (`smoke_corpus` writes it to a
directory): the text of the Python reference manual that CPython ships as `pydoc_data/topics.py` (the
`pydoc_data.topics.topics` dict, ~65k words), lower-cased into words, numbers mapped to `N` as in PTB, rare words to
`<unk>`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from darts_tf.data.checks import check_batch_size, check_epochs
from darts_tf.io_utils import atomic_write_text

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")
SPLIT_FILES = tuple(f"{s}.txt" for s in SPLITS)
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


def check_max_vocab(max_vocab: int) -> None:
    """0 (no cap) or at least 2 (`<eos>` and `<unk>` always count toward the cap)."""
    if max_vocab != 0 and max_vocab < 2:
        raise ValueError(
            f"--max_vocab must be 0 (no cap) or >= 2 (<eos> and <unk> always count toward it). "
            f"Received: max_vocab={max_vocab}")


def read_text_file(path: str) -> str:
    """The text of a corpus file; refuses a missing, non-UTF-8 (naming the byte offset) or blank one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Missing corpus file {path!r}; {_LAYOUT}.")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"Corpus file {path!r} is not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset {e.start} "
            f"(line {line}) cannot be decoded; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is no word


def _split_stats(tokens: int, unk: int, oov: int, oov_words: int) -> Dict[str, Any]:
    return {"tokens": tokens, "unk": unk, "unk_rate": unk / max(tokens, 1), "oov": oov,
            "oov_rate": oov / max(tokens, 1), "oov_words": oov_words}


def _vocab_order(train_lines: Sequence[str], max_vocab: int) -> list:
    """The vocabulary built from train (see the module docstring)."""
    counts: Dict[str, int] = {}
    for line in train_lines:
        for w in tokenize_line(line):
            counts[w] = counts.get(w, 0) + 1  # dicts keep insertion order: first appearance
    if not max_vocab:
        return list(counts)
    first = {w: i for i, w in enumerate(counts)}
    others = sorted((w for w in counts if w not in (EOS, UNK)), key=lambda w: (-counts[w], first[w]))
    keep = {EOS, UNK, *others[:max_vocab - 2]}
    vocab = list(dict.fromkeys(w if w in keep else UNK for line in train_lines for w in tokenize_line(line)))
    return vocab if UNK in vocab else vocab + [UNK]


def _unseen_word(word, source, lineno, vocab_source) -> ValueError:
    if vocab_source:
        return ValueError(
            f"Word {word!r} ({source}, line {lineno}) is not in the vocabulary {vocab_source} and it has no {UNK!r} "
            f"token to map it to; evaluate on text that uses only its words, or train the model with --max_vocab (its "
            f"vocabulary then has {UNK}).")
    return ValueError(
        f"Word {word!r} ({source}, line {lineno}) is not in the training vocabulary and --strict_vocab refuses it "
        f"(the vocabulary has no {UNK!r} token). Pass --nostrict_vocab to map unseen words to {UNK} (the rate is "
        f"reported), or --max_vocab=N to cap the vocabulary (every other word becomes {UNK}), or map rare words to "
        f"{UNK} in the corpus files (as PTB does).")


def encode_lines(lines: Sequence[str], vocab: list, source: str = "text", *, grow_unk: bool = False,
                 vocab_source: str = ""):
    """(int32 ids of `lines`, each + `<eos>`; stats) with words outside `vocab` mapped to `<unk>`.

    Without `<unk>` in `vocab`, such a word is an error naming `source` and the line, or with `grow_unk` `<unk>` is
    appended to `vocab` (in place) first. `vocab_source` names a fixed vocabulary in the error. The stats are `_split_stats`' (tokens, unk, oov = the tokens that were outside `vocab`).
    """
    word_to_id = {w: i for i, w in enumerate(vocab)}
    unk = word_to_id.get(UNK)
    ids, oov, oov_words = [], 0, set()
    for lineno, line in enumerate(lines, 1):
        for word in tokenize_line(line):
            i = word_to_id.get(word)
            if i is None:
                if unk is None:
                    if not grow_unk:
                        raise _unseen_word(word, source, lineno, vocab_source)
                    unk = word_to_id[UNK] = len(vocab)
                    vocab.append(UNK)
                i = unk
                if word != UNK:  # a literal <unk> (of text mapped before) is no out-of-vocabulary word
                    oov += 1
                    oov_words.add(word)
            ids.append(i)
    ids = np.asarray(ids, np.int32)
    n_unk = int((ids == unk).sum()) if unk is not None else 0
    return ids, _split_stats(len(ids), n_unk, oov, len(oov_words))


def describe_stats(stats: Dict[str, Any]) -> str:
    """One log line of `Corpus.stats`: the vocabulary and how many tokens of each split became <unk>."""
    cap = f"max_vocab {stats['max_vocab']}" if stats.get("max_vocab") else "no max_vocab"
    parts = [f"vocabulary {stats['vocab_size']} words ({cap}, from {stats.get('vocab_source', 'train.txt')})"]
    for split in SPLITS:
        s = stats[split]
        parts.append(f"{split}: {s['oov']} of {s['tokens']} tokens out of the vocabulary -> {UNK} "
                     f"({100 * s['oov_rate']:.2f}%, {s['oov_words']} distinct words), {100 * s['unk_rate']:.2f}% "
                     f"{UNK} in all")
    return "; ".join(parts)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A word-level corpus: vocabulary and int32 id streams of the three splits.

    `stats`: ``{"vocab_size", "max_vocab", "strict_vocab", "vocab_source", "train_words",
    "train" | "valid" | "test": {"tokens", "unk", "unk_rate", "oov", "oov_rate", "oov_words"}}``: `unk` counts the
    tokens that are `<unk>` after the mapping (the corpus's own `<unk>` too), `oov` those that were outside the
    vocabulary and became `<unk>` (`oov_words` distinct words), rates are fractions of `tokens`; `train_words`: the
    distinct tokens of train.txt (None for a fixed vocabulary).
    """

    vocab: list
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    stats: Dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def from_texts(cls, texts: Mapping[str, str], *, max_vocab: int = 0, strict: bool = False,
                   vocab: Optional[Sequence[str]] = None, sources: Optional[Mapping[str, str]] = None,
                   vocab_source: str = "") -> "Corpus":
        """The corpus of the split texts ``{'train': ..., 'valid': ..., 'test': ...}`` (see the module docstring).

        `sources` name the splits in errors (default: "<split> text"); `vocab` fixes the vocabulary (`vocab_source`
        names it in errors), instead of building it from train with `max_vocab` / `strict`.
        """
        missing = [s for s in SPLITS if s not in texts]
        if missing:
            raise ValueError(f"Corpus texts need the splits {', '.join(SPLITS)}; missing: {', '.join(missing)}.")
        check_max_vocab(max_vocab)
        if vocab is not None and max_vocab:
            raise ValueError(f"A fixed vocabulary cannot be capped: pass vocab or max_vocab, not both. "
                             f"Received: max_vocab={max_vocab}")
        sources = {s: (sources or {}).get(s, f"{s} text") for s in SPLITS}
        lines = {}
        for split in SPLITS:
            if not texts[split].strip():
                why = "the vocabulary is built from it" if split == "train" else "the model is scored on it"
                raise ValueError(f"Corpus file {sources[split]!r} is empty (or only whitespace) but {why}; put at "
                                 f"least one sentence in it; {_LAYOUT}.")
            lines[split] = texts[split].splitlines()
        if vocab is not None:
            vocab, train_words = list(vocab), None
        else:
            vocab = _vocab_order(lines["train"], max_vocab)
            train_words = len(set(w for line in lines["train"] for w in tokenize_line(line)))
        fixed = (vocab_source or "given") if train_words is None else ""  # names a fixed vocabulary in errors
        encoded, stats = {}, {}
        for split in SPLITS:
            encoded[split], stats[split] = encode_lines(
                lines[split], vocab, sources[split], grow_unk=not strict and train_words is not None, vocab_source=fixed)
        record = {"vocab_size": len(vocab), "max_vocab": int(max_vocab), "strict_vocab": bool(strict),
                  "vocab_source": fixed or "train.txt",
                  "train_words": train_words, **stats}
        return cls(vocab, encoded["train"], encoded["valid"], encoded["test"], record)

    @classmethod
    def from_directory(cls, path: str, *, max_vocab: int = 0, strict: bool = False,
                       vocab: Optional[Sequence[str]] = None, vocab_source: str = "") -> "Corpus":
        """The corpus of `path`/train.txt, valid.txt, test.txt (see `from_texts`)."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Corpus directory {path!r} does not exist; {_LAYOUT}.")
        files = {s: os.path.join(path, f) for s, f in zip(SPLITS, SPLIT_FILES)}
        for file in files.values():
            if not os.path.isfile(file):
                raise FileNotFoundError(f"Missing corpus file {file!r}; {_LAYOUT}.")
        texts = {s: read_text_file(f) for s, f in files.items()}
        return cls.from_texts(texts, max_vocab=max_vocab, strict=strict, vocab=vocab, sources=files,
                              vocab_source=vocab_source)

    @property
    def maps_words(self) -> bool:
        """Whether any token became `<unk>` (the corpus files differ from what the ids spell)."""
        return any(self.stats.get(s, {}).get("oov", 0) for s in SPLITS)

    def texts(self) -> Dict[str, str]:
        """The three splits as text (one line per `<eos>`), with the `<unk>` mapping applied."""
        out = {}
        eos = self.vocab.index(EOS)
        for split in SPLITS:
            ids = getattr(self, split)
            cuts = np.flatnonzero(ids == eos)
            lines, start = [], 0
            for cut in cuts:
                lines.append(" ".join(self.vocab[i] for i in ids[start:cut]) + "\n")
                start = cut + 1
            out[split] = "".join(lines)
        return out

    def write_directory(self, directory: str) -> str:
        """Writes train/valid/test.txt as mapped (every word a vocabulary word); reading it back with
        `from_directory` gives the same vocabulary and ids. Returns `directory`."""
        os.makedirs(directory, exist_ok=True)
        for split, text in self.texts().items():
            atomic_write_text(os.path.join(directory, f"{split}.txt"), text)
        return os.fspath(directory)

    def save_vocab(self, path: str) -> None:
        save_vocab(self.vocab, path)


# --------------------------------------------------------------------------
# Smoke corpus
# --------------------------------------------------------------------------

_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+(?:\.[0-9]+)?")


@functools.lru_cache(maxsize=4)
def _smoke_texts(max_train_tokens: int, min_count: int):
    from pydoc_data.topics import topics

    sentences = []
    for key in sorted(topics):
        for line in topics[key].splitlines():
            words = ["N" if w[0].isdigit() else w for w in _WORD_RE.findall(line.lower())]
            if len(words) >= 3:
                sentences.append(words)
    splits = {"train": [], "valid": [], "test": []}
    n_train = 0
    for i, words in enumerate(sentences):
        if n_train >= max_train_tokens:
            break
        name = {8: "valid", 9: "test"}.get(i % 10, "train")
        splits[name].append(words)
        if name == "train":
            n_train += len(words) + 1
    counts = {}
    for words in splits["train"]:
        for w in words:
            counts[w] = counts.get(w, 0) + 1
    return tuple((name, "".join(
        " " + " ".join(w if counts.get(w, 0) >= min_count else UNK for w in words) + " \n"  # PTB's spaces
        for words in rows)) for name, rows in splits.items())


def smoke_texts(max_train_tokens: int = 100_000, min_count: int = 2) -> Dict[str, str]:
    """The Python reference manual (`pydoc_data.topics`) as a PTB-like corpus: ``{'train', 'valid', 'test'}`` texts.

    Lines become sentences (lines with fewer than 3 words are dropped), split deterministically 8/1/1 by line index
    into train/valid/test; words seen fewer than `min_count` times in train become `<unk>` everywhere, so valid/test
    never hold a word missing from the training vocabulary. Built in memory (no file is written).
    """
    return dict(_smoke_texts(int(max_train_tokens), int(min_count)))


def smoke_corpus(directory: str, max_train_tokens: int = 100_000,
                 min_count: int = 2) -> str:
    """Writes `smoke_texts` as `directory`/train.txt, valid.txt, test.txt. Returns `directory`."""
    os.makedirs(directory, exist_ok=True)
    for split, text in smoke_texts(max_train_tokens, min_count).items():
        atomic_write_text(os.path.join(directory, f"{split}.txt"), text)
    return os.fspath(directory)


SMOKE = "smoke"  # the name of the offline corpus (a --dataset / --data_dir value)


def load_corpus(data_dir: Optional[str], max_vocab: int = 0, strict: bool = False,
                vocab: Optional[Sequence[str]] = None, vocab_source: str = "") -> Corpus:
    """The corpus in `data_dir` (train/valid/test.txt); for ``'smoke'`` the offline corpus, built in memory.

    `max_vocab`, `strict`, `vocab`: see `Corpus.from_texts`.
    """
    if data_dir == SMOKE:
        return Corpus.from_texts(smoke_texts(), max_vocab=max_vocab, strict=strict, vocab=vocab,
                                 sources={s: f"{SMOKE} corpus {s}.txt" for s in SPLITS}, vocab_source=vocab_source)
    if not data_dir:
        raise ValueError(f"A corpus directory is required: a directory with train.txt, valid.txt and test.txt "
                         f"(PTB / WikiText-2 layout), or '{SMOKE}' for the offline corpus. Received: data_dir={data_dir!r}")
    return Corpus.from_directory(data_dir, max_vocab=max_vocab, strict=strict, vocab=vocab, vocab_source=vocab_source)



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
