"""Tests for darts_tf.data.text: corpus, batchify, BPTT windows, datasets."""

import os

import numpy as np
import pytest

from darts_tf.data import text

TRAIN = "the cat sat\nthe dog <unk> ran\n\na cat\n"
VALID = "the bird sat\n"
TEST = "dog cat\n"


def write_corpus(path, train=TRAIN, valid=VALID, test=TEST):
    for name, content in (("train.txt", train), ("valid.txt", valid), ("test.txt", test)):
        if content is not None:
            (path / name).write_text(content, encoding="utf-8")
    return path


def test_corpus_vocab_in_first_appearance_order(tmp_path):
    c = text.Corpus.from_directory(write_corpus(tmp_path))
    assert c.vocab == ["the", "cat", "sat", "<eos>", "dog", "<unk>", "ran", "a"]
    words = [c.vocab[i] for i in c.train]
    assert words == ("the cat sat <eos> the dog <unk> ran <eos> <eos> "
                     "a cat <eos>").split()
    assert c.train.dtype == np.int32


def test_corpus_eos_per_line_and_unk_mapping(tmp_path):
    c = text.Corpus.from_directory(write_corpus(tmp_path))
    eos = c.vocab.index("<eos>")
    assert (c.train == eos).sum() == 4  # includes the empty line
    assert [c.vocab[i] for i in c.valid] == ["the", "<unk>", "sat", "<eos>"]
    assert [c.vocab[i] for i in c.test] == ["dog", "cat", "<eos>"]


def test_strict_vocab_refuses_an_unseen_word_without_unk(tmp_path):
    write_corpus(tmp_path, train="the cat\n")
    with pytest.raises(ValueError, match=r"^Word 'bird' \(.*valid.txt, line 1\) is not in the training vocabulary and "
                                         r"--strict_vocab refuses it \(the vocabulary has no '<unk>' token\)\. Pass "
                                         r"--nostrict_vocab to map unseen words to <unk> \(the rate is reported\), or "
                                         r"--max_vocab=N to cap the vocabulary"):
        text.Corpus.from_directory(tmp_path, strict=True)
    capped = text.Corpus.from_directory(tmp_path, strict=True, max_vocab=10)  # a cap brings <unk>
    assert capped.vocab == ["the", "cat", "<eos>", "<unk>"]


def test_unseen_words_become_unk_by_default_and_the_rate_is_recorded(tmp_path):
    write_corpus(tmp_path, train="the cat\n", valid="the bird sat\n", test="dog cat\n")
    c = text.Corpus.from_directory(tmp_path)
    assert c.vocab == ["the", "cat", "<eos>", "<unk>"]  # <unk> appended after every train word: train ids unchanged
    assert [c.vocab[i] for i in c.valid] == ["the", "<unk>", "<unk>", "<eos>"]
    assert [c.vocab[i] for i in c.test] == ["<unk>", "cat", "<eos>"]
    assert c.stats == {
        "vocab_size": 4, "max_vocab": 0, "strict_vocab": False, "vocab_source": "train.txt", "train_words": 3,
        "train": {"tokens": 3, "unk": 0, "unk_rate": 0.0, "oov": 0, "oov_rate": 0.0, "oov_words": 0},
        "valid": {"tokens": 4, "unk": 2, "unk_rate": 0.5, "oov": 2, "oov_rate": 0.5, "oov_words": 2},
        "test": {"tokens": 3, "unk": 1, "unk_rate": 1 / 3, "oov": 1, "oov_rate": 1 / 3, "oov_words": 1}}
    assert text.describe_stats(c.stats).startswith(
        "vocabulary 4 words (no max_vocab, from train.txt); train: 0 of 3 tokens out of the vocabulary -> <unk> "
        "(0.00%, 0 distinct words), 0.00% <unk> in all; valid: 2 of 4 tokens out of the vocabulary -> <unk> (50.00%")


def test_a_closed_corpus_with_unk_keeps_its_vocabulary_and_ids_in_every_mode(tmp_path):
    """PTB's case: <unk> in train.txt, no unseen word; neither mode nor a cap at its size changes an id."""
    write_corpus(tmp_path, valid="the dog sat\n", test="a cat <unk>\n")
    default = text.Corpus.from_directory(tmp_path)
    for other in (text.Corpus.from_directory(tmp_path, strict=True),
                  text.Corpus.from_directory(tmp_path, max_vocab=len(default.vocab))):
        assert other.vocab == default.vocab == ["the", "cat", "sat", "<eos>", "dog", "<unk>", "ran", "a"]
        for split in ("train", "valid", "test"):
            np.testing.assert_array_equal(getattr(other, split), getattr(default, split))
    assert not default.maps_words and default.stats["test"]["unk"] == 1 and default.stats["test"]["oov"] == 0


def test_max_vocab_keeps_the_most_frequent_words_with_eos_and_unk(tmp_path):
    write_corpus(tmp_path, train="c b a b\nd a b x y\n", valid="a z c\n", test="b y\n")
    c = text.Corpus.from_directory(tmp_path, max_vocab=4)
    # counts: b 3, a 2, <eos> 2, c/d/x/y 1; <eos> and <unk> take 2 of the 4 places, b and a the others
    assert c.vocab == ["<unk>", "b", "a", "<eos>"]  # order of first appearance in the mapped train stream
    assert [c.vocab[i] for i in c.train] == "<unk> b a b <eos> <unk> a b <unk> <unk> <eos>".split()
    assert [c.vocab[i] for i in c.valid] == "a <unk> <unk> <eos>".split()
    assert c.stats["train"]["oov"] == 4 and c.stats["train"]["oov_words"] == 4
    assert c.stats["valid"]["oov"] == 2 and c.stats["test"]["oov"] == 1 and c.stats["max_vocab"] == 4
    ties = text.Corpus.from_directory(tmp_path, max_vocab=5)  # one more place: c, d, x, y tie; c came first
    assert ties.vocab == ["c", "b", "a", "<eos>", "<unk>"]
    with pytest.raises(ValueError, match=r"--max_vocab must be 0 \(no cap\) or >= 2 \(<eos> and <unk> always count "
                                         r"toward it\)\. Received: max_vocab=1"):
        text.Corpus.from_directory(tmp_path, max_vocab=1)


def test_the_mapped_corpus_written_out_reads_back_the_same(tmp_path):
    write_corpus(tmp_path, train="c b a b\nd a b x y\n\n", valid="a z c\n", test="b y\n")
    for kwargs in ({"max_vocab": 4}, {}):
        c = text.Corpus.from_directory(tmp_path, **kwargs)
        again = text.Corpus.from_directory(c.write_directory(tmp_path / f"mapped{len(kwargs)}"))
        assert again.vocab == c.vocab and not again.maps_words
        for split in ("train", "valid", "test"):
            np.testing.assert_array_equal(getattr(again, split), getattr(c, split))


def test_a_fixed_vocabulary_maps_other_words_to_its_unk(tmp_path):
    write_corpus(tmp_path, train="x y\n", valid="the bird\n", test="cat\n")
    c = text.Corpus.from_directory(tmp_path, vocab=["the", "cat", "<eos>", "<unk>"], vocab_source="run/vocab.txt")
    assert [c.vocab[i] for i in c.valid] == ["the", "<unk>", "<eos>"] and c.stats["vocab_source"] == "run/vocab.txt"
    assert c.stats["valid"]["oov"] == 1 and c.stats["train_words"] is None
    with pytest.raises(ValueError, match=r"^Word 'x' \(.*train.txt, line 1\) is not in the vocabulary run/vocab.txt and "
                                         r"it has no '<unk>' token to map it to; evaluate on text that uses only its "
                                         r"words, or train the model with --max_vocab"):
        text.Corpus.from_directory(tmp_path, vocab=["the", "<eos>"], vocab_source="run/vocab.txt")


@pytest.mark.parametrize("content", ["", "  \n\t\n \n"], ids=["empty", "whitespace"])
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_an_empty_split_file_is_refused(tmp_path, split, content):
    write_corpus(tmp_path, **{split: content})
    why = "the vocabulary is built from it" if split == "train" else "the model is scored on it"
    with pytest.raises(ValueError, match=rf"^Corpus file '.*/{split}\.txt' is empty \(or only whitespace\) but {why}; "
                                         r"put at least one sentence in it; expected layout: "):
        text.Corpus.from_directory(tmp_path)


def test_a_file_that_is_not_utf8_names_the_byte_offset(tmp_path):
    write_corpus(tmp_path)
    (tmp_path / "valid.txt").write_bytes("the bird\nsat on a caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"^Corpus file '.*/valid\.txt' is not UTF-8 text: byte 0xe9 at byte offset "
                                         r"21 \(line 2\) cannot be decoded; convert the file to UTF-8 "
                                         r"\(e\.g\. iconv -f latin1 -t utf-8\)\.$"):
        text.Corpus.from_directory(tmp_path)
    (tmp_path / "valid.txt").write_bytes(b"\xef\xbb\xbfthe bird\n")  # a UTF-8 byte-order mark is no word
    assert [text.Corpus.from_directory(tmp_path).vocab[i] for i in text.Corpus.from_directory(tmp_path).valid][0] == "the"


def test_corpus_missing_file_names_it_and_the_layout(tmp_path):
    write_corpus(tmp_path, valid=None)
    with pytest.raises(FileNotFoundError,
                       match=r"Missing corpus file .*valid\.txt.*expected layout: "
                             r"DIR/train\.txt, DIR/valid\.txt, DIR/test\.txt"):
        text.Corpus.from_directory(tmp_path)
    with pytest.raises(FileNotFoundError, match="Corpus directory .* does not exist"):
        text.Corpus.from_directory(tmp_path / "nope")


def test_vocab_round_trip_is_atomic(tmp_path):
    c = text.Corpus.from_directory(write_corpus(tmp_path))
    path = tmp_path / "out" / "vocab.txt"
    c.save_vocab(path)
    assert text.load_vocab(path) == c.vocab
    assert sorted(os.listdir(tmp_path / "out")) == ["vocab.txt"]  # no temp left
    with pytest.raises(FileNotFoundError, match="Vocabulary file .* does not exist"):
        text.load_vocab(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="contains whitespace"):
        text.save_vocab(["a b"], tmp_path / "v.txt")


def test_batchify_matches_numpy_reference():
    ids = np.arange(103, dtype=np.int32)
    b = text.batchify(ids, 4)
    # Reference: data[:nbatch*bsz].view(bsz, -1).t()  ->  transposed here.
    ref = ids[: (103 // 4) * 4].reshape(4, -1)
    np.testing.assert_array_equal(b, ref)
    assert b.shape == (4, 25)
    np.testing.assert_array_equal(b[1], np.arange(25, 50))


def test_batchify_too_short():
    with pytest.raises(ValueError, match="too few for batch_size=8.*lower batch_size"):
        text.batchify(np.arange(10), 8)


def test_fixed_windows_cover_data_once_in_order():
    windows = text.bptt_windows(100, 7, variable_length=False)
    starts = [s for s, _ in windows]
    assert starts == sorted(starts) and starts[0] == 0
    covered = np.concatenate([np.arange(s, s + l) for s, l in windows])
    np.testing.assert_array_equal(covered, np.arange(99))
    assert all(l == 7 for _, l in windows[:-1])


def test_variable_windows_mean_and_determinism():
    a = text.bptt_windows(20000, 35, seed=3, epoch=1)
    assert a == text.bptt_windows(20000, 35, seed=3, epoch=1)
    assert a != text.bptt_windows(20000, 35, seed=3, epoch=2)
    assert a != text.bptt_windows(20000, 35, seed=4, epoch=1)
    lengths = np.array([l for _, l in a])
    assert abs(lengths.mean() - 35) < 2.5  # 0.95*35 + 0.05*17.5 ~ 34.1
    assert lengths.max() <= 55 and lengths[:-1].min() >= 5
    covered = np.concatenate([np.arange(s, s + l) for s, l in a])
    np.testing.assert_array_equal(covered, np.arange(19999))


def test_lm_dataset_shapes_mask_and_content():
    ids = np.arange(2 * 50, dtype=np.int32)
    b = text.batchify(ids, 2)
    ds, steps = text.lm_dataset(b, 8, variable_length=False, max_seq_len_delta=4)
    batches = list(ds.as_numpy_iterator())
    assert steps == len(batches) == 7  # 49 target positions / 8
    first, last = batches[0], batches[-1]
    assert first["inputs"].shape == (2, 12) and first["mask"].dtype == np.float32
    np.testing.assert_array_equal(first["inputs"][:, :8], b[:, 0:8])
    np.testing.assert_array_equal(first["targets"][:, :8], b[:, 1:9])
    np.testing.assert_array_equal(first["mask"], np.repeat([[1.0] * 8 + [0.0] * 4], 2, 0))
    assert first["start"] == 0 and batches[1]["start"] == 8
    assert last["seq_len"] == 1  # 49 = 6*8 + 1
    np.testing.assert_array_equal(last["targets"][:, 0], b[:, 49])
    assert (last["inputs"][:, 1:] == 0).all() and last["mask"].sum() == 2


def test_lm_dataset_resumes_identically_and_pads_epochs():
    b = text.batchify(np.arange(4 * 400, dtype=np.int32) % 97, 4)
    full, steps = text.lm_dataset(b, 10, seed=5, epochs=3, min_len=2)
    resumed, steps2 = text.lm_dataset(b, 10, seed=5, initial_epoch=2, epochs=3, min_len=2)
    assert steps == steps2
    full = list(full.as_numpy_iterator())
    resumed = list(resumed.as_numpy_iterator())
    assert len(full) == 3 * steps and len(resumed) == steps
    for x, y in zip(full[2 * steps:], resumed):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    for e in range(3):  # each epoch covers the data exactly once, then pads
        epoch = full[e * steps:(e + 1) * steps]
        assert sum(int(w["seq_len"]) for w in epoch) == 399
        real = [w for w in epoch if w["seq_len"] > 0]
        assert all(w["mask"].sum() == 0 for w in epoch[len(real):])


def test_lm_search_dataset_cycles_validation():
    tr = text.batchify(np.arange(2 * 60, dtype=np.int32), 2)
    va = text.batchify(np.arange(2 * 20, dtype=np.int32) + 1000, 2)
    ds, steps = text.lm_search_dataset(tr, va, 5, variable_length=False,
                                       max_seq_len_delta=0)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == steps == 12
    starts = [int(b["validation"]["start"]) for b in batches]
    assert starts == [(5 * i) % 19 for i in range(12)]
    b = batches[4]  # train start 20 -> validation start 1
    n = int(b["validation"]["seq_len"])
    np.testing.assert_array_equal(b["validation"]["inputs"][:, :n], va[:, 1:1 + n])
    np.testing.assert_array_equal(b["train"]["inputs"], tr[:, 20:25])
    with pytest.raises(ValueError, match="batch sizes differ"):
        text.lm_search_dataset(tr, text.batchify(np.arange(60), 3), 5)


def test_epoch_argument_errors():
    b = text.batchify(np.arange(100), 2)
    with pytest.raises(ValueError, match="initial_epoch must be in"):
        text.lm_dataset(b, 5, initial_epoch=3, epochs=3)
    with pytest.raises(ValueError, match="max_len=10 is shorter"):
        text.lm_dataset(b, 5, max_len=10)


def test_smoke_corpus_is_real_text(tmp_path):
    path = text.smoke_corpus(tmp_path / "smoke")
    c = text.Corpus.from_directory(path)
    assert len(c.vocab) > 500 and len(c.train) > 20_000
    assert len(c.valid) > 2_000 and len(c.test) > 2_000
    assert {"the", "function", "class", "<unk>", "<eos>"} <= set(c.vocab)
    assert text.smoke_corpus(tmp_path / "again") and \
        (tmp_path / "again" / "train.txt").read_text() == \
        (tmp_path / "smoke" / "train.txt").read_text()


def test_the_smoke_corpus_is_built_in_memory(tmp_path, monkeypatch):
    texts = text.smoke_texts()
    text.smoke_corpus(tmp_path / "smoke")
    assert {s: (tmp_path / "smoke" / f"{s}.txt").read_text() for s in ("train", "valid", "test")} == texts
    monkeypatch.chdir(tmp_path / "smoke")
    before = sorted(os.listdir("."))
    c = text.load_corpus(text.SMOKE)
    assert sorted(os.listdir(".")) == before  # nothing written
    on_disk = text.Corpus.from_directory(tmp_path / "smoke")
    assert c.vocab == on_disk.vocab and np.array_equal(c.test, on_disk.test)
    assert text.load_corpus(text.SMOKE, max_vocab=100).vocab_size == 100
    with pytest.raises(ValueError, match="A corpus directory is required"):
        text.load_corpus(None)
