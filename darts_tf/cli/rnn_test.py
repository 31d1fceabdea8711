"""darts-rnn-test: valid and test perplexity of a model trained by darts-rnn-train.

    darts-rnn-test --model runs/ptb_darts_v2                 # the run directory or its model.keras

The corpus (--data_dir), bptt and the evaluation batch sizes default to the training run's run_config.json, so the
numbers are those darts-rnn-train reported.
"""

from __future__ import annotations

import json

from absl import flags

from darts_tf.cli import common

FLAGS = flags.FLAGS


def define_flags():
    for name, text in (("model", "model.keras written by darts-rnn-train (or its output directory); required."),
                       ("data_dir", "Corpus directory (default: the training run's)."),
                       ("output_json", "Also write the result to this JSON file.")):
        if name not in FLAGS:  # another script of this process may have defined it
            flags.DEFINE_string(name, None, text)


def main(argv):
    def body():
        from darts_tf.rnn.evaluate import evaluate

        if not common.given("model"):
            raise ValueError("--model is required: the model.keras written by darts-rnn-train or its output directory.")
        result = evaluate(FLAGS.model, data_dir=common.given("data_dir"))
        print(f"valid perplexity {result['valid_ppl']:.2f}  test perplexity {result['test_ppl']:.2f}")
        print(json.dumps(result))
        if common.given("output_json"):
            common.write_result_json(FLAGS.output_json, result)

    common.run_main_without_args(argv, body)


def run():
    """Console-script entry point (darts-rnn-test)."""
    common.start(main, define_flags)


if __name__ == "__main__":
    run()
