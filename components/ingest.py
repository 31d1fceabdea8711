"""Stage `ingest`: materialise a dataset's splits once, as a `Dataset` artifact with their sizes and hashes.

Later stages read the artifact instead of re-downloading, and the dataset hash goes into every genotype's
lineage. Images ('digits', 'cifar10', any in-memory tfds dataset) become npz files of uint8 arrays; text
('smoke' = the offline corpus of `darts_tf.data.text.smoke_corpus`, or a PTB / WikiText-2 directory in
`data_dir`) becomes train/valid/test.txt.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Dict, Optional

from components import artifacts, common
from components.monitoring import log_stage

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
    name: str = "cifar10"  # images: a dataset name; text: 'smoke' or a label for the corpus in data_dir
    data_dir: str = ""  # images: tfds data_dir; text: the corpus directory (train/valid/test.txt)
    download: bool = True  # images: let tfds download when not prepared
    max_train_tokens: int = 100_000  # text 'smoke' only: size of the offline corpus

    def validate(self) -> "IngestConfig":
        if self.kind not in KINDS:
            raise ValueError(f"ingest kind must be one of {', '.join(KINDS)}. Received: kind={self.kind!r}")
        if self.kind == "text" and self.name != SMOKE_TEXT and not self.data_dir:
            raise ValueError(f"A text dataset other than {SMOKE_TEXT!r} needs data_dir = its corpus directory "
                             f"(train.txt, valid.txt, test.txt). Received: name={self.name!r}, data_dir=''")
        return self


def run(dataset: str, config: Optional[Dict[str, Any]] = None) -> artifacts.DatasetArtifact:
    """Writes the `Dataset` artifact at `dataset` (a directory path) and returns its reader."""
    cfg = common.config_from_dict(IngestConfig, config, STAGE).validate()
    if cfg.kind == "images":
        from darts_tf.data import images

        data = images.load_image_data(cfg.name, cfg.data_dir or None, download=cfg.download)
        result = artifacts.write_image_dataset(dataset, data, STAGE)
    else:
        from darts_tf.data import text

        with tempfile.TemporaryDirectory() as tmp:
            if cfg.name == SMOKE_TEXT:
                source = text.smoke_corpus(os.path.join(tmp, "corpus"), max_train_tokens=cfg.max_train_tokens)
            else:
                source = cfg.data_dir
            text.Corpus.from_directory(source)  # refuses a malformed corpus before anything is published
            result = artifacts.write_text_dataset(dataset, source, cfg.name, STAGE)
    _log(result)
    return result


def _log(result: artifacts.DatasetArtifact) -> None:
    # Logged beside the artifact (a sibling directory under the same task), never inside the published one.
    splits = result.metadata["splits"]
    log_stage(artifacts.sibling_log_dir(result.path, STAGE),
              scalars={f"dataset/{k}_size": v["size"] for k, v in splits.items()},
              text={"dataset": f"{result.name} ({result.kind}), hash {result.dataset_hash[:16]}"})
