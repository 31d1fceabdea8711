"""darts-export: model.keras -> a servable SavedModel (uint8 images or encoded image files -> class probabilities
and class names; normalisation, decoding and resizing in the graph), optionally also model.tflite.

    python -m darts_tf.cli.export --model runs/darts_v2/model.keras     # writes runs/darts_v2/saved_model/1/
    python -m darts_tf.cli.export --model runs/darts_v2 --model_version=2 --tflite

The export directory is a model base path (TF Serving's --model_base_path, KServe's storageUri): each export is
a numbered version directory inside it (--model_version), so serving picks up a new version without a restart.
docs/serving.md shows how to serve it. Image shape, mean/std and class names come from the data_info.json
darts-train wrote beside the model; --mean / --std / --class_names override them.
"""

from __future__ import annotations

import os

from absl import flags

from darts_tf.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model", None, "model.keras written by darts-train (or its output directory).")
    flags.DEFINE_string("export_dir", None, "The model base path to write the version into (default: saved_model/ "
                        "beside the model).")
    flags.DEFINE_integer("model_version", 1, "Version number: the export goes to export_dir/<model_version>/ "
                         "(replacing that version if it exists; other versions are kept).", lower_bound=0)
    flags.DEFINE_list("mean", None, "Per-channel mean on the 0..1 scale (default: the training run's data_info.json).")
    flags.DEFINE_list("std", None, "Per-channel std on the 0..1 scale (default: the training run's data_info.json).")
    flags.DEFINE_list("class_names", None, "Class names in label order (default: the training run's data_info.json).")
    flags.DEFINE_bool("tflite", False, "Also write model.tflite (uint8 images -> probabilities, float32 weights) "
                      "beside the SavedModel.")
    flags.DEFINE_bool("tflite_quantize", False, "Write model.tflite with dynamic-range int8 weights (implies --tflite).")
    flags.mark_flag_as_required("model")


def main(argv):
    from darts_tf import io_utils, run_files
    from darts_tf.cnn import evaluate, export

    def body():
        model_path = FLAGS.model
        if io_utils.isdir(model_path):
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
        class_names = FLAGS.class_names or info.get("class_names")
        path = export.export_saved_model(model, export_dir, mean, std, class_names=class_names,
                                         metadata={k: run_config[k] for k in ("genotype", "dataset") if k in run_config},
                                         image_shape=info.get("image_shape"), version=FLAGS.model_version,
                                         tflite=FLAGS.tflite, tflite_quantize=FLAGS.tflite_quantize)
        print(f"SavedModel written to {path} (model base path for serving: {io_utils.absolute(export_dir)})")
        tflite = os.path.join(path, export.TFLITE_FILE)
        if FLAGS.tflite or FLAGS.tflite_quantize:
            weights = "dynamic-range int8" if FLAGS.tflite_quantize else "float32"
            print(f"TFLite model written to {tflite} ({io_utils.file_size(tflite)} bytes, {weights} weights)")

    common.run_main_without_args(argv, body)


def run():
    """Console-script entry point (darts-export)."""
    common.start(main, define_flags)


if __name__ == "__main__":
    run()
