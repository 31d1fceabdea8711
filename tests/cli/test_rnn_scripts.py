"""The RNN scripts: darts-rnn-train -> darts-rnn-test, the SavedModel export, darts-rnn-search, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from darts_tf import genotypes as gt
from darts_tf.cli import rnn_test as test_cli
from darts_tf.cli import rnn_train as train_cli
from darts_tf.rnn.evaluate import load_model
from darts_tf.run_files import RunFiles
from tests.helpers import ENV, run_main_in_process, run_module
from tests.rnn.test_search import write_small_corpus

TINY = ["--preset=smoke", "--units=16", "--epochs=2", "--batch_size=8", "--eval_batch_size=5", "--test_batch_size=3"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rnn_scripts_corpus")
    return write_small_corpus(root / "small", str(root / "full"))


def run_in_process(cli, argv, capsys):
    """The script's main in this process; returns (exit code, stdout, stderr)."""
    cli.define_flags()
    return run_main_in_process(cli.main, argv, capsys)


@pytest.fixture(scope="module")
def trained_run(corpus_dir, tmp_path_factory):
    """darts-rnn-train --export on the small corpus (in process, ~10 s)."""
    out = str(tmp_path_factory.mktemp("rnn_run") / "run")

    class _Capsys:  # module-scoped fixtures cannot use capsys
        @staticmethod
        def readouterr():
            return type("O", (), {"out": "", "err": ""})

    code, _, err = run_in_process(train_cli, [*TINY, f"--data_dir={corpus_dir}", f"--output_dir={out}", "--export",
                                              "--genotype=DARTS_V1"], _Capsys)
    assert code == 0, err
    return out


def test_train_writes_the_run_and_test_reports_the_same_perplexity(trained_run):
    outputs = RunFiles(trained_run)
    for path in (outputs.model, outputs.vocab, outputs.genotype, outputs.metrics, outputs.run_config,
                 outputs.best_weights):
        assert os.path.isfile(path), path
    with open(outputs.metrics) as f:
        metrics = json.load(f)
    assert metrics["epochs_done"] == 2 and len(metrics["val_losses"]) == 2
    assert metrics["valid_ppl"] == pytest.approx(np.exp(metrics["best_val_loss"]), rel=1e-5)
    assert 1 < metrics["test_ppl"] < metrics["vocab_size"]
    assert gt.load_genotype_file(outputs.genotype, "rnn") == gt.RNN_GENOTYPES["DARTS_V1"]
    tags = set()
    for path in tf.io.gfile.glob(os.path.join(outputs.tensorboard, "*", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(f"{os.path.basename(os.path.dirname(path))}/{v.tag}" for v in event.summary.value)
    assert {"train/epoch_loss", "train/epoch_asgd", "validation/epoch_ppl", "validation/epoch_loss"} <= tags, tags

    proc = run_module("darts_tf.cli.rnn_test", f"--model={trained_run}")
    assert "valid perplexity" in proc.stdout
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["valid_ppl"] == pytest.approx(metrics["valid_ppl"], rel=1e-6)
    assert result["test_ppl"] == pytest.approx(metrics["test_ppl"], rel=1e-6)


_RELOAD = """
import json, sys
import numpy as np
from darts_tf.rnn.export import load_predictor
p = load_predictor(sys.argv[1])
tokens = np.load(sys.argv[2])
lp, h = p.log_probs(tokens)
lp2, h2 = p.log_probs(tokens, hidden=h)
np.savez(sys.argv[3], log_probs=lp, hidden=h, log_probs2=lp2, hidden2=h2)
print(json.dumps({"vocab": len(p.vocab), "next": p.next_words(p.vocab[:3], k=2)}))
"""


def test_exported_saved_model_matches_the_keras_model_in_a_fresh_process(trained_run, tmp_path):
    outputs = RunFiles(trained_run)
    model = load_model(trained_run)
    tokens = np.random.default_rng(0).integers(0, model.vocab_size, (3, 7)).astype(np.int32)
    np.save(tmp_path / "tokens.npy", tokens)
    proc = subprocess.run([sys.executable, "-c", _RELOAD, outputs.saved_model, str(tmp_path / "tokens.npy"),
                           str(tmp_path / "out.npz")], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["vocab"] == model.vocab_size and len(info["next"]) == 2

    keras_out = model({"tokens": tokens}, training=False)
    expected = tf.nn.log_softmax(keras_out["logits"], axis=-1).numpy()
    keras_out2 = model({"tokens": tokens, "hidden": keras_out["hidden"]}, training=False)
    with np.load(tmp_path / "out.npz") as served:
        assert served["log_probs"].shape == (3, 7, model.vocab_size)
        np.testing.assert_allclose(served["log_probs"], expected, atol=1e-5)
        np.testing.assert_allclose(served["hidden"], keras_out["hidden"].numpy(), atol=1e-5)
        np.testing.assert_allclose(served["log_probs2"], tf.nn.log_softmax(keras_out2["logits"], -1).numpy(), atol=1e-5)
    with open(os.path.join(outputs.saved_model, "1", "assets", "vocab.txt")) as f:  # version 1, the graph's asset
        assert f.read().splitlines() == open(outputs.vocab).read().splitlines()


@pytest.mark.parametrize("make_args, message", [
    (lambda d, t: ["--preset=nope", f"--data_dir={d}"], "Unknown RNN preset 'nope'. Known presets: ptb, smoke, wikitext2"),
    (lambda d, t: ["--genotype=NASNet", f"--data_dir={d}"], "Unknown RNN genotype name 'NASNet'. Known: DARTS"),
    (lambda d, t: ["--genotype={\"recurrent\": [", f"--data_dir={d}"], "Genotype JSON does not parse"),
    (lambda d, t: [f"--genotype={t}/cnn.json", f"--data_dir={d}"], "Expected a RNN genotype but the genotype has kind 'cnn'"),
    (lambda d, t: [f"--genotype={t}/none.json", f"--data_dir={d}"], "Genotype file .*none.json' does not exist"),
    (lambda d, t: [f"--data_dir={t}/partial"], "Missing corpus file .*partial/valid.txt'"),
    (lambda d, t: ["--preset=ptb"], "data_dir is required"),
])
def test_train_script_errors_tell_the_fix(corpus_dir, tmp_path, capsys, make_args, message):
    gt.save_genotype(gt.CNN_GENOTYPES["DARTS_V2"], str(tmp_path / "cnn.json"))
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "train.txt").write_text("a b\n")
    argv = [*TINY, *make_args(corpus_dir, str(tmp_path)), f"--output_dir={tmp_path / 'run'}"]
    code, _, err = run_in_process(train_cli, argv, capsys)
    assert code == 2, err
    assert __import__("re").search(message, err), err


def test_test_script_names_a_missing_model(tmp_path, capsys):
    code, _, err = run_in_process(test_cli, [f"--model={tmp_path}/model.keras"], capsys)
    assert code == 2 and "run_config.json' does not exist" in err, err


def test_rnn_search_script_writes_a_recurrent_genotype(corpus_dir, tmp_path):
    """darts-rnn-search in a fresh process (~15 s with the start-up)."""
    out = str(tmp_path / "search")
    proc = run_module("darts_tf.cli.rnn_search", f"--output_dir={out}", "--dataset=small", f"--data_dir={corpus_dir}",
                      "--units=16", "--nodes=3", "--batch_size=8", "--bptt=10", "--epochs=1")
    path = proc.stdout.strip().splitlines()[-1]
    assert path == os.path.join(out, "genotype.json")
    assert len(gt.load_genotype_file(path, "rnn").recurrent) == 3


def test_test_script_maps_words_outside_the_runs_vocabulary_to_unk_and_reports_the_rate(trained_run, corpus_dir,
                                                                                       tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    vocab = open(RunFiles(trained_run).vocab).read().splitlines()
    known = " ".join(w for w in vocab[:8] if w != "<eos>")
    for name in ("train.txt", "valid.txt", "test.txt"):  # 1 unseen word in 8 tokens a line (<eos> included)
        (other / name).write_text(f"{known} qwertyuiop\n" * 60 if name != "train.txt" else f"{known}\n")
    code, out, err = run_in_process(test_cli, [f"--model={trained_run}", f"--data_dir={other}",
                                               f"--output_json={tmp_path / 'result.json'}"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[1] == ("valid: 60 of 540 tokens out of the vocabulary -> <unk> (11.11%)  test: 60 of 540 tokens out "
                        "of the vocabulary -> <unk> (11.11%)"), lines
    result = json.loads(lines[-1])
    assert result["corpus"]["vocab_source"] == RunFiles(trained_run).vocab
    assert result["corpus"]["vocab_size"] == len(vocab) and result["corpus"]["valid"]["oov_words"] == 1
    assert json.load(open(tmp_path / "result.json"))["corpus"] == result["corpus"]


def test_train_script_caps_the_vocabulary_with_max_vocab(corpus_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_in_process(train_cli, [*TINY, "--epochs=1", f"--data_dir={corpus_dir}", f"--output_dir={out}",
                                              "--max_vocab=60", "--nostrict_vocab"], capsys)
    assert code == 0, err
    assert len(open(RunFiles(str(out)).vocab).read().splitlines()) == 60
    with open(RunFiles(str(out)).metrics) as f:
        record = json.load(f)["corpus"]
    assert record["max_vocab"] == 60 and record["strict_vocab"] is False and record["train"]["oov"] > 0
    assert json.load(open(RunFiles(str(out)).run_config))["max_vocab"] == 60


def test_rnn_random_search_script_writes_what_the_cnn_random_search_writes(tmp_path):
    """darts-rnn-search --random_search_samples: genotypes sampled from the chosen recurrent space, no training (~6 s)."""
    out = tmp_path / "rs"
    proc = run_module("darts_tf.cli.rnn_search", f"--output_dir={out}", "--dataset=smoke", "--units=8",
                      "--batch_size=4", "--epochs=1", "--random_search_samples=3", "--seed=4", "--nodes=3",
                      "--primitives=none,tanh,relu")
    assert proc.stdout.strip().splitlines()[-1] == str(out / "genotype.json")
    outputs = RunFiles(str(out))
    samples = [gt.load_genotype_file(outputs.sample_genotype(i), "rnn") for i in range(3)]
    assert gt.load_genotype_file(outputs.genotype, "rnn") == samples[0]
    assert {len(g.recurrent) for g in samples} == {3}  # --nodes and --primitives define the sampled space
    assert {op for g in samples for op, _ in g.recurrent} <= {"tanh", "relu"}
    assert gt.load_genotype_metadata(outputs.sample_genotype(2)) == {"stage": "random_search", "seed": 4, "sample": 2,
                                                                      "kind": "rnn"}
    with open(outputs.metrics) as f:
        assert json.load(f) == {"random_search": True, "num_samples": 3,
                                "samples": [outputs.sample_genotype(i) for i in range(3)]}
    assert sorted(os.listdir(out)) == ["genotype.json", "genotypes", "metrics.json"]
