"""darts-derive: the discrete cell from a search directory's alphas (paper sect. 2.4), plus its pictures.

    darts-derive --search_dir runs/search --output_dir runs/derived [--k 2] [--formats png,pdf]

Reads ``alphas.npz`` and ``run_config.json`` (for the candidate ops) written by darts-search or darts-rnn-search,
keeps the top-k predecessors per node (k=2 for CNN cells, 1 for RNN cells by default), writes ``genotype.json``
and the Graphviz pictures (the pipeline's `derive` stage does the same on artifacts).
"""

import json
import os

import numpy as np
from absl import app, flags

from darts_tf import genotypes as gt
from darts_tf.run_files import RunFiles
from darts_tf.cli import common

flags.DEFINE_string("search_dir", None, "A darts-search / darts-rnn-search output directory (alphas.npz).")
flags.DEFINE_string("output_dir", None, "Where to write genotype.json and the cell pictures.")
flags.DEFINE_integer("k", None, "Predecessors kept per node (default: 2 for CNN, 1 for RNN).")
flags.DEFINE_list("formats", ["png", "pdf"], "Picture formats.")
FLAGS = flags.FLAGS


def derive_search_dir(search_dir: str, k=None) -> gt.AnyGenotype:
    """The genotype the final alphas of `search_dir` encode."""
    files = RunFiles(search_dir)
    path = files.alphas
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: --search_dir must be a finished darts-search or "
                                f"darts-rnn-search output directory.")
    with np.load(path) as data:
        alphas = {name: data[name] for name in data.files}
    config_path = files.run_config
    config = json.load(open(config_path)) if os.path.isfile(config_path) else {}
    primitives = [p.strip() for p in config["primitives"].split(",") if p.strip()] if "primitives" in config else None
    try:
        return gt.derive_from_alphas(alphas, primitives=primitives, k=k)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def main(argv):
    common.reject_positional_args(argv)
    if not FLAGS.search_dir or not FLAGS.output_dir:
        raise ValueError("--search_dir and --output_dir are required.")
    if FLAGS.k is not None and FLAGS.k < 1:
        raise ValueError(f"--k must be >= 1. Received: k={FLAGS.k}")
    from darts_tf.visualize import plot_genotype

    genotype = derive_search_dir(FLAGS.search_dir, FLAGS.k)
    out = RunFiles(FLAGS.output_dir).genotype
    gt.save_genotype(genotype, out, {"stage": "derive", "search_dir": os.path.abspath(FLAGS.search_dir)})
    for p in [out, *plot_genotype(genotype, FLAGS.output_dir, formats=tuple(FLAGS.formats))]:
        print(p)


def run():
    app.run(lambda argv: common.run_main(lambda: main(argv)))


if __name__ == "__main__":
    run()
