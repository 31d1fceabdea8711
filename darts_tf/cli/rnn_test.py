"""darts-rnn-test: valid and test perplexity of a model trained by darts-rnn-train.

    darts-rnn-test --model runs/ptb_darts_v2                 # the run directory or its model.keras

The corpus (--data_dir), bptt and the evaluation batch sizes default to the training run's run_config.json, so the
numbers are those darts-rnn-train reported.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from darts_tf.cli import common

FLAGS = flags.FLAGS


def define_flags():
    for name, text in (("model", "model.keras written by darts-rnn-train (or its output directory); required."),
                       ("data_dir", "Corpus directory (default: the training run's)."),
                       ("output_json", "Also write the result to this JSON file.")):
        if name not in FLAGS:  # another script of this process may have defined it
            flags.DEFINE_string(name, None, text)


def _given(name):
    return FLAGS[name].value if FLAGS[name].present else None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")

    def body():
        from darts_tf.genotypes import atomic_write_text
        from darts_tf.rnn.evaluation_runner import evaluate_trained

        if not _given("model"):
            raise ValueError("--model is required: the model.keras written by darts-rnn-train or its output directory.")
        result = evaluate_trained(FLAGS.model, data_dir=_given("data_dir"))
        print(f"valid perplexity {result['valid_ppl']:.2f}  test perplexity {result['test_ppl']:.2f}")
        print(json.dumps(result))
        if _given("output_json"):
            atomic_write_text(os.path.abspath(FLAGS.output_json), json.dumps(result, indent=1) + "\n")

    common.run_main(body)


def run():
    """Console-script entry point (darts-rnn-test)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
