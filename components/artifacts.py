"""The pipeline's artifact types: each is a directory with a documented layout and one `artifact.json`.

This module is the only one that knows the file names inside an artifact; stages call one writer and one
reader per type. Every writer builds the artifact in a temporary sibling directory, verifies it with the
type's reader, and only then renames it into place, so a later stage never sees half-written output. Every
reader raises `ArtifactError` naming the reading stage and the artifact path when the directory is missing,
of the wrong type, or its contents fail validation.

Layouts (``artifact.json`` in every one: ``{"type", "version", "stage", ...type metadata}``)::

    Dataset       images: train.npz, test.npz (uint8 NHWC `images`, int64 `labels`)
                  text:   train.txt, valid.txt, test.txt
                  metadata: kind, name, splits {split: {size, sha256}}, dataset_hash (+ image stats)
    SearchRun     alphas.npz (final alphas by name), genotype.json (as the search derived it, with lineage),
                  search/ (the search runner's output directory: per-epoch genotypes, alpha history,
                  metrics.json, tensorboard/), metadata: kind, seed, primitives, lineage
    Genotype      genotype.json (the genotype + "metadata": lineage: search, seed, flags, dataset hash)
    CellPictures  normal.{dot,png,pdf}, reduction.{dot,png,pdf} (CNN) or recurrent.{dot,png,pdf} (RNN)
    Model         run/ (the trainer's output directory: model.keras, tensorboard/, ...; RNN: also vocab.txt),
                  saved_model/ (the serving SavedModel: CNN images -> class probabilities, RNN tokens ->
                  next-token log-probabilities), genotype.json, metrics.json
    Metrics       metrics.json (a flat or nested JSON object), tensorboard/ when the stage logs any
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any, Callable, ClassVar, ContextManager, Dict, List, Optional, Sequence

import numpy as np

from darts_tf import genotypes as gt
from darts_tf import run_files
from darts_tf.export_common import SAVED_MODEL_FILE, numeric_versions
from darts_tf.io_utils import publish_directory, write_json
from darts_tf.tasks import known_kinds

FORMAT_VERSION = 1
METADATA_FILE = "artifact.json"

DATASET = "Dataset"
SEARCH_RUN = "SearchRun"
GENOTYPE = "Genotype"
CELL_PICTURES = "CellPictures"
MODEL = "Model"
METRICS = "Metrics"
ARTIFACT_TYPES = (DATASET, SEARCH_RUN, GENOTYPE, CELL_PICTURES, MODEL, METRICS)

IMAGE_SPLITS = ("train", "test")
TEXT_SPLITS = ("train", "valid", "test")
# Files an artifact shares with a run directory are named as `darts_tf.run_files` names them.
_GENOTYPE_FILE = run_files.GENOTYPE
_ALPHAS_FILE = run_files.ALPHAS
_SEARCH_DIR = "search"
_METRICS_FILE = run_files.METRICS
_TENSORBOARD_DIR = run_files.TENSORBOARD
_RUN_DIR = "run"
_SAVED_MODEL_DIR = run_files.SAVED_MODEL  # in the Model artifact, moved there from run/
_KERAS_MODEL_FILE = run_files.MODEL  # in run/, CNN and RNN alike
_VOCAB_FILE = run_files.VOCAB  # in run/ (RNN): the training vocabulary, one token per line
LINEAGE_KEYS = ("stage", "search_uri", "seed", "flags", "dataset_hash")


class ArtifactError(ValueError):
    """An artifact that is missing, of the wrong type, or whose contents fail validation."""

    def __init__(self, stage: str, path: str, problem: str):
        self.stage, self.path, self.problem = stage, path, problem
        super().__init__(f"[stage '{stage}'] artifact {path!r}: {problem}")


# --------------------------------------------------------------------------------------------- common


def _read_json(stage: str, artifact: str, path: str) -> Any:
    if not os.path.isfile(path):
        raise ArtifactError(stage, artifact, f"missing file {os.path.basename(path)!r}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(stage, artifact, f"{os.path.basename(path)} is not valid JSON ({e})") from e


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_arrays(*arrays: np.ndarray) -> str:
    """A hash of array contents, shapes and dtypes (independent of the npz container's zip metadata)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _combined_hash(split_hashes: Dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(split_hashes, sort_keys=True).encode()).hexdigest()


def _verified_directory(path: str, read: Callable[..., Any], stage: str, **read_kwargs) -> ContextManager[str]:
    """`publish_directory` for an artifact: the new content is published only if `read(tmp, stage, ...)`
    accepts it; an existing `path` (e.g. the empty directory an orchestrator created) is replaced then."""
    return publish_directory(path, lambda d: read(d, stage, **read_kwargs))


def _write_metadata(directory: str, type_name: str, stage: str, metadata: Dict[str, Any]) -> None:
    write_json(os.path.join(directory, METADATA_FILE),
               {**metadata, "type": type_name, "version": FORMAT_VERSION, "stage": stage})


def read_metadata(path: str, type_name: str, stage: str) -> Dict[str, Any]:
    """The `artifact.json` of the artifact at `path`, checked to be of `type_name`."""
    if not os.path.isdir(path):
        raise ArtifactError(stage, path, f"is not a directory; expected a {type_name} artifact written by this "
                                         f"pipeline's stages")
    meta = _read_json(stage, path, os.path.join(path, METADATA_FILE))
    if not isinstance(meta, dict) or meta.get("type") != type_name:
        found = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise ArtifactError(stage, path, f"is a {found!r} artifact; expected {type_name!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise ArtifactError(stage, path, f"has format version {meta.get('version')!r}; this code reads "
                                         f"version {FORMAT_VERSION}")
    return meta


def _require(stage: str, path: str, *names: str) -> None:
    missing = [n for n in names if not os.path.exists(os.path.join(path, n))]
    if missing:
        raise ArtifactError(stage, path, f"missing {', '.join(repr(m) for m in missing)}")


# --------------------------------------------------------------------------------------------- Dataset


@dataclasses.dataclass(frozen=True)
class DatasetArtifact:
    path: str
    metadata: Dict[str, Any]

    @property
    def kind(self) -> str:  # 'images' or 'text'
        return self.metadata["kind"]

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def dataset_hash(self) -> str:
        return self.metadata["dataset_hash"]

    def image_data(self):
        """The images as a `darts_tf.data.images.ImageData` (train and test splits)."""
        from darts_tf.data.images import ImageData

        if self.kind != "images":
            raise ValueError(f"Dataset artifact {self.path!r} holds {self.kind}, not images.")
        arrays = {}
        for split in IMAGE_SPLITS:
            with np.load(os.path.join(self.path, f"{split}.npz")) as data:
                arrays[split] = (data["images"], data["labels"])
        m = self.metadata
        return ImageData(arrays["train"][0], arrays["train"][1], arrays["test"][0], arrays["test"][1],
                         int(m["num_classes"]), m["name"], tuple(m["mean"]), tuple(m["std"]),
                         tuple(m.get("class_names", ())))  # artifacts written before class_names: '0', '1', ...

    @property
    def corpus_dir(self) -> str:
        """The directory holding train.txt, valid.txt, test.txt (`darts_tf.data.text.Corpus.from_directory`)."""
        if self.kind != "text":
            raise ValueError(f"Dataset artifact {self.path!r} holds {self.kind}, not text.")
        return self.path


def write_image_dataset(path: str, data, stage: str = "ingest") -> DatasetArtifact:
    """Writes an `ImageData`'s train/test splits as uint8/int64 npz files with their sizes and hashes."""
    with _verified_directory(path, read_dataset, stage, verify_hashes=True) as tmp:
        splits = {}
        for split, (x, y) in {"train": (data.train_images, data.train_labels),
                              "test": (data.test_images, data.test_labels)}.items():
            x, y = np.asarray(x, np.uint8), np.asarray(y, np.int64)
            np.savez(os.path.join(tmp, f"{split}.npz"), images=x, labels=y)
            splits[split] = {"size": int(len(x)), "sha256": sha256_arrays(x, y)}
        _write_metadata(tmp, DATASET, stage, {
            "kind": "images", "name": data.name, "splits": splits, "dataset_hash": _combined_hash(
                {k: v["sha256"] for k, v in splits.items()}),
            "num_classes": int(data.num_classes), "image_shape": list(data.image_shape),
            "mean": [float(m) for m in data.mean], "std": [float(s) for s in data.std],
            "class_names": [str(c) for c in data.class_names]})
    return read_dataset(path, stage)


def write_text_dataset(path: str, corpus_dir: str, name: str, stage: str = "ingest",
                       extra: Optional[Dict[str, Any]] = None) -> DatasetArtifact:
    """Copies a corpus directory's train/valid/test.txt, recording token counts and hashes."""
    with _verified_directory(path, read_dataset, stage, verify_hashes=True) as tmp:
        splits = {}
        for split in TEXT_SPLITS:
            src = os.path.join(corpus_dir, f"{split}.txt")
            if not os.path.isfile(src):
                raise FileNotFoundError(f"Corpus file {src!r} is missing; a text corpus directory holds "
                                        f"train.txt, valid.txt and test.txt.")
            dst = os.path.join(tmp, f"{split}.txt")
            shutil.copyfile(src, dst)
            with open(dst, encoding="utf-8") as f:
                tokens = sum(len(line.split()) + 1 for line in f)  # + <eos> per line, as the corpus reader
            splits[split] = {"size": tokens, "sha256": sha256_file(dst)}
        _write_metadata(tmp, DATASET, stage, {
            "kind": "text", "name": name, "splits": splits, "size_unit": "tokens",
            "dataset_hash": _combined_hash({k: v["sha256"] for k, v in splits.items()}), **(extra or {})})
    return read_dataset(path, stage)


def read_dataset(path: str, stage: str, verify_hashes: bool = False) -> DatasetArtifact:
    meta = read_metadata(path, DATASET, stage)
    kind = meta.get("kind")
    if kind == "images":
        files = [f"{s}.npz" for s in IMAGE_SPLITS]
    elif kind == "text":
        files = [f"{s}.txt" for s in TEXT_SPLITS]
    else:
        raise ArtifactError(stage, path, f"unknown dataset kind {kind!r}; expected 'images' or 'text'")
    _require(stage, path, *files)
    if verify_hashes:
        for split, info in meta["splits"].items():
            if kind == "images":
                with np.load(os.path.join(path, f"{split}.npz")) as data:
                    found = sha256_arrays(data["images"], data["labels"])
            else:
                found = sha256_file(os.path.join(path, f"{split}.txt"))
            if found != info["sha256"]:
                raise ArtifactError(stage, path, f"split {split!r} does not match its recorded sha256")
    return DatasetArtifact(path, meta)


# --------------------------------------------------------------------------------------------- SearchRun


@dataclasses.dataclass(frozen=True)
class _RunArtifact:
    """A run's artifact (SearchRun, Model): its artifact.json `metadata`, a genotype.json and a metrics.json."""

    path: str
    metadata: Dict[str, Any]
    _metrics_file: ClassVar[str] = _METRICS_FILE  # relative to `path`

    @property
    def kind(self) -> str:  # 'cnn' or 'rnn'
        return self.metadata["kind"]

    @property
    def genotype_path(self) -> str:
        return os.path.join(self.path, _GENOTYPE_FILE)

    @property
    def metrics(self) -> Dict[str, Any]:
        with open(os.path.join(self.path, self._metrics_file)) as f:
            return json.load(f)


@dataclasses.dataclass(frozen=True)
class SearchRunArtifact(_RunArtifact):
    _metrics_file: ClassVar[str] = os.path.join(_SEARCH_DIR, _METRICS_FILE)

    @property
    def primitives(self) -> List[str]:
        return list(self.metadata["primitives"])

    @property
    def lineage(self) -> Dict[str, Any]:
        return dict(self.metadata["lineage"])

    def alphas(self) -> Dict[str, np.ndarray]:
        with np.load(os.path.join(self.path, _ALPHAS_FILE)) as data:
            return {k: data[k] for k in data.files}


def search_run_writer(path: str, stage: str = "search") -> ContextManager[str]:
    """Yields the directory for the search runner's output (``search/``); on exit it must hold alphas.npz,
    genotype.json and metrics.json. Call `finish_search_run` inside the block to publish the metadata."""
    return _verified_directory(path, read_search_run, stage)


def search_output_dir(writer_dir: str) -> str:
    """Where the search runner writes inside a `search_run_writer` directory."""
    return os.path.join(writer_dir, _SEARCH_DIR)


def finish_search_run(writer_dir: str, kind: str, primitives: Sequence[str], lineage: Dict[str, Any],
                      alphas: Dict[str, np.ndarray], genotype: gt.AnyGenotype, stage: str = "search") -> None:
    np.savez(os.path.join(writer_dir, _ALPHAS_FILE), **{k: np.asarray(v) for k, v in alphas.items()})
    gt.save_genotype(genotype, os.path.join(writer_dir, _GENOTYPE_FILE), lineage)
    _write_metadata(writer_dir, SEARCH_RUN, stage, {"kind": kind, "primitives": list(primitives),
                                                    "lineage": lineage})


def read_search_run(path: str, stage: str) -> SearchRunArtifact:
    meta = read_metadata(path, SEARCH_RUN, stage)
    _require(stage, path, _ALPHAS_FILE, _GENOTYPE_FILE, os.path.join(_SEARCH_DIR, _METRICS_FILE))
    if meta.get("kind") not in known_kinds():
        raise ArtifactError(stage, path, f"unknown search kind {meta.get('kind')!r}; expected one of "
                                         f"{', '.join(known_kinds())}")
    try:
        gt.load_genotype_file(os.path.join(path, _GENOTYPE_FILE), kind=meta["kind"])
    except gt.GenotypeError as e:
        raise ArtifactError(stage, path, f"genotype.json fails validation: {e}") from e
    return SearchRunArtifact(path, meta)


# --------------------------------------------------------------------------------------------- Genotype


@dataclasses.dataclass(frozen=True)
class GenotypeArtifact:
    path: str
    genotype: gt.AnyGenotype
    lineage: Dict[str, Any]

    @property
    def json_path(self) -> str:
        """The genotype JSON file (what `darts_tf.cnn.train` and `darts_tf.rnn.train` take as `genotype`)."""
        return os.path.join(self.path, _GENOTYPE_FILE)


def write_genotype(path: str, genotype: gt.AnyGenotype, lineage: Dict[str, Any], stage: str) -> GenotypeArtifact:
    """Writes a genotype with its lineage (which search, seed, flags, dataset hash; see LINEAGE_KEYS)."""
    missing = [k for k in LINEAGE_KEYS if k not in lineage]
    if missing:
        raise ValueError(f"Genotype lineage needs {', '.join(LINEAGE_KEYS)}. Missing: {', '.join(missing)}")

    with _verified_directory(path, read_genotype, stage) as tmp:
        gt.save_genotype(genotype, os.path.join(tmp, _GENOTYPE_FILE), lineage)
        _write_metadata(tmp, GENOTYPE, stage, {"kind": genotype.kind})
    return read_genotype(path, stage)


def read_genotype(path: str, stage: str) -> GenotypeArtifact:
    meta = read_metadata(path, GENOTYPE, stage)
    data = _read_json(stage, path, os.path.join(path, _GENOTYPE_FILE))
    try:
        genotype = gt.genotype_from_dict(data, kind=meta.get("kind"))
    except gt.GenotypeError as e:
        raise ArtifactError(stage, path, f"genotype.json fails validation: {e}") from e
    lineage = data.get("metadata") or {}
    missing = [k for k in LINEAGE_KEYS if k not in lineage]
    if missing:
        raise ArtifactError(stage, path, f"genotype.json lacks lineage {', '.join(missing)}")
    return GenotypeArtifact(path, genotype, lineage)


# --------------------------------------------------------------------------------------------- CellPictures


@dataclasses.dataclass(frozen=True)
class CellPicturesArtifact:
    path: str
    files: List[str]  # names inside `path`

    def paths(self, ext: str) -> List[str]:
        return [os.path.join(self.path, f) for f in self.files if f.endswith("." + ext)]


def write_cell_pictures(path: str, genotype: gt.AnyGenotype, stage: str = "derive",
                        formats: Sequence[str] = ("png", "pdf")) -> CellPicturesArtifact:
    from darts_tf.visualize import plot_genotype

    with _verified_directory(path, read_cell_pictures, stage) as tmp:
        written = plot_genotype(genotype, tmp, formats)
        _write_metadata(tmp, CELL_PICTURES, stage, {"files": sorted(os.path.basename(p) for p in written),
                                                    "genotype": genotype.to_dict()})
    return read_cell_pictures(path, stage)


def read_cell_pictures(path: str, stage: str) -> CellPicturesArtifact:
    meta = read_metadata(path, CELL_PICTURES, stage)
    files = list(meta.get("files") or [])
    _require(stage, path, *files)
    empty = [f for f in files if os.path.getsize(os.path.join(path, f)) == 0]
    if empty:
        raise ArtifactError(stage, path, f"empty picture(s) {', '.join(empty)}")
    return CellPicturesArtifact(path, files)


# --------------------------------------------------------------------------------------------- Model


@dataclasses.dataclass(frozen=True)
class ModelArtifact(_RunArtifact):
    @property
    def run_dir(self) -> str:
        """The trainer's output directory (model.keras, tensorboard/, ... in the trainer's own layout)."""
        return os.path.join(self.path, _RUN_DIR)

    @property
    def keras_model_path(self) -> str:
        return os.path.join(self.run_dir, _KERAS_MODEL_FILE)

    @property
    def vocab_path(self) -> Optional[str]:
        path = os.path.join(self.run_dir, _VOCAB_FILE)
        return path if os.path.isfile(path) else None

    @property
    def saved_model_dir(self) -> Optional[str]:
        d = os.path.join(self.path, _SAVED_MODEL_DIR)
        return d if os.path.isdir(d) else None


def model_writer(path: str, stage: str) -> ContextManager[str]:
    """Yields the temporary artifact directory; train into `run_dir_of(d)`, then call `finish_model`."""
    return _verified_directory(path, read_model, stage)


def run_dir_of(writer_dir: str) -> str:
    return os.path.join(writer_dir, _RUN_DIR)


def keras_model_path_of(writer_dir: str) -> str:
    return os.path.join(writer_dir, _RUN_DIR, _KERAS_MODEL_FILE)


def vocab_path_of(writer_dir: str) -> str:
    return os.path.join(writer_dir, _RUN_DIR, _VOCAB_FILE)


def saved_model_dir_of(writer_dir: str) -> str:
    return os.path.join(writer_dir, _SAVED_MODEL_DIR)


def adopt_saved_model(writer_dir: str) -> None:
    """Moves the SavedModel a trainer exported into its run dir (``run/saved_model``) to the artifact's top."""
    exported = os.path.join(run_dir_of(writer_dir), _SAVED_MODEL_DIR)
    if os.path.isdir(exported):
        os.replace(exported, saved_model_dir_of(writer_dir))


def finish_model(writer_dir: str, kind: str, genotype: gt.AnyGenotype, lineage: Dict[str, Any],
                 metrics: Dict[str, Any], stage: str) -> None:
    gt.save_genotype(genotype, os.path.join(writer_dir, _GENOTYPE_FILE), lineage)
    write_json(os.path.join(writer_dir, _METRICS_FILE), metrics)
    _write_metadata(writer_dir, MODEL, stage, {"kind": kind, "has_saved_model": os.path.isdir(
        saved_model_dir_of(writer_dir))})


def read_model(path: str, stage: str) -> ModelArtifact:
    meta = read_metadata(path, MODEL, stage)
    _require(stage, path, os.path.join(_RUN_DIR, _KERAS_MODEL_FILE), _GENOTYPE_FILE, _METRICS_FILE)
    if meta.get("has_saved_model"):  # TF Serving's layout: saved_model/<version>/saved_model.pb
        versions = numeric_versions(os.path.join(path, _SAVED_MODEL_DIR))
        _require(stage, path, os.path.join(_SAVED_MODEL_DIR, str(max(versions, default=1)), SAVED_MODEL_FILE))
    return ModelArtifact(path, meta)


# --------------------------------------------------------------------------------------------- Metrics


def tensorboard_dir_of(writer_dir: str) -> str:
    return os.path.join(writer_dir, _TENSORBOARD_DIR)


def sibling_log_dir(artifact_path: str, stage: str) -> str:
    """TensorBoard logs of a stage whose artifacts have no log directory (ingest, derive): beside the artifact,
    in the same task directory, so they too are under the pipeline root."""
    return os.path.join(os.path.dirname(os.path.abspath(artifact_path)), _TENSORBOARD_DIR, stage)


def metrics_writer(path: str, stage: str) -> ContextManager[str]:
    """Yields the temporary artifact directory (log TensorBoard to `tensorboard_dir_of(d)`); call
    `finish_metrics` inside the block."""
    return _verified_directory(path, read_metrics, stage)


def finish_metrics(writer_dir: str, metrics: Dict[str, Any], stage: str) -> None:
    write_json(os.path.join(writer_dir, _METRICS_FILE), metrics)
    _write_metadata(writer_dir, METRICS, stage, {})


def write_metrics(path: str, metrics: Dict[str, Any], stage: str) -> Dict[str, Any]:
    with metrics_writer(path, stage) as tmp:
        finish_metrics(tmp, metrics, stage)
    return read_metrics(path, stage)


def read_metrics(path: str, stage: str) -> Dict[str, Any]:
    read_metadata(path, METRICS, stage)
    data = _read_json(stage, path, os.path.join(path, _METRICS_FILE))
    if not isinstance(data, dict):
        raise ArtifactError(stage, path, "metrics.json must hold a JSON object")
    return data


# --------------------------------------------------------------------------------------------- KFP metadata


def _directory_size(path: str) -> Dict[str, int]:
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names]
    return {"size_bytes": int(sum(sizes)), "num_files": len(sizes)}


def genotype_sha256(genotype: gt.AnyGenotype) -> str:
    """A hash of the genotype itself (its canonical JSON), equal for equal cells whatever file holds them."""
    return hashlib.sha256(json.dumps(genotype.to_dict(), sort_keys=True).encode()).hexdigest()


def _lineage_summary(lineage: Dict[str, Any]) -> Dict[str, Any]:
    """The lineage fields worth a column in the Kubeflow UI (scalars only; the flags stay in the artifact)."""
    keep = ("stage", "seed", "search_uri", "dataset", "dataset_hash", "epochs_done", "resumed_after_epoch",
            "selection_metric", "selection_value", "selection_uri", "genotype_uri", "eval_dataset", "eval_dataset_hash",
            "transfer_dataset")
    return {k: lineage[k] for k in keep if k in lineage and isinstance(lineage[k], (str, int, float, bool))}


def kfp_metadata(path: str, stage: str = "kfp") -> Dict[str, Any]:
    """What the Kubeflow UI (and its lineage view) shows of the artifact at `path`, as KFP artifact metadata: its
    type, the stage that wrote it, its size, and per type its hashes, seed and lineage (a JSON object of scalars,
    lists and small objects; artifact.json in the directory stays the full record)."""
    meta = _read_json(stage, path, os.path.join(path, METADATA_FILE))
    type_name = meta.get("type")
    out: Dict[str, Any] = {"darts_type": type_name, "darts_stage": meta.get("stage"),
                           "format_version": meta.get("version"), **_directory_size(path)}
    if type_name == DATASET:
        data = read_dataset(path, stage)
        out.update(kind=data.kind, name=data.name, dataset_hash=data.dataset_hash,
                   splits={k: {"size": v["size"], "sha256": v["sha256"]} for k, v in data.metadata["splits"].items()})
        for key in ("num_classes", "image_shape", "size_unit"):
            if key in data.metadata:
                out[key] = data.metadata[key]
    elif type_name == SEARCH_RUN:
        found = read_search_run(path, stage)
        genotype = gt.load_genotype_file(found.genotype_path, kind=found.kind)
        out.update(kind=found.kind, genotype=str(genotype), genotype_sha256=genotype_sha256(genotype),
                   alphas_sha256=sha256_file(os.path.join(path, _ALPHAS_FILE)), primitives=found.primitives,
                   **_lineage_summary(found.lineage))
    elif type_name == GENOTYPE:
        chosen = read_genotype(path, stage)
        out.update(kind=chosen.genotype.kind, genotype=str(chosen.genotype),
                   genotype_sha256=genotype_sha256(chosen.genotype), **_lineage_summary(chosen.lineage))
    elif type_name == CELL_PICTURES:
        pictures = read_cell_pictures(path, stage)
        out.update(files=pictures.files, genotype=meta.get("genotype"))
    elif type_name == MODEL:
        trained = read_model(path, stage)
        with open(trained.genotype_path) as f:
            record = json.load(f)
        genotype = gt.genotype_from_dict(record, kind=trained.kind)
        out.update(kind=trained.kind, has_saved_model=bool(trained.saved_model_dir),
                   keras_model_sha256=sha256_file(trained.keras_model_path), genotype=str(genotype),
                   genotype_sha256=genotype_sha256(genotype), **_lineage_summary(record.get("metadata") or {}))
    return out
