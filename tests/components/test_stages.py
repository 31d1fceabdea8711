"""The stage executors, chained with tiny settings on the offline digits data and the offline text corpus
(about a minute in all)."""

import json
import os

import numpy as np
import pytest

from components import artifacts, derive, evaluate, ingest, search, select, transfer
from darts_tf import genotypes as gt

TINY_SEARCH = dict(epochs=1, batch_size=32, layers=3, init_channels=4, nodes=2,
                   primitives="none,max_pool_3x3,skip_connect,sep_conv_3x3")
TINY_TRAIN = dict(layers=3, init_channels=4, epochs=1, batch_size=32, cutout_length=0, drop_path_prob=0.0,
                  auxiliary=False, verbose=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("stages")


@pytest.fixture(scope="module")
def dataset(root):
    return ingest.run(str(root / "ingest" / "dataset"), {"kind": "images", "dataset": "digits"})


@pytest.fixture(scope="module")
def search_run(root, dataset):
    return search.run(dataset.path, str(root / "search" / "search_run"), kind="cnn", seed=1, config=TINY_SEARCH,
                      verbose=0)


@pytest.fixture(scope="module")
def derived(root, search_run):
    return derive.run(search_run.path, str(root / "derive" / "genotype"), str(root / "derive" / "pictures"))


def test_ingest_records_digits_splits(dataset):
    assert dataset.kind == "images" and dataset.name == "digits"
    assert dataset.metadata["splits"]["train"]["size"] + dataset.metadata["splits"]["test"]["size"] == 1797
    artifacts.read_dataset(dataset.path, "test", verify_hashes=True)


def test_ingest_rejects_unknown_settings(tmp_path):
    with pytest.raises(ValueError, match=r"\[stage 'ingest'\] unknown IngestConfig setting\(s\) nmae. Known: kind"):
        ingest.run(str(tmp_path / "d"), {"nmae": "digits"})


def test_search_reads_the_ingested_data_and_writes_alphas_genotype_logs(search_run, dataset):
    assert search_run.kind == "cnn"
    alphas = search_run.alphas()
    assert alphas["alpha_normal"].shape == (5, 4)  # 2 + 3 edges for 2 nodes, 4 primitives
    lineage = search_run.lineage
    assert lineage["seed"] == 1 and lineage["dataset_hash"] == dataset.dataset_hash
    assert lineage["flags"]["init_channels"] == 4
    assert any(f.startswith("events.") for _, _, files in os.walk(search_run.path) for f in files)


def test_derive_writes_a_valid_genotype_with_lineage_and_pictures(derived, search_run):
    genotype, pictures = derived
    assert genotype.genotype == gt.load_genotype_file(search_run.genotype_path)
    assert genotype.lineage["search_uri"] == search_run.path and genotype.lineage["stage"] == "derive"
    for picture in pictures.paths("png"):
        with open(picture, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(pictures.paths("pdf")) == 2


def test_derive_refuses_alphas_that_disagree_with_the_published_genotype(tmp_path, search_run):
    import shutil

    copy = str(tmp_path / "search_run")
    shutil.copytree(search_run.path, copy)
    alphas = search_run.alphas()
    alphas["alpha_normal"] = -alphas["alpha_normal"] * 1e3
    np.savez(os.path.join(copy, "alphas.npz"), **alphas)
    with pytest.raises(artifacts.ArtifactError, match=r"\[stage 'derive'\].*not what its alphas encode"):
        derive.run(copy, str(tmp_path / "g"), str(tmp_path / "p"))
    assert not os.path.exists(tmp_path / "g")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_derive_refuses_non_finite_alphas(tmp_path, search_run, bad):
    import shutil

    copy = str(tmp_path / "search_run")
    shutil.copytree(search_run.path, copy)
    alphas = search_run.alphas()
    alphas["alpha_reduce"][1, 2] = bad
    np.savez(os.path.join(copy, "alphas.npz"), **alphas)
    with pytest.raises(artifacts.ArtifactError,
                       match=r"\[stage 'derive'\].*its alphas are not finite: alpha_reduce.*The search diverged"):
        derive.run(copy, str(tmp_path / "g"), str(tmp_path / "p"))
    assert not os.path.exists(tmp_path / "g")


def test_select_picks_the_best_on_validation_and_records_the_table(root, dataset, derived):
    published = gt.CNN_GENOTYPES["DARTS_V2"]
    other = artifacts.write_genotype(str(root / "other" / "genotype"), published,
                                     {**derived[0].lineage, "seed": 99}, "derive")
    logged = {}
    best, table = select.run(dataset.path, [derived[0].path, other.path], str(root / "select" / "best"),
                             str(root / "select" / "table"), "cnn", {**TINY_TRAIN, "validation_portion": 0.2},
                             log_metric=logged.__setitem__)
    accs = [row["validation_accuracy"] for row in table["candidates"]]
    assert table["best"] == int(np.argmax(accs)) and len(accs) == 2
    assert best.lineage["selected_from"] == [derived[0].path, other.path]
    assert best.genotype == [derived[0], other][table["best"]].genotype
    assert "best_validation_accuracy" in logged
    assert artifacts.read_metrics(str(root / "select" / "table"), "test") == json.loads(json.dumps(table))


def test_select_refuses_the_test_set(root, dataset, derived):
    with pytest.raises(ValueError, match="validation_portion must be in"):
        select.run(dataset.path, [derived[0].path], str(root / "x" / "best"), str(root / "x" / "table"), "cnn",
                   {**TINY_TRAIN, "validation_portion": 0.0})
    assert not os.path.exists(root / "x" / "best")


def test_select_stops_on_a_corrupt_candidate_before_training(tmp_path, dataset, derived):
    import shutil

    bad = str(tmp_path / "bad")
    shutil.copytree(derived[0].path, bad)
    with open(os.path.join(bad, "genotype.json"), "w") as f:
        f.write('{"kind": "cnn", "normal": [')
    with pytest.raises(artifacts.ArtifactError, match=rf"\[stage 'select'\] artifact '{bad}'"):
        select.run(dataset.path, [derived[0].path, bad], str(tmp_path / "best"), str(tmp_path / "table"), "cnn",
                   {**TINY_TRAIN, "validation_portion": 0.2})
    assert not os.path.exists(tmp_path / "best") and not os.path.exists(tmp_path / "table")


def test_evaluate_reports_test_metrics_and_a_loadable_saved_model(root, dataset, derived):
    from darts_tf.cnn.export import load_predictor

    model, metrics = evaluate.run(dataset.path, derived[0].path, str(root / "evaluate" / "model"),
                                  str(root / "evaluate" / "metrics"), "cnn", {**TINY_TRAIN, "epochs": 2})
    assert metrics["eval_split"] == "test" and 0.0 <= metrics["test_top1_accuracy"] <= 1.0
    assert metrics["lineage"]["seed"] == 1
    predictor = load_predictor(model.saved_model_dir)
    probs = predictor.predict(dataset.image_data().test_images[:3])
    assert probs.shape == (3, 10)
    assert gt.load_genotype_file(model.genotype_path) == derived[0].genotype


def test_transfer_trains_the_cell_with_the_imagenet_recipe(root, derived):
    model, metrics = transfer.run(derived[0].path, str(root / "transfer" / "model"), str(root / "transfer" / "m"),
                                  "cnn", {**{k: v for k, v in TINY_TRAIN.items() if k != "cutout_length"},
                                          "dataset": "digits", "network": "cifar", "export": True})
    assert metrics["lineage"]["transfer_dataset"] == "digits" and model.saved_model_dir


def test_a_stage_refuses_an_unknown_kind(tmp_path, dataset):
    with pytest.raises(ValueError, match=r"\[stage 'search'\] Unknown task kind 'gan'\. Known kinds: cnn, rnn\."):
        search.run(dataset.path, str(tmp_path / "s"), kind="gan")
    assert not os.path.exists(tmp_path / "s")


def test_a_stage_refuses_a_dataset_of_the_other_kind(tmp_path, dataset):
    with pytest.raises(artifacts.ArtifactError,
                       match=rf"\[stage 'search'\] artifact '{dataset.path}': holds images data; the rnn task reads text"):
        search.run(dataset.path, str(tmp_path / "s"), kind="rnn", config=RNN_SEARCH)
    assert not os.path.exists(tmp_path / "s")


def test_the_cnn_transfer_takes_no_dataset_artifact(tmp_path, dataset, derived):
    with pytest.raises(ValueError, match=r"\[stage 'transfer'\] the cnn transfer reads the dataset its settings name"):
        transfer.run(derived[0].path, str(tmp_path / "m"), str(tmp_path / "x"), "cnn", dataset=dataset.path)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------- RNN

RNN_SEARCH = dict(units=8, nodes=2, batch_size=8, bptt=10, max_seq_len_delta=2, epochs=1)
RNN_TRAIN = dict(units=8, batch_size=8, eval_batch_size=5, test_batch_size=5, bptt=10, max_seq_len_delta=2, epochs=1)


@pytest.fixture(scope="module")
def rnn_dataset(root):
    return ingest.run(str(root / "rnn" / "d"), {"kind": "text", "dataset": "smoke", "max_train_tokens": 3000})


@pytest.fixture(scope="module")
def rnn_derived(root, rnn_dataset):
    run = search.run(rnn_dataset.path, str(root / "rnn" / "s"), kind="rnn", seed=2, verbose=0, config=RNN_SEARCH)
    return derive.run(run.path, str(root / "rnn" / "g"), str(root / "rnn" / "p"))


def test_rnn_search_and_derive_on_the_smoke_corpus(rnn_derived):
    genotype, pictures = rnn_derived
    assert genotype.genotype.kind == "rnn" and genotype.genotype.steps == 2
    assert [os.path.basename(p) for p in pictures.paths("png")] == ["recurrent.png"]


def test_rnn_select_evaluate_and_transfer_on_the_smoke_corpus(root, rnn_dataset, rnn_derived):
    candidate = rnn_derived[0]
    best, table = select.run(rnn_dataset.path, [candidate.path], str(root / "rnn" / "best"),
                             str(root / "rnn" / "table"), "rnn", {"preset": "smoke", "overrides": RNN_TRAIN, "epochs": 1})
    assert table["metric"] == "validation_perplexity" and table["higher_is_better"] is False
    assert best.genotype == candidate.genotype
    settings = {"preset": "smoke", "overrides": RNN_TRAIN}
    model, metrics = evaluate.run(rnn_dataset.path, best.path, str(root / "rnn" / "model"), str(root / "rnn" / "m"),
                                  "rnn", settings)
    assert 1 < metrics["test_perplexity"] < metrics["vocab_size"] and model.vocab_path
    assert model.saved_model_dir and metrics["saved_model_check"]["perplexity"] > 1  # the exported model, run
    with pytest.raises(ValueError, match=r"\[stage 'transfer'\] the rnn transfer trains on another ingested corpus"):
        transfer.run(best.path, str(root / "rnn" / "tm"), str(root / "rnn" / "tx"), "rnn", settings)
    assert not os.path.exists(root / "rnn" / "tm")
    _, moved = transfer.run(best.path, str(root / "rnn" / "tm"), str(root / "rnn" / "tx"), "rnn", settings,
                            dataset=rnn_dataset.path)
    assert moved["lineage"]["stage"] == "transfer" and moved["lineage"]["transfer_dataset"] == "smoke"


def test_evaluate_refuses_a_genotype_of_the_other_kind(tmp_path, dataset, rnn_derived):
    with pytest.raises(artifacts.ArtifactError, match=r"\[stage 'evaluate'\].*holds a rnn genotype; this is a cnn"):
        evaluate.run(dataset.path, rnn_derived[0].path, str(tmp_path / "m"), str(tmp_path / "x"), "cnn", TINY_TRAIN)
    assert os.listdir(tmp_path) == []


def _text_corpus(directory, train, valid, test):
    directory.mkdir()
    for name, content in (("train.txt", train), ("valid.txt", valid), ("test.txt", test)):
        (directory / name).write_text(content)
    return str(directory)


def test_text_ingest_with_max_vocab_publishes_the_mapped_corpus_and_its_record(tmp_path):
    from darts_tf import tasks

    source = _text_corpus(tmp_path / "src", " a b a c\n d a b e\n", " a f b\n", " e a\n")
    data = ingest.run(str(tmp_path / "d"), {"kind": "text", "dataset": "mine", "data_dir": source, "max_vocab": 4})
    # a 3, b 2, <eos> 2: with <unk>, the 4 places; c, d, e, f become <unk> in every split
    assert open(os.path.join(data.corpus_dir, "train.txt")).read() == "a b a <unk>\n<unk> a b <unk>\n"
    assert open(os.path.join(data.corpus_dir, "valid.txt")).read() == "a <unk> b\n"
    record = data.metadata["corpus"]
    assert record["max_vocab"] == 4 and record["vocab_size"] == 4 and record["valid"]["oov"] == 1
    assert data.metadata["splits"]["valid"]["size"] == 4
    corpus = tasks.get_task("rnn").load_data(data)  # what later stages read: a closed vocabulary
    assert corpus.vocab == ["a", "b", "<unk>", "<eos>"] and not corpus.maps_words


def test_text_ingest_copies_a_corpus_that_maps_nothing_and_maps_unseen_words_by_default(tmp_path):
    closed = _text_corpus(tmp_path / "closed", " a b <unk>\n", " b a\n", " <unk> a\n")  # PTB's form, spaces kept
    data = ingest.run(str(tmp_path / "d1"), {"kind": "text", "dataset": "closed", "data_dir": closed})
    for name in ("train.txt", "valid.txt", "test.txt"):
        assert open(os.path.join(data.corpus_dir, name)).read() == open(os.path.join(closed, name)).read()
    assert data.metadata["corpus"]["test"] == {"tokens": 3, "unk": 1, "unk_rate": 1 / 3, "oov": 0, "oov_rate": 0.0,
                                               "oov_words": 0}
    unseen = _text_corpus(tmp_path / "unseen", "a b\n", "a zebra\n", "b a\n")
    mapped = ingest.run(str(tmp_path / "d2"), {"kind": "text", "dataset": "unseen", "data_dir": unseen})
    assert open(os.path.join(mapped.corpus_dir, "valid.txt")).read() == "a <unk>\n"
    assert mapped.metadata["corpus"]["vocab_size"] == 4 and mapped.metadata["corpus"]["valid"]["oov_words"] == 1


@pytest.mark.parametrize("settings, message", [
    ({"strict_vocab": True}, r"^Word 'zebra' \(.*valid.txt, line 1\) is not in the training vocabulary and "
                             r"--strict_vocab refuses it"),
    ({"max_vocab": 1}, r"^--max_vocab must be 0 \(no cap\) or >= 2"),
])
def test_text_ingest_refuses_before_publishing(tmp_path, settings, message):
    source = _text_corpus(tmp_path / "src", "a b\n", "a zebra\n", "b a\n")
    with pytest.raises(ValueError, match=message):
        ingest.run(str(tmp_path / "d"), {"kind": "text", "dataset": "mine", "data_dir": source, **settings})
    assert not os.path.exists(tmp_path / "d")


def test_text_ingest_refuses_a_file_that_is_not_utf8(tmp_path):
    source = _text_corpus(tmp_path / "src", "a b\n", "a b\n", "b a\n")
    (tmp_path / "src" / "test.txt").write_bytes(b"b \xe9\n")
    with pytest.raises(ValueError, match=r"test\.txt' is not UTF-8 text: byte 0xe9 at byte offset 2 \(line 1\)"):
        ingest.run(str(tmp_path / "d"), {"kind": "text", "dataset": "mine", "data_dir": source})
    assert not os.path.exists(tmp_path / "d")
