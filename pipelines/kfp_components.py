"""The pipeline stages as Kubeflow Pipelines v2 lightweight Python components.

Each function has typed artifact inputs/outputs, does its imports inside the body, and its body is one call
into the stage's executor in `components` (which the container image, or the local environment, has
installed). `make_components(image)` turns them into `dsl.component`s for a container image; the image is a
compile option (`python -m pipelines.compile --image ...`), since KFP fixes it per component at compile time.
KFP's own artifact classes carry our types: Dataset -> dsl.Dataset, Model -> dsl.Model, Metrics ->
dsl.Metrics, and SearchRun / Genotype / CellPictures -> dsl.Artifact (each directory's artifact.json names
its real type, and the readers check it).

No `from __future__ import annotations` here: KFP reads the annotations as objects.
"""

import dataclasses
from typing import Callable, Dict, List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

DEFAULT_IMAGE = "darts-tf:latest"


def ingest(config: dict, dataset: Output[Dataset]):
    """Materialises the dataset splits with their sizes and hashes."""
    from components import ingest as stage

    stage.run(dataset.path, config)


def search(dataset: Input[Dataset], kind: str, seed: int, config: dict, search_run: Output[Artifact]):
    """One DARTS search -> alphas, genotype JSON, TensorBoard logs."""
    from components import search as stage

    stage.run(dataset.path, search_run.path, kind=kind, seed=seed, config=config)


def derive(search_run: Input[Artifact], genotype: Output[Artifact], pictures: Output[Artifact]):
    """Alphas -> genotype with lineage + Graphviz pictures of its cells."""
    from components import derive as stage

    stage.run(search_run.path, genotype.path, pictures.path)


def select(dataset: Input[Dataset], candidates: Input[List[Artifact]], kind: str, config: dict,
           best_genotype: Output[Artifact], selection: Output[Metrics]):
    """Short-trains each candidate, picks the best on a validation split of train."""
    from components import select as stage

    stage.run(dataset.path, [c.path for c in candidates], best_genotype.path, selection.path, kind=kind,
              config=config, log_metric=selection.log_metric)


def evaluate(dataset: Input[Dataset], genotype: Input[Artifact], kind: str, config: dict, model: Output[Model],
             metrics: Output[Metrics]):
    """Full training + test metrics + the model and its SavedModel."""
    from components import evaluate as stage

    stage.run(dataset.path, genotype.path, model.path, metrics.path, kind=kind, config=config,
              log_metric=metrics.log_metric)


def transfer(genotype: Input[Artifact], kind: str, config: dict, model: Output[Model], metrics: Output[Metrics]):
    """The chosen cell on a dataset its config names (CNN: ImageNet-style)."""
    from components import transfer as stage

    stage.run(genotype.path, model.path, metrics.path, kind=kind, config=config, log_metric=metrics.log_metric)


def transfer_text(dataset: Input[Dataset], genotype: Input[Artifact], kind: str, config: dict,
                  model: Output[Model], metrics: Output[Metrics]):
    """The chosen cell on another ingested dataset (RNN: the WikiText-2 corpus)."""
    from components import transfer as stage

    stage.run(genotype.path, model.path, metrics.path, kind=kind, config=config, dataset=dataset.path,
              log_metric=metrics.log_metric)


STAGE_FUNCTIONS = (ingest, search, derive, select, evaluate, transfer, transfer_text)


@dataclasses.dataclass(frozen=True)
class Components:
    ingest: Callable
    search: Callable
    derive: Callable
    select: Callable
    evaluate: Callable
    transfer: Callable
    transfer_text: Callable


def make_components(image: str = DEFAULT_IMAGE) -> Components:
    """The stages as KFP components running in `image` (which must have darts_tf, components and kfp)."""
    made: Dict[str, Callable] = {
        fn.__name__: dsl.component(fn, base_image=image, install_kfp_package=False) for fn in STAGE_FUNCTIONS}
    return Components(**made)
