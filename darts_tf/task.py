"""What a DARTS task family is (CNN on images, RNN on text): the `Task` base class, and `register_task`, with which a
family's ``darts_tf/<kind>/task.py`` registers its task (``darts_tf.tasks.get_task`` looks it up).

A task knows its data (the kind of ``Dataset`` artifact it reads and how to read it), its search space
(primitives, alpha names), its configs (one dataclass per pipeline stage) and how each stage's library call is
made: the search, the short training that selects a candidate, the full training that evaluates it, the
transfer to another dataset and the check of an exported SavedModel. The pipeline stages (``components/``) and
the pipeline (``pipelines/``) ask ``get_task(kind)`` and never switch on the kind, as the trainer of
tensorflow/models ``official/core/base_task.py`` never switches on its task.

Importing this module loads neither TensorFlow nor Keras.
Stage settings arrive as plain dicts (what a pipeline passes); `config_from_dict` turns them into the
family's config dataclasses, refusing unknown keys.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from typing import Any, ClassVar, Dict, List, Optional, Protocol, Tuple, Type, TypeVar

T = TypeVar("T")

class Dataset(Protocol):
    """What a task reads of an ingested dataset (``components.artifacts.DatasetArtifact``)."""

    path: str

    @property
    def kind(self) -> str: ...  # 'images' or 'text'

    @property
    def name(self) -> str: ...

    @property
    def dataset_hash(self) -> str: ...


class DataKindError(ValueError):
    """A dataset of another kind than the task reads (images for a text task, ...)."""

    def __init__(self, task: str, path: str, found: str, expected: str):
        self.problem = f"holds {found} data; the {task} task reads {expected}"
        super().__init__(f"Dataset {path!r} {self.problem}. Ingest a {expected} dataset for it.")


@dataclasses.dataclass(frozen=True)
class SearchOutcome:
    """A finished search: the genotype its final alphas encode, the alphas by name, the search's metrics, the
    settings it ran with (as recorded in the lineage) and the candidate operations."""

    genotype: Any
    alphas: Dict[str, Any]
    metrics: Dict[str, Any]
    flags: Dict[str, Any]
    primitives: List[str]


class Task(abc.ABC):
    """A DARTS task family: its data, search space, configs, and the library calls of every pipeline stage."""

    kind: ClassVar[str]  # the genotype kind: 'cnn', 'rnn'
    data_kind: ClassVar[str]  # the Dataset artifact kind it reads: 'images', 'text'
    alpha_names: ClassVar[Tuple[str, ...]]  # the architecture parameters a search saves
    optional_alpha_names: ClassVar[Tuple[str, ...]] = ()  # saved all together by some searches only (CNN: PC-DARTS' betas)
    search_config: ClassVar[type]  # settings of `search`
    select_config: ClassVar[type]  # settings of `short_train`
    evaluate_config: ClassVar[type]  # settings of `train`
    transfer_config: ClassVar[type]  # settings of `transfer`
    selection_metric: ClassVar[str]  # the `short_train` score that picks the best candidate
    higher_is_better: ClassVar[bool]
    transfer_reads_dataset: ClassVar[bool]  # True: `transfer` trains on another ingested Dataset

    # -------------------------------------------------------------------------------------- data

    def check_data(self, dataset: Dataset) -> None:
        """Raises `DataKindError` unless `dataset` holds this task's kind of data."""
        if dataset.kind != self.data_kind:
            raise DataKindError(self.kind, dataset.path, dataset.kind, self.data_kind)

    @abc.abstractmethod
    def load_data(self, dataset: Dataset) -> Any:
        """The checked dataset in the form the family's library reads (``ImageData``, ``Corpus``)."""

    # -------------------------------------------------------------------------------------- search

    @abc.abstractmethod
    def primitives(self, config: Any) -> List[str]:
        """The candidate operations of a search with `config` (a `search_config`)."""

    def search_data_settings(self, dataset: Dataset) -> Dict[str, Any]:
        """`search_config` fields that say where the data is (beyond its name)."""
        return {}

    @abc.abstractmethod
    def run_search(self, config: Any, data: Any, extra_flags: Dict[str, Any], verbose: Any) -> Dict[str, Any]:
        """The family's ``run_search`` on loaded `data`: {'genotype', 'alphas', 'metrics', ...}."""

    def search(self, dataset: Dataset, values: Optional[Dict[str, Any]], seed: int, output_dir: str,
               stage: str = "search", verbose: Any = 2, resume: bool = False) -> SearchOutcome:
        """One DARTS search on `dataset` with the settings `values`, written to `output_dir`; with `resume`, a
        checkpoint there (a retried pipeline stage's) is continued from its last finished epoch."""
        data = self.load_data(dataset)
        config = config_from_dict(self.search_config, values, stage, seed=seed, output_dir=output_dir,
                                  dataset=dataset.name, resume=resume, **self.search_data_settings(dataset))
        extra = {"dataset_hash": dataset.dataset_hash}
        result = self.run_search(config, data, extra, verbose)
        flags = {k: v for k, v in {**config.to_dict(), **extra}.items() if k != "output_dir"}
        return SearchOutcome(result["genotype"], result["alphas"], result["metrics"], flags, self.primitives(config))

    # -------------------------------------------------------------------------------------- training

    @abc.abstractmethod
    def short_train(self, dataset: Dataset, genotype_path: str, values: Optional[Dict[str, Any]],
                    tensorboard_dir: str, stage: str = "select") -> Dict[str, Any]:
        """Trains the genotype in `genotype_path` briefly from scratch and scores it on a validation split
        carved from the training data (never the test set); the scores hold `selection_metric`."""

    @abc.abstractmethod
    def train(self, dataset: Dataset, genotype_path: str, values: Optional[Dict[str, Any]], run_dir: str,
              stage: str = "evaluate", resume: bool = False) -> Dict[str, Any]:
        """Trains the genotype fully on `dataset` into `run_dir` (model.keras, tensorboard/, saved_model/, ...
        in ``darts_tf.run_files``' layout) and returns its test metrics, with the dataset's name as 'dataset'.
        With `resume`, a checkpoint in `run_dir` is continued from its last finished epoch."""

    @abc.abstractmethod
    def transfer(self, dataset: Optional[Dataset], genotype_path: str, values: Optional[Dict[str, Any]],
                 run_dir: str, stage: str = "transfer", resume: bool = False) -> Dict[str, Any]:
        """Trains the genotype on another dataset (`dataset` when `transfer_reads_dataset`, else one the
        settings name), as `train`."""

    # -------------------------------------------------------------------------------------- serving

    @abc.abstractmethod
    def load_predictor(self, export_dir: str) -> Any:
        """The family's predictor of a SavedModel that `train` exported."""

    @abc.abstractmethod
    def check_export(self, export_dir: str, dataset: Optional[Dataset] = None) -> Dict[str, Any]:
        """Loads the SavedModel in `export_dir` and runs it on a few examples of `dataset` (or dummy inputs);
        raises RuntimeError when its outputs are not distributions. Returns what it measured."""


# ------------------------------------------------------------------------------------------ registry

REGISTERED: Dict[str, Type[Task]] = {}


def register_task(cls: Type[Task]) -> Type[Task]:
    """Class decorator: makes `cls` the task of ``cls.kind``."""
    known = REGISTERED.get(cls.kind)
    if known is not None and known is not cls:
        raise ValueError(f"A task of kind {cls.kind!r} is already registered ({known.__name__}).")
    REGISTERED[cls.kind] = cls
    return cls


# ------------------------------------------------------------------------------------------ configs


def config_from_dict(cls: Type[T], values: Optional[Dict[str, Any]], stage: str, **fixed: Any) -> T:
    """`cls(**values, **fixed)`, refusing keys `cls` does not have (the error lists the known ones).

    `fixed` are the fields the stage sets itself (output_dir, seed, ...); they win over `values`.
    """
    values = dict(values or {})
    check_settings(cls, values, stage)
    values.update(fixed)
    return cls(**coerce_numbers(cls, values))


def check_settings(cls: type, values: Dict[str, Any], stage: str) -> None:
    """Refuses keys of `values` that dataclass `cls` has no field for; the error lists the known ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"[stage '{stage}'] unknown {cls.__name__} setting(s) {', '.join(unknown)}. "
                         f"Known: {', '.join(names)}")


def coerce_numbers(cls: type, values: Dict[str, Any]) -> Dict[str, Any]:
    """Integral floats back to int for `int` fields of dataclass `cls`.

    KFP passes dict parameters as protobuf Structs, whose numbers are all doubles: `{"epochs": 1}` arrives
    as `{"epochs": 1.0}`.
    """
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for name, value in values.items():
        hint = hints.get(name)
        if typing.get_origin(hint) is typing.Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = args[0] if len(args) == 1 else hint
        if hint is int and isinstance(value, float) and value.is_integer():
            out[name] = int(value)
    return out
