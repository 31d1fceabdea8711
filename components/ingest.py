"""Stage `ingest`: materialise a dataset's splits once, as a `Dataset` artifact with their sizes and hashes.

Later stages read the artifact instead of re-downloading, and the dataset hash goes into every genotype's
lineage. Images ('digits', 'cifar10', any in-memory tfds dataset) become npz files of uint8 arrays; text
('smoke' = the offline corpus of `darts_tf.data.text.smoke_corpus`, or a PTB / WikiText-2 directory in
`data_dir`) becomes train/valid/test.txt. With `max_vocab` (or words of valid/test that train lacks) the text is
written already mapped to the vocabulary (every other word as <unk>), so later stages see a closed vocabulary; the
metadata's `corpus` is the record of that mapping (`darts_tf.data.text.Corpus.stats`). A corpus that maps nothing is
copied byte for byte.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Dict, Optional

from absl import logging

from . import artifacts, common
from .monitoring import log_stage

STAGE = "ingest"
# Spec: no inputs; one output artifact; one parameter (an IngestConfig as a dict).
DATASET_KEY = "dataset"
CONFIG_KEY = "config"
INPUTS: Dict[str, str] = {}
OUTPUTS = {DATASET_KEY: artifacts.DATASET}
PARAMETERS = {CONFIG_KEY: dict}

KINDS = ("images", "text")
SMOKE_TEXT = "smoke"


@dataclasses.dataclass
class IngestConfig:
    kind: str = "images"  # 'images' or 'text'
    # images: a tfds name, 'digits', an image folder or an .npz (darts_tf.data.images); text: 'smoke' or a label
    # for the corpus in data_dir
    dataset: str = "cifar10"
    data_dir: str = ""  # images: tfds data_dir; text: the corpus directory (train/valid/test.txt)
    download: bool = True  # images: let tfds download when not prepared
    image_size: int = 0  # images: the image_size of images.load_image_data (0: the dataset's own size)
    max_train_tokens: int = 100_000  # text 'smoke' only: size of the offline corpus
    max_vocab: int = 0  # text: 0 = every train word; N = the N most frequent (<eos>, <unk> included), rest -> <unk>
    strict_vocab: bool = False  # text: refuse a valid/test word outside a vocabulary without <unk>

    def validate(self) -> "IngestConfig":
        if self.kind not in KINDS:
            raise ValueError(f"ingest kind must be one of {', '.join(KINDS)}. Received: kind={self.kind!r}")
        if self.kind == "text" and self.dataset != SMOKE_TEXT and not self.data_dir:
            raise ValueError(f"A text dataset other than {SMOKE_TEXT!r} needs data_dir = its corpus directory "
                             f"(train.txt, valid.txt, test.txt). Received: dataset={self.dataset!r}, data_dir=''")
        if self.kind == "text":
            from darts_tf.data.text import check_max_vocab

            check_max_vocab(self.max_vocab)
        return self


def run(dataset: str, config: Optional[Dict[str, Any]] = None) -> artifacts.DatasetArtifact:
    """Writes the `Dataset` artifact at `dataset` (a directory path) and returns its reader."""
    cfg = common.config_from_dict(IngestConfig, config, STAGE).validate()
    if cfg.kind == "images":
        from darts_tf.data import images

        data = images.load_image_data(cfg.dataset, cfg.data_dir or None, download=cfg.download,
                                      image_size=cfg.image_size or 0)
        result = artifacts.write_image_dataset(dataset, data, STAGE)
    else:
        from darts_tf.data import text

        with tempfile.TemporaryDirectory() as tmp:
            if cfg.dataset == SMOKE_TEXT:
                source = text.smoke_corpus(os.path.join(tmp, "corpus"), max_train_tokens=cfg.max_train_tokens)
            else:
                source = cfg.data_dir
            # refuses a malformed corpus before anything is published
            corpus = text.Corpus.from_directory(source, max_vocab=cfg.max_vocab, strict=cfg.strict_vocab)
            logging.info("Ingesting the corpus %s: %s", cfg.dataset, text.describe_stats(corpus.stats))
            if corpus.maps_words:
                source = corpus.write_directory(os.path.join(tmp, "mapped"))
            result = artifacts.write_text_dataset(dataset, source, cfg.dataset, STAGE, extra={"corpus": corpus.stats})
    _log(result)
    return result


def _log(result: artifacts.DatasetArtifact) -> None:
    # Logged beside the artifact (a sibling directory under the same task), never inside the published one.
    splits = result.metadata["splits"]
    log_stage(artifacts.sibling_log_dir(result.path, STAGE),
              scalars={f"dataset/{k}_size": v["size"] for k, v in splits.items()},
              text={"dataset": f"{result.name} ({result.kind}), hash {result.dataset_hash[:16]}"})
