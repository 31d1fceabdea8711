"""darts-predict: top-k classes of image files with an exported SavedModel (tf.saved_model.load only).

    python -m darts_tf.cli.predict --export_dir runs/darts_v2/saved_model cat.png dog.jpg --top_k 3

Images are decoded, converted to the model's channels and (with --resize, the default) resized to its
input size; without --resize a wrong size is an error naming the expected shape.
"""

from __future__ import annotations

import json

from absl import app, flags

from darts_tf.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("export_dir", None, "SavedModel directory written by darts-export or darts-train --export.")
    flags.DEFINE_integer("top_k", 5, "Number of classes to print per image.")
    flags.DEFINE_bool("resize", True, "Resize images to the model's input size (square inputs only).")
    flags.DEFINE_bool("json", False, "Print one JSON object per image instead of text.")
    flags.mark_flag_as_required("export_dir")


def main(argv):
    from darts_tf.data.imagenet import load_image_files
    from darts_tf.cnn.export import load_predictor

    paths = argv[1:]
    if not paths:
        raise app.UsageError("Pass one or more image files after the flags.")

    def body():
        predictor = load_predictor(FLAGS.export_dir)
        h, w, c = predictor.image_shape
        size = h if (FLAGS.resize and h == w) else None
        images = load_image_files(paths, image_size=size, channels=c)
        for path, top in zip(paths, predictor.top_k(images, FLAGS.top_k)):
            if FLAGS.json:
                print(json.dumps({"path": path, "top_k": [{"class": n, "probability": p} for n, p in top]}))
            else:
                print(f"{path}: " + ", ".join(f"{n} ({p:.4f})" for n, p in top))

    common.run_main(body)


def run():
    """Console-script entry point (darts-predict)."""
    common.start(main, define_flags)


if __name__ == "__main__":
    run()
