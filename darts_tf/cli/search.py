"""darts-search: DARTS architecture search for a convolutional cell (paper sect. 3.1.1; reference train_search.py).

    darts-search --output_dir runs/search --dataset cifar10 --arch_mode second_order_exact
    darts-search --output_dir runs/rs --random_search_samples 24      # the random-search baseline
    darts-search --output_dir runs/robust --preset robust              # every collapse guard on (darts_tf.collapse)
    darts-search --output_dir runs/nb201 --search_space nb201          # NAS-Bench-201's cell space (preset nb201)

Writes the genotype after every epoch, the final genotype/alphas, alpha history, TensorBoard logs and a
checkpoint every epoch (``--resume`` continues a killed run). See darts_tf.run_files for the layout.
"""

import dataclasses

from absl import flags

from darts_tf.cli import common
from darts_tf.cnn.search import SearchConfig, get_search_preset, run_search
from darts_tf.search import run_random_search

common.define_flags_from_dataclass(SearchConfig, {
    "output_dir": "Directory for genotypes, alphas, TensorBoard logs and checkpoints (required).",
    "dataset": "cifar10, cifar100, digits (offline, ships with scikit-learn), any tfds image dataset, a folder "
               "DIR/train/<class>/* + DIR/test/<class>/* (or val/), or an .npz with x_train, y_train, x_test, y_test.",
    "data_dir": "tfds data directory (default: tfds' own).",
    "download": "Let tfds download the dataset if it is not prepared in --data_dir.",
    "train_portion": "Share of the training split that trains w; the rest trains alpha.",
    "resume": "Continue the run in --output_dir from its last finished epoch.",
    "deterministic": "Enable TensorFlow op determinism (bitwise-reproducible on CPU).",
})
if "preset" not in flags.FLAGS:  # darts_tf.cli.rnn_train defines its own --preset (another script); a string flag,
    # checked by get_search_preset, so the two scripts' modules can share a process (tests)
    flags.DEFINE_string("preset", "darts", "Search settings preset: 'darts' (the paper's: no "
                      "collapse guard) or 'robust' (every collapse guard on: skip dropout, skip_connect cap, DARTS- "
                      "auxiliary skip, SDARTS-RS smoothing, beta-decay; docs/collapse_guards.md) or 'nb201' (DARTS in "
                      "NAS-Bench-201's cell space with its authors' settings; the default of --search_space=nb201). "
                      "Flags given on the command line override the preset's values.")
if "random_search_samples" not in flags.FLAGS:  # darts_tf.cli.rnn_search defines the same flag
    flags.DEFINE_integer("random_search_samples", 0, "If > 0, run the random-search baseline instead: sample this many "
                         "genotypes uniformly from the same space.")


def main(argv):
    del argv
    flags_ = flags.FLAGS
    if flags_.random_search_samples:
        if not flags_.output_dir:
            raise ValueError("--output_dir is required.")
        config = config_from_flags()
        result = run_random_search(flags_.output_dir, "cnn", flags_.random_search_samples, flags_.seed,
                                   config.primitive_list, config.nodes)
    else:
        result = run_search(config_from_flags(), verbose=common.fit_verbose())
    common.report_search(result)


def config_from_flags() -> SearchConfig:
    """The --preset's settings with the flags given on the command line."""
    given = {f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(SearchConfig)
             if f.name in flags.FLAGS and flags.FLAGS[f.name].present}
    # --preset may be another script's flag when several scripts' modules share a process (tests): given or ours
    # (--search_space=nb201 without a --preset starts from the nb201 preset: NAS-Bench-201's C, N and settings)
    default = "nb201" if given.get("search_space") == "nb201" else "darts"
    preset = flags.FLAGS["preset"].value if flags.FLAGS["preset"].present else default
    return get_search_preset(preset, **given)


def run():
    """Console-script entry point (darts-search)."""
    common.start(main)


if __name__ == "__main__":
    run()
