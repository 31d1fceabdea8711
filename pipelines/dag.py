"""The DARTS pipeline, defined once for every task family as a Kubeflow Pipelines v2 graph.

    ingest -> ParallelFor(seed in seeds): search -> derive -> select (dsl.Collected genotypes)
           -> evaluate -> transfer

A task whose transfer trains on another ingested dataset (`darts_tf.tasks.Task.transfer_reads_dataset`: the
RNN's WikiText-2) gets a second ingest, `ingest-transfer`, feeding the `transfer-text` component.
Pipeline parameters are `seeds` and one dict per stage (`search_config`, ...), with the chosen preset as
their defaults; the container image is fixed at build time (`build_pipeline(..., image=...)`).
No `from __future__ import annotations`: KFP reads the pipeline parameters' annotations as objects.
"""

import inspect
from typing import Callable, Optional

from kfp import dsl

from darts_tf.tasks import get_task
from pipelines import presets
from pipelines.kfp_components import DEFAULT_IMAGE, make_components

TRANSFER_INGEST_CONFIG = "transfer_ingest_config"  # the parameter of the second ingest, when the task has one


def pipeline_name(kind: str) -> str:
    return f"darts-{kind}"


def build_pipeline(kind: str, config: Optional[presets.PipelineConfig] = None, image: str = DEFAULT_IMAGE,
                   caching: bool = True) -> Callable:
    """The `dsl.pipeline` for `kind` ('cnn' or 'rnn'), defaults from `config` (the smoke preset if None)."""
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
    c = make_components(image)

    def cache(pipeline_task):
        pipeline_task.set_caching_options(caching)
        return pipeline_task

    def darts_pipeline(*values):
        # KFP calls the pipeline with one channel per parameter, in the order of the signature below.
        p = dict(zip(defaults, values))
        data = cache(c.ingest(config=p["ingest_config"])).set_display_name("ingest")
        with dsl.ParallelFor(p["seeds"], name="search-seeds") as seed:
            found = cache(c.search(dataset=data.outputs["dataset"], kind=kind, seed=seed,
                                   config=p["search_config"])).set_display_name("search")
            derived = cache(c.derive(search_run=found.outputs["search_run"])).set_display_name("derive")
        chosen = cache(c.select(dataset=data.outputs["dataset"], candidates=dsl.Collected(derived.outputs["genotype"]),
                                kind=kind, config=p["select_config"])).set_display_name("select")
        final = cache(c.evaluate(dataset=data.outputs["dataset"], genotype=chosen.outputs["best_genotype"],
                                 kind=kind, config=p["evaluate_config"])).set_display_name("evaluate")
        if task.transfer_reads_dataset:
            other = cache(c.ingest(config=p[TRANSFER_INGEST_CONFIG])).set_display_name("ingest-transfer")
            moved = cache(c.transfer_text(dataset=other.outputs["dataset"], genotype=chosen.outputs["best_genotype"],
                                          kind=kind, config=p["transfer_config"]))
        else:
            moved = cache(c.transfer(genotype=chosen.outputs["best_genotype"], kind=kind, config=p["transfer_config"]))
        moved.set_display_name("transfer").after(final)

    darts_pipeline.__signature__ = inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=type(value))
        for name, value in defaults.items()])
    return dsl.pipeline(name=pipeline_name(kind), description=config.description)(darts_pipeline)
