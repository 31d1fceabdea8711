"""darts-rnn-test: valid and test perplexity of a model trained by darts-rnn-train.

    darts-rnn-test --model runs/ptb_darts_v2                 # the run directory or its model.keras

The corpus (--data_dir), bptt and the evaluation batch sizes default to the training run's run_config.json, so the
numbers are those darts-rnn-train reported. The text is encoded with the run's vocab.txt (any --max_vocab cap of the
training included): a word outside it becomes <unk>, and the share of valid/test tokens that did is printed and kept
in the result's "corpus" record (``darts_tf.data.text.Corpus.stats``).

    darts-rnn-test --model runs/mine --data_dir other_corpus --output_json runs/mine/other.json
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
        stats = result["corpus"]
        print("  ".join(f"{split}: {stats[split]['oov']} of {stats[split]['tokens']} tokens out of the vocabulary "
                        f"-> <unk> ({100 * stats[split]['oov_rate']:.2f}%)" for split in ("valid", "test")))
        print(json.dumps(result))
        if common.given("output_json"):
            common.write_result_json(FLAGS.output_json, result)

    common.run_main_without_args(argv, body)


def run():
    """Console-script entry point (darts-rnn-test)."""
    common.start(main, define_flags)


if __name__ == "__main__":
    run()
