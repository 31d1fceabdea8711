"""The pipeline stages as Kubeflow Pipelines v2 lightweight Python components.

Each function has typed artifact inputs/outputs, does its imports inside the body, and its body is one call
into the stage's executor in `components` (installed as ``darts_tf_pipelines.components`` by the image, or by
``pip install -e .`` locally), then one call that describes what it wrote to KFP. `make_components(image,
gpu_image)` turns them into `dsl.component`s; the images are compile options (``python -m pipelines.compile --image
... --gpu_image ...``), since KFP fixes the image per component at compile time.

KFP's own artifact classes carry our types: Dataset -> dsl.Dataset, Model -> dsl.Model, Metrics -> dsl.Metrics,
and SearchRun / Genotype / CellPictures -> dsl.Artifact (each directory's artifact.json names its real type, and the
readers check it). Every output's KFP `.metadata` holds its type, size, hashes, seed and lineage
(``components.reports.describe``), and the genotype card, the cell pictures and the selection table are also
``dsl.Markdown`` / ``dsl.HTML`` artifacts, which the Kubeflow UI renders.

The long stages (search, evaluate, transfer) take `state_root`, `run_id` (KFP's ``{{$.pipeline_job_uuid}}``) and
`task` (``{{$.pipeline_task_name}}``): with a state root they train in a state directory named by these (and the
seed), so that a retried pod resumes (``components.state``). Integer parameters are typed `int` (NUMBER_INTEGER in
the spec); the stage configs are dicts (STRUCT: their numbers arrive as floats, and `darts_tf.task.config_from_dict`
turns them back into the config dataclasses' ints).

No `from __future__ import annotations` here: KFP reads the annotations as objects.
"""

import dataclasses
from typing import Callable, Dict, List, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

DEFAULT_IMAGE = "darts-tf:latest"


def ingest(config: dict, dataset: Output[Dataset]):
    """Materialises the dataset splits with their sizes and hashes."""
    from darts_tf_pipelines.components import ingest as stage, reports

    stage.run(dataset.path, config)
    reports.describe(dataset)


def search(dataset: Input[Dataset], kind: str, seed: int, config: dict, state_root: str, run_id: str, task: str,
           search_run: Output[Artifact]):
    """One DARTS search -> alphas, genotype JSON, TensorBoard logs (resumable under state_root)."""
    from darts_tf_pipelines.components import reports, search as stage, state

    stage.run(dataset.path, search_run.path, kind=kind, seed=seed, config=config,
              state_dir=state.state_dir(state_root, run_id, task, seed))
    reports.describe(search_run)


def derive(search_run: Input[Artifact], genotype: Output[Artifact], pictures: Output[Artifact],
           genotype_card: Output[Markdown], cell_pictures: Output[HTML]):
    """Alphas -> genotype with lineage + Graphviz pictures of its cells (+ their Markdown card and HTML page)."""
    from darts_tf_pipelines.components import derive as stage, reports

    chosen, drawn = stage.run(search_run.path, genotype.path, pictures.path)
    reports.write_page(genotype_card.path, reports.genotype_markdown(chosen, "Derived genotype"))
    reports.write_page(cell_pictures.path, reports.pictures_html(drawn, chosen))
    reports.describe(genotype, pictures)


def select(dataset: Input[Dataset], candidates: Input[List[Artifact]], kind: str, config: dict,
           best_genotype: Output[Artifact], selection: Output[Metrics], selection_table: Output[Markdown],
           genotype_card: Output[Markdown]):
    """Short-trains each candidate, picks the best on a validation split of train (+ the table as Markdown)."""
    from darts_tf_pipelines.components import reports, select as stage

    chosen, table = stage.run(dataset.path, [c.path for c in candidates], best_genotype.path, selection.path,
                              kind=kind, config=config, log_metric=selection.log_metric)
    reports.write_page(selection_table.path, reports.selection_markdown(table))
    reports.write_page(genotype_card.path, reports.genotype_markdown(chosen, "Selected genotype"))
    reports.describe(best_genotype)


def evaluate(dataset: Input[Dataset], genotype: Input[Artifact], kind: str, config: dict, state_root: str,
             run_id: str, task: str, model: Output[Model], metrics: Output[Metrics]):
    """Full training + test metrics + the model and its SavedModel (resumable under state_root)."""
    from darts_tf_pipelines.components import evaluate as stage, reports, state

    stage.run(dataset.path, genotype.path, model.path, metrics.path, kind=kind, config=config,
              log_metric=metrics.log_metric, state_dir=state.state_dir(state_root, run_id, task))
    reports.describe(model)


def transfer(genotype: Input[Artifact], kind: str, config: dict, state_root: str, run_id: str, task: str,
             model: Output[Model], metrics: Output[Metrics]):
    """The chosen cell on a dataset its config names (CNN: ImageNet-style; resumable under state_root)."""
    from darts_tf_pipelines.components import reports, state, transfer as stage

    stage.run(genotype.path, model.path, metrics.path, kind=kind, config=config, log_metric=metrics.log_metric,
              state_dir=state.state_dir(state_root, run_id, task))
    reports.describe(model)


def transfer_text(dataset: Input[Dataset], genotype: Input[Artifact], kind: str, config: dict, state_root: str,
                  run_id: str, task: str, model: Output[Model], metrics: Output[Metrics]):
    """The chosen cell on another ingested dataset (RNN: the WikiText-2 corpus; resumable under state_root)."""
    from darts_tf_pipelines.components import reports, state, transfer as stage

    stage.run(genotype.path, model.path, metrics.path, kind=kind, config=config, dataset=dataset.path,
              log_metric=metrics.log_metric, state_dir=state.state_dir(state_root, run_id, task))
    reports.describe(model)


STAGE_FUNCTIONS = (ingest, search, derive, select, evaluate, transfer, transfer_text)
# The stages that may train on GPUs: they run in the GPU image when one is given (and their preset asks for GPUs).
GPU_CAPABLE = ("search", "select", "evaluate", "transfer", "transfer_text")


@dataclasses.dataclass(frozen=True)
class Components:
    ingest: Callable
    search: Callable
    derive: Callable
    select: Callable
    evaluate: Callable
    transfer: Callable
    transfer_text: Callable


def make_components(image: str = DEFAULT_IMAGE, gpu_image: Optional[str] = None,
                    gpu_stages: tuple = ()) -> Components:
    """The stages as KFP components: those named in `gpu_stages` run in `gpu_image` (when given), the others in
    `image`; both images must have darts_tf, darts_tf_pipelines and kfp installed (the Dockerfile's targets)."""
    made: Dict[str, Callable] = {
        fn.__name__: dsl.component(fn, base_image=gpu_image if gpu_image and fn.__name__ in gpu_stages else image,
                                   install_kfp_package=False) for fn in STAGE_FUNCTIONS}
    return Components(**made)
