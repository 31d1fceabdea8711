"""Looks a searched NAS-Bench-201 cell up in the user's own copy of NAS-Bench-201 / NATS-Bench (its topology search
space, 'tss', which is NAS-Bench-201's 15,625 cells): ``darts-search --search_space nb201 --nb201_benchmark PATH``
logs, after every epoch, the benchmark's accuracy of the genotype derived then (``NB201Lookup``).

The API is D-X-Y/NATS-Bench's (``pip install nats_bench``)::

    api = nats_bench.create(PATH, "tss", fast_mode=True, verbose=False)   # PATH: e.g. .../NATS-tss-v1_0-3ffb9-simple
    index = api.query_index_by_arch("|nor_conv_3x3~0|+|...|")             # -1: not in the benchmark
    info = api.get_more_info(index, "cifar10", hp="200", is_random=False)  # 200-epoch training, mean over its seeds

``info["test-accuracy"]`` (and, where the dataset has one, ``info["valid-accuracy"]``) are percentages. The epoch
logs get ``nb201_test_accuracy``, ``nb201_valid_accuracy`` and ``nb201_index`` (metrics.json's history, TensorBoard's
epoch_nb201_*). The benchmark file is the user's: nothing here ships or downloads it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, Callable, Dict, Optional

import keras
from absl import logging

from darts_tf import io_utils
from darts_tf.genotypes import NB201Genotype

NB201_DATASETS = ("cifar10", "cifar10-valid", "cifar100", "ImageNet16-120")  # NATS-Bench's dataset names
NB201_HP = "200"  # the 200-epoch protocol (the 'tss' space also has '12')

# absl flag metadata of the search config's lookup fields
LOOKUP_FLAG_METADATA = {
    "nb201_benchmark": {"help": "--search_space=nb201 only: a NAS-Bench-201 / NATS-Bench topology benchmark (what "
                                "nats_bench.create(PATH, 'tss', fast_mode=True) opens, e.g. the NATS-tss-v1_0-3ffb9-"
                                "simple directory). After every epoch the derived cell's accuracy in it is logged "
                                "(nb201_test_accuracy, nb201_valid_accuracy). Needs `pip install nats_bench`; the "
                                "file is not shipped."},
    "nb201_dataset": {"choices": NB201_DATASETS,
                      "help": "The benchmark dataset whose accuracies --nb201_benchmark looks up (NATS-Bench's names; "
                              "cifar10: trained on train+valid, test accuracy on the test set; cifar10-valid: trained "
                              "on train, valid accuracy too)."},
}


def check_benchmark(path: str, dataset: str) -> None:
    """What a lookup refuses before the search starts: a missing benchmark, an unknown dataset, no nats_bench."""
    if dataset not in NB201_DATASETS:
        raise ValueError(f"--nb201_dataset must be one of {', '.join(NB201_DATASETS)}. Received: nb201_dataset="
                         f"{dataset!r}")
    if not io_utils.exists(path):
        raise FileNotFoundError(f"--nb201_benchmark {path!r} does not exist: give your copy of the NATS-Bench "
                                f"topology benchmark (e.g. NATS-tss-v1_0-3ffb9-simple), or drop the flag.")
    if importlib.util.find_spec("nats_bench") is None:
        raise ValueError("--nb201_benchmark needs the nats_bench package, which is not installed: "
                         "pip install nats_bench (or drop the flag).")


def open_benchmark(path: str) -> Any:
    """The NATS-Bench topology API on `path` (fast mode: each architecture's record is read when first queried)."""
    import nats_bench

    return nats_bench.create(path, "tss", fast_mode=True, verbose=False)


@dataclasses.dataclass(frozen=True)
class BenchmarkRecord:
    """What the benchmark says of one cell on one dataset (accuracies in percent, the benchmark's unit)."""

    arch: str
    index: int
    dataset: str
    test_accuracy: Optional[float]
    valid_accuracy: Optional[float]

    def logs(self) -> Dict[str, float]:
        """The epoch-log keys (only those the benchmark has)."""
        values = {"nb201_index": float(self.index), "nb201_test_accuracy": self.test_accuracy,
                  "nb201_valid_accuracy": self.valid_accuracy}
        return {k: float(v) for k, v in values.items() if v is not None}


def lookup(api: Any, genotype: NB201Genotype, dataset: str = "cifar10", hp: str = NB201_HP) -> Optional[BenchmarkRecord]:
    """The benchmark's record of `genotype` (None if the benchmark does not hold its architecture string)."""
    arch = genotype.to_string()
    index = api.query_index_by_arch(arch)
    if index is None or int(index) < 0:
        return None
    info = api.get_more_info(int(index), dataset, hp=hp, is_random=False)
    return BenchmarkRecord(arch, int(index), dataset, info.get("test-accuracy"), info.get("valid-accuracy"))


class NB201Lookup(keras.callbacks.Callback):
    """After every epoch: the model's ``genotype()`` (an NB201Genotype) looked up in the benchmark, its accuracies
    added to the epoch logs. Put it ahead of the loggers (``run_bilevel_search``'s `log_callbacks`).

    `api` is the NATS-Bench API object (``open_benchmark``), or anything with its ``query_index_by_arch`` and
    ``get_more_info`` (tests inject one)."""

    def __init__(self, api: Any, dataset: str = "cifar10", hp: str = NB201_HP):
        super().__init__()
        self.api, self.dataset, self.hp = api, dataset, hp
        self.records = []

    @classmethod
    def from_path(cls, path: str, dataset: str = "cifar10",
                  opener: Callable[[str], Any] = open_benchmark) -> "NB201Lookup":
        check_benchmark(path, dataset)
        return cls(opener(path), dataset)

    def on_epoch_end(self, epoch, logs=None):
        genotype = self.model.genotype()
        record = lookup(self.api, genotype, self.dataset, self.hp)
        if record is None:
            logging.warning("epoch %d: %s is not in the NAS-Bench-201 benchmark; nothing looked up.", epoch + 1,
                            genotype)
            return
        self.records.append(record)
        if logs is not None:
            logs.update(record.logs())
        logging.info("epoch %d: NAS-Bench-201 #%d on %s: test accuracy %s%%, valid accuracy %s%%", epoch + 1,
                     record.index, self.dataset, record.test_accuracy, record.valid_accuracy)
