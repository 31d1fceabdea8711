"""darts-export: model.keras -> SavedModel (uint8 images -> class probabilities, normalisation in the graph).

    python -m darts_tf.cli.export --model runs/darts_v2/model.keras     # writes runs/darts_v2/saved_model

Image shape, mean/std and class names come from the data_info.json darts-train wrote beside the model;
--mean / --std / --class_names override them.
"""

from __future__ import annotations

import os

from absl import flags

from darts_tf.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model", None, "model.keras written by darts-train (or its output directory).")
    flags.DEFINE_string("export_dir", None, "Where to write the SavedModel (default: saved_model/ beside the model).")
    flags.DEFINE_list("mean", None, "Per-channel mean on the 0..1 scale (default: the training run's data_info.json).")
    flags.DEFINE_list("std", None, "Per-channel std on the 0..1 scale (default: the training run's data_info.json).")
    flags.DEFINE_list("class_names", None, "Class names in label order (default: the training run's data_info.json).")
    flags.mark_flag_as_required("model")


def main(argv):
    from darts_tf import run_files
    from darts_tf.cnn import evaluate, export

    def body():
        model_path = FLAGS.model
        if os.path.isdir(model_path):
            model_path = run_files.RunFiles(model_path).model
        info = evaluate.read_data_info(model_path)
        mean = [float(v) for v in FLAGS.mean] if FLAGS.mean else info.get("mean")
        std = [float(v) for v in FLAGS.std] if FLAGS.std else info.get("std")
        if mean is None or std is None:
            raise ValueError(f"No {run_files.DATA_INFO} beside {model_path!r}: pass --mean and --std "
                             "(per-channel, 0..1 scale).")
        model = evaluate.load_model(model_path)
        export_dir = FLAGS.export_dir or run_files.RunFiles(run_files.run_dir_of(model_path)).saved_model
        run_config = evaluate.read_run_config(model_path)
        path = export.export_saved_model(model, export_dir, mean, std, class_names=FLAGS.class_names or info.get("class_names"),
                                         metadata={k: run_config[k] for k in ("genotype", "dataset") if k in run_config},
                                         image_shape=info.get("image_shape"))
        print(f"SavedModel written to {path}")

    common.run_main_without_args(argv, body)


def run():
    """Console-script entry point (darts-export)."""
    common.start(main, define_flags)


if __name__ == "__main__":
    run()
