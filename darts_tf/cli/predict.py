"""darts-predict: the top-k classes (name, index, probability) of image files with an exported SavedModel
(tf.saved_model.load only; no Keras model is built).

    python -m darts_tf.cli.predict --export_dir runs/darts_v2/saved_model cat.png dog.jpg --top_k 3

--export_dir is a model base path (the highest numbered version is used) or one version directory. The files go
through the export's 'serving_bytes' signature, which decodes them, converts them to the model's channels and
resizes them to its input size in the graph (as a model server would); one stderr line says so for each image
that is converted or resized. With --noresize a wrong size is an error naming the expected one.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from darts_tf.cli import common

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("export_dir", None, "Model base path (or one version directory) written by darts-export "
                        "or darts-train --export.")
    flags.DEFINE_integer("top_k", 5, "Number of classes to print per image.", lower_bound=1)
    flags.DEFINE_bool("resize", True, "Resize images to the model's input size (else a wrong size is an error).")
    flags.DEFINE_bool("json", False, "Print one JSON object per image instead of text.")
    flags.mark_flag_as_required("export_dir")


def _read_image(path: str):
    """(the file's bytes, its (height, width, channels))."""
    import tensorflow as tf

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file {path!r} does not exist.")
    data = tf.io.read_file(path)
    try:
        shape = tf.io.decode_image(data, channels=0, expand_animations=False).shape
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        raise ValueError(f"Could not decode image file {path!r} ({e.message.splitlines()[0]}); use a JPEG, PNG, BMP "
                         "or GIF file.") from e
    return data.numpy(), tuple(int(d) for d in shape)


def conversion_note(path: str, source, target, resize: bool):
    """The line darts-predict prints when it changes an image to fit the model (None when it needs nothing)."""
    from darts_tf.cnn.export import CHANNEL_NAMES

    (h, w, c), (mh, mw, mc) = source, target
    if (h, w, c) == (mh, mw, mc):
        return None
    if (h, w) != (mh, mw) and not resize:
        raise ValueError(f"{path!r} is {w}x{h} but the model takes {mw}x{mh} images (shape ({mh}, {mw}, {mc})); "
                         "drop --noresize to resize it.")
    verb = "resizing" if (h, w) != (mh, mw) else "converting"
    return (f"{path}: {verb} {w}x{h} {CHANNEL_NAMES.get(c, f'{c}-channel')} to the model's {mw}x{mh} "
            f"{CHANNEL_NAMES[mc]} input (the network takes {mh}x{mw}x{mc} images)")


def format_result(path: str, top, as_json: bool = False) -> str:
    """One output line: the image's (class index, class name, probability) triples, most probable first."""
    if as_json:
        return json.dumps({"path": path, "top_k": [{"class": n, "index": j, "probability": p} for j, n, p in top]})
    return f"{path}: " + ", ".join(f"{n} (class {j}) {p:.4f}" for j, n, p in top)


def main(argv):
    from darts_tf.cnn.export import load_predictor, ranked

    paths = argv[1:]
    if not paths:
        raise app.UsageError("Pass one or more image files after the flags.")

    def body():
        predictor = load_predictor(FLAGS.export_dir)
        blobs = []
        for path in paths:
            data, shape = _read_image(path)
            note = conversion_note(path, shape, predictor.image_shape, FLAGS.resize)
            if note:
                print(note, file=sys.stderr)
            blobs.append(data)
        probs = predictor.predict_encoded(blobs)
        for path, top in zip(paths, ranked(probs, predictor.labels(probs.shape[1]), FLAGS.top_k)):
            print(format_result(path, top, FLAGS.json))

    common.run_main(body)


def run():
    """Console-script entry point (darts-predict)."""
    common.start(main, define_flags)


if __name__ == "__main__":
    run()
