"""The DARTS pipeline, defined once for every task family as a Kubeflow Pipelines v2 graph.

    ingest -> ParallelFor(seed in seeds): search -> derive -> select (dsl.Collected genotypes)
           -> evaluate -> transfer

A task whose transfer trains on another ingested dataset (`darts_tf.tasks.Task.transfer_reads_dataset`: the
RNN's WikiText-2) gets a second ingest, `ingest-transfer`, feeding the `transfer-text` component.
Pipeline parameters are `seeds` (List[int]: the loop items are integers), one dict per stage (`search_config`, ...)
and `state_root`, with the chosen preset as their defaults. How each task runs on the cluster is the preset's
`cluster` setting, applied here at compile time (`configure_task`): CPU / memory requests and limits, accelerator
type and count, node selector and tolerations (kfp-kubernetes), the retry policy, a PVC holding the state root, and
the image (`build_pipeline(..., image=..., gpu_image=...)`: the GPU image for the stages that ask for GPUs).
No `from __future__ import annotations`: KFP reads the pipeline parameters' annotations as objects.
"""

import inspect
from typing import Callable, List, Optional

from kfp import dsl

from darts_tf.tasks import get_task

from . import presets
from .kfp_components import DEFAULT_IMAGE, make_components

TRANSFER_INGEST_CONFIG = "transfer_ingest_config"  # the parameter of the second ingest, when the task has one
SEED_LOOP = "search-seeds"
# The annotations KFP types the parameters by; any other parameter is typed by its default's type (dict -> STRUCT).
PARAMETER_TYPES = {"seeds": List[int], presets.STATE_ROOT: str}


def pipeline_name(kind: str) -> str:
    return f"darts-{kind}"


def configure_task(task: dsl.PipelineTask, runtime: presets.StageRuntime, accelerator: Optional[str] = None,
                   state_pvc: str = "", state_root: str = "") -> dsl.PipelineTask:
    """Applies a stage's cluster settings to its task: resources (KFP's set_cpu_request ... set_accelerator_limit),
    placement (kfp-kubernetes node selector, tolerations), retries, and the PVC the state root lives on.
    `accelerator` overrides the preset's accelerator type (``--accelerator``)."""
    r, retry = runtime.resources, runtime.retry
    for value, setter in ((r.cpu_request, task.set_cpu_request), (r.cpu_limit, task.set_cpu_limit),
                          (r.memory_request, task.set_memory_request), (r.memory_limit, task.set_memory_limit)):
        if value:
            setter(str(value))
    if r.gpus:
        task.set_accelerator_type(accelerator or r.accelerator)
        task.set_accelerator_limit(int(r.gpus))
    if r.node_selector or r.tolerations or state_pvc:
        from kfp import kubernetes

        for key, value in sorted(r.node_selector.items()):
            kubernetes.add_node_selector(task, label_key=key, label_value=str(value))
        for toleration in r.tolerations:
            kubernetes.add_toleration(task, **toleration)
        if state_pvc:
            kubernetes.mount_pvc(task, pvc_name=state_pvc, mount_path=state_root)
    if retry.num_retries:
        task.set_retry(num_retries=int(retry.num_retries), backoff_duration=retry.backoff_duration,
                       backoff_factor=float(retry.backoff_factor), backoff_max_duration=retry.backoff_max_duration)
    return task


def build_pipeline(kind: str, config: Optional[presets.PipelineConfig] = None, image: str = DEFAULT_IMAGE,
                   caching: bool = True, gpu_image: Optional[str] = None, accelerator: Optional[str] = None
                   ) -> Callable:
    """The `dsl.pipeline` for `kind` ('cnn' or 'rnn'), defaults and cluster settings from `config` (the smoke
    preset if None). Stages asking for GPUs run in `gpu_image` when given, every other stage in `image`."""
    if kind not in presets.PIPELINES:
        raise ValueError(f"Unknown pipeline {kind!r}. Known: {', '.join(presets.PIPELINES)}.")
    task = get_task(kind)
    config = config or presets.get_preset(kind, "smoke")
    if config.kind != kind:
        raise ValueError(f"A {config.kind} preset cannot configure the {kind} pipeline.")
    defaults = presets.stage_params(config)
    if task.transfer_reads_dataset and TRANSFER_INGEST_CONFIG not in defaults:
        raise ValueError(f"The {kind} transfer trains on another ingested dataset: its preset needs a transfer_ingest "
                         f"setting (an IngestConfig). Received settings: {', '.join(defaults)}")
    cluster = config.cluster
    gpu_stages = tuple(s for s in presets.GPU_STAGES if cluster.runtime(s).resources.gpus)
    c = make_components(image, gpu_image, gpu_stages + (("transfer_text",) if "transfer" in gpu_stages else ()))

    def run_as(pipeline_task, stage: str, display_name: str):
        """The stage's cluster settings, caching and display name; the resumable stages also get the state PVC."""
        pipeline_task.set_caching_options(caching)
        pipeline_task.set_display_name(display_name)
        pvc = cluster.state_pvc if stage in presets.RESUMABLE_STAGES else ""
        return configure_task(pipeline_task, cluster.runtime(stage), accelerator, pvc, cluster.state_root)

    def darts_pipeline(*values):
        # KFP calls the pipeline with one channel per parameter, in the order of the signature below.
        p = dict(zip(defaults, values))
        # KFP resolves these in each task: the state directory of a retried task is that of its first attempt.
        resumable = dict(state_root=p[presets.STATE_ROOT], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                         task=dsl.PIPELINE_TASK_NAME_PLACEHOLDER)
        data = run_as(c.ingest(config=p["ingest_config"]), "ingest", "ingest")
        with dsl.ParallelFor(p["seeds"], parallelism=cluster.seed_parallelism or None, name=SEED_LOOP) as seed:
            found = run_as(c.search(dataset=data.outputs["dataset"], kind=kind, seed=seed, config=p["search_config"],
                                    **resumable), "search", "search")
            derived = run_as(c.derive(search_run=found.outputs["search_run"]), "derive", "derive")
        chosen = run_as(c.select(dataset=data.outputs["dataset"], candidates=dsl.Collected(derived.outputs["genotype"]),
                                 kind=kind, config=p["select_config"]), "select", "select")
        final = run_as(c.evaluate(dataset=data.outputs["dataset"], genotype=chosen.outputs["best_genotype"],
                                  kind=kind, config=p["evaluate_config"], **resumable), "evaluate", "evaluate")
        if task.transfer_reads_dataset:
            other = run_as(c.ingest(config=p[TRANSFER_INGEST_CONFIG]), "transfer_ingest", "ingest-transfer")
            moved = c.transfer_text(dataset=other.outputs["dataset"], genotype=chosen.outputs["best_genotype"],
                                    kind=kind, config=p["transfer_config"], **resumable)
        else:
            moved = c.transfer(genotype=chosen.outputs["best_genotype"], kind=kind, config=p["transfer_config"],
                               **resumable)
        run_as(moved, "transfer", "transfer").after(final)

    darts_pipeline.__signature__ = inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value,
                          annotation=PARAMETER_TYPES.get(name, type(value)))
        for name, value in defaults.items()])
    return dsl.pipeline(name=pipeline_name(kind), description=config.description)(darts_pipeline)
