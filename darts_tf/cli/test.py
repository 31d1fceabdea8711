"""darts-test: evaluates a trained model.keras and prints its top-1 and top-5 error.

    python -m darts_tf.cli.test --model runs/darts_v2/model.keras                     # test split
    python -m darts_tf.cli.test --model runs/sel/model.keras --split validation       # the training run's held-out split

Unset --dataset / --data_dir / --seed / --validation_portion / --batch_size come from the run_config.json the
training run wrote beside the model, so --split validation evaluates exactly the split training reported.
"""

from __future__ import annotations

import json

from absl import flags

from darts_tf.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model", None, "model.keras written by darts-train (or its output directory).")
    flags.DEFINE_string("dataset", None, "Dataset (default: the training run's).")
    flags.DEFINE_string("data_dir", None, "tfds data_dir (default: the training run's).")
    flags.DEFINE_enum("split", "test", ["test", "validation"],
                      "test, or validation = the portion of train held out by the training run.")
    flags.DEFINE_float("validation_portion", None, "Held-out portion of train (default: the training run's).")
    flags.DEFINE_integer("seed", None, "Seed of the train/validation split (default: the training run's).")
    flags.DEFINE_integer("batch_size", None, "Evaluation batch size (default: the training run's).")
    flags.DEFINE_integer("image_size", None, "Image size the data is resized to (streamed data: the crop size; default: "
                         "the training run's).")
    flags.DEFINE_string("output_json", None, "Also write the result to this JSON file.")
    flags.mark_flag_as_required("model")


def main(argv):
    from darts_tf.cnn.evaluate import evaluate

    def body():
        result = evaluate(FLAGS.model, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, split=FLAGS.split,
                                         validation_portion=FLAGS.validation_portion, seed=FLAGS.seed,
                                         batch_size=FLAGS.batch_size, image_size=FLAGS.image_size)
        print(f"{result['split']} top-1 error: {100 * result['top1_error']:.2f}%  "
              f"top-5 error: {100 * result['top5_error']:.2f}%  "
              f"(top-1 accuracy {result['top1_accuracy']:.6f}, top-5 accuracy {result['top5_accuracy']:.6f}, "
              f"{result['num_examples']} examples of {result['dataset']})")
        print(json.dumps(result))
        if FLAGS.output_json:
            common.write_result_json(FLAGS.output_json, result)

    common.run_main_without_args(argv, body)


def run():
    """Console-script entry point (darts-test)."""
    common.start(main, define_flags)


if __name__ == "__main__":
    run()
