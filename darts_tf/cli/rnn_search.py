"""darts-rnn-search: DARTS architecture search for a recurrent cell (paper A.1.2; reference rnn/train_search.py).

    darts-rnn-search --output_dir runs/rnn_search --data_dir data/penn --arch_mode second_order_fd
    darts-rnn-search --output_dir runs/rnn_smoke --dataset smoke --units 32 --batch_size 16 --epochs 1   # offline

Writes the genotype after every epoch, the final genotype/alphas, alpha history, TensorBoard logs, vocab.txt and a
checkpoint every epoch (``--resume`` continues a killed run). See darts_tf.run_files for the layout.
"""


from darts_tf.cli import common
from darts_tf.rnn.search import SearchConfig, run_search

common.define_flags_from_dataclass(SearchConfig, {
    "output_dir": "Directory for genotypes, alphas, TensorBoard logs and checkpoints (required).",
    "dataset": "Name of the corpus for the records; 'smoke' = the offline corpus (no --data_dir needed).",
    "data_dir": "Directory with train.txt, valid.txt, test.txt (PTB / WikiText-2 layout).",
    "units": "Embedding = hidden size.",
    "nodes": "Intermediate nodes of the recurrent cell.",
    "learning_rate": "SGD learning rate of the weights (no momentum), scaled per window by seq_len / bptt.",
    "tar_beta": "Temporal activation regularisation weight.",
    "resume": "Continue the run in --output_dir from its last finished epoch.",
    "deterministic": "Enable TensorFlow op determinism.",
})


def main(argv):
    del argv
    common.report_search(run_search(common.config_from_flags(SearchConfig), verbose=common.fit_verbose()))


def run():
    """Console-script entry point (darts-rnn-search)."""
    common.start(main)


if __name__ == "__main__":
    run()
