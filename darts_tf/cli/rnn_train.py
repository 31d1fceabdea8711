"""darts-rnn-train: trains a language model with a recurrent cell from scratch (paper A.2.2, A.2.4).

    darts-rnn-train --preset ptb --genotype DARTS_V2 --data_dir data/penn --output_dir runs/ptb_darts_v2
    darts-rnn-train --preset wikitext2 --data_dir data/wikitext-2 --output_dir runs/wt2     # transfer (A.2.4)
    darts-rnn-train --preset smoke --output_dir runs/smoke --export                         # offline, minutes
    darts-rnn-train --preset ptb --genotype runs/rnn_search/genotype.json ...              # a searched cell
    darts-rnn-train --preset ptb --data_dir my_corpus --max_vocab 10000 --output_dir runs/mine   # your own text
    TF_CONFIG=... darts-rnn-train --preset ptb --data_dir gs://b/penn --strategy multi_worker --output_dir gs://b/ptb

Every field of ``darts_tf.rnn.train.TrainConfig`` is a flag; an unset flag keeps the preset's value. Writes
the run directory of ``darts_tf.rnn.train.train`` (model.keras, vocab.txt, metrics.json, checkpoints,
tensorboard/, and with --export a SavedModel) and prints metrics.json.
"""

from __future__ import annotations

import dataclasses
import json
import typing

from absl import flags

from darts_tf.cli import common

FLAGS = flags.FLAGS

HELP = {
    "genotype": "RNN genotype: a published name (DARTS_V1, DARTS_V2, ENAS), a genotype JSON file, or inline JSON.",
    "units": "Embedding = hidden size.",
    "epochs": "Epochs (the reference trains 'until convergence', at most 8000).",
    "nonmono": "Non-monotone interval of the switch to averaged SGD.",
    "dropoute": "Embedding (token) dropout.",
    "tar_beta": "Temporal activation regularisation weight.",
    "max_vocab": "Vocabulary cap: the N most frequent train words (<eos> and <unk> count toward N), every other word "
                 "becomes <unk> in train/valid/test; 0 = every train word.",
    "strict_vocab": "Refuse a valid/test word that is not in the vocabulary when the vocabulary has no <unk> (instead "
                    "of mapping it to <unk>); the share of tokens that became <unk> is logged and in metrics.json.",
    "strategy": "Distribution: auto (MirroredStrategy when more than one GPU is visible), mirrored, multi_worker "
                "(MultiWorkerMirroredStrategy from TF_CONFIG) or default (one device). --batch_size is the global "
                "batch, a multiple of the replicas; each replica trains and carries the hidden state of its rows.",
}


def define_flags():
    from darts_tf.rnn.train import RNN_PRESETS, TrainConfig

    def define(kind, name, default, text):
        if name not in FLAGS:  # another script of this process may have defined it
            kind(name, default, text)

    define(flags.DEFINE_string, "preset", "ptb", f"Settings preset: {', '.join(sorted(RNN_PRESETS))}.")
    define(flags.DEFINE_string, "data_dir", None, "Directory with train.txt, valid.txt, test.txt (PTB / WikiText-2 "
           "layout); 'smoke' (or unset with --preset smoke) = the offline corpus.")
    define(flags.DEFINE_string, "output_dir", None, "Run directory (model.keras, vocab.txt, metrics.json, checkpoints).")
    define(flags.DEFINE_bool, "resume", False, "Continue the run in --output_dir from its last finished epoch.")
    define(flags.DEFINE_bool, "export", False, "Also write a SavedModel (text or token ids -> next-token log-probs) to "
           "output_dir/saved_model/1 (the base path TF Serving and KServe read is output_dir/saved_model).")
    define(flags.DEFINE_integer, "verbose", None, common.VERBOSE_HELP)
    hints = typing.get_type_hints(TrainConfig)
    ptb = RNN_PRESETS["ptb"]
    for field in dataclasses.fields(TrainConfig):
        kind = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
            hints[field.name], flags.DEFINE_string)
        text = HELP.get(field.name, field.name.replace("_", " ") + ".")
        define(kind, field.name, None, f"{text} Default: the preset's (ptb: {getattr(ptb, field.name)}).")


def config_from_flags():
    """The preset with the flags that were given on the command line."""
    from darts_tf.rnn.train import TrainConfig, get_preset

    overrides = {f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainConfig) if FLAGS[f.name].present}
    return get_preset(FLAGS.preset, **overrides)


def main(argv):
    def body():
        from darts_tf.rnn.train import train

        if not common.given("output_dir"):
            raise ValueError("--output_dir is required: the run directory for the model, vocabulary and metrics.")
        metrics = train(config_from_flags(), FLAGS.output_dir, data_dir=common.given("data_dir"),
                                   preset=FLAGS.preset, resume=bool(common.given("resume")), export=bool(common.given("export")),
                                   verbose=common.fit_verbose())
        print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=1))

    common.run_main_without_args(argv, body)


def run():
    """Console-script entry point (darts-rnn-train)."""
    common.start(main, define_flags)


if __name__ == "__main__":
    run()
