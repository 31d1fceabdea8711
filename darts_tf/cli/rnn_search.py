"""darts-rnn-search: DARTS architecture search for a recurrent cell (paper A.1.2; reference rnn/train_search.py).

    darts-rnn-search --output_dir runs/rnn_search --data_dir data/penn --arch_mode second_order_fd
    darts-rnn-search --output_dir runs/rnn_smoke --dataset smoke --units 32 --batch_size 16 --epochs 1   # offline
    darts-rnn-search --output_dir runs/rnn_mine --dataset mine --data_dir my_corpus --max_vocab 10000   # your text
    darts-rnn-search --output_dir runs/rnn_rs --random_search_samples 24      # the random-search baseline

Writes the genotype after every epoch, the final genotype/alphas, alpha history, TensorBoard logs, vocab.txt and a
checkpoint every epoch (``--resume`` continues a killed run). See darts_tf.run_files for the layout.
"""

from absl import flags

from darts_tf.cli import common
from darts_tf.rnn.search import SearchConfig, run_search
from darts_tf.search import run_random_search

common.define_flags_from_dataclass(SearchConfig, {
    "output_dir": "Directory for genotypes, alphas, TensorBoard logs and checkpoints (required).",
    "dataset": "Name of the corpus for the records; 'smoke' = the offline corpus (no --data_dir needed).",
    "data_dir": "Directory with train.txt, valid.txt, test.txt (PTB / WikiText-2 layout).",
    "max_vocab": "Vocabulary cap: the N most frequent train words (<eos> and <unk> count toward N), every other word "
                 "becomes <unk> in train/valid/test; 0 = every train word.",
    "strict_vocab": "Refuse a valid/test word that is not in the vocabulary when the vocabulary has no <unk> (instead "
                    "of mapping it to <unk>); the share of tokens that became <unk> is logged and in run_config.json.",
    "units": "Embedding = hidden size.",
    "nodes": "Intermediate nodes of the recurrent cell.",
    "learning_rate": "SGD learning rate of the weights (no momentum), scaled per window by seq_len / bptt.",
    "tar_beta": "Temporal activation regularisation weight.",
    "resume": "Continue the run in --output_dir from its last finished epoch.",
    "deterministic": "Enable TensorFlow op determinism.",
})
if "random_search_samples" not in flags.FLAGS:  # darts-search defines it too (one process may import both)
    flags.DEFINE_integer("random_search_samples", 0, "If > 0, run the random-search baseline instead: sample this "
                         "many genotypes uniformly from the same space.")


def main(argv):
    del argv
    flags_ = flags.FLAGS
    if flags_.random_search_samples:
        if not flags_.output_dir:
            raise ValueError("--output_dir is required.")
        config = common.config_from_flags(SearchConfig)
        result = run_random_search(flags_.output_dir, "rnn", flags_.random_search_samples, flags_.seed,
                                   config.primitive_list, config.nodes)
    else:
        result = run_search(common.config_from_flags(SearchConfig), verbose=common.fit_verbose())
    common.report_search(result)


def run():
    """Console-script entry point (darts-rnn-search)."""
    common.start(main)


if __name__ == "__main__":
    run()
