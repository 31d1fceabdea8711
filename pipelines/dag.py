"""The CNN and RNN DARTS pipelines, defined once as Kubeflow Pipelines v2 graphs.

    ingest -> ParallelFor(seed in seeds): search -> derive -> select (dsl.Collected genotypes)
           -> evaluate -> transfer

Pipeline parameters are `seeds` and one dict per stage (`search_config`, ...), with the chosen preset as
their defaults; the container image is fixed at build time (`build_pipeline(..., image=...)`).
No `from __future__ import annotations`: KFP reads the pipeline parameters' annotations as objects.
"""

from typing import Callable, Optional

from kfp import dsl

from pipelines import presets
from pipelines.kfp_components import DEFAULT_IMAGE, make_components

PIPELINE_NAMES = {"cnn": "darts-cnn", "rnn": "darts-rnn"}


def build_pipeline(kind: str, config: Optional[presets.PipelineConfig] = None, image: str = DEFAULT_IMAGE,
                   caching: bool = True) -> Callable:
    """The `dsl.pipeline` for `kind` ('cnn' or 'rnn'), defaults from `config` (the smoke preset if None)."""
    if kind not in presets.PIPELINES:
        raise ValueError(f"Unknown pipeline {kind!r}. Known: {', '.join(presets.PIPELINES)}.")
    config = config or presets.get_preset(kind, "smoke")
    if config.kind != kind:
        raise ValueError(f"A {config.kind} preset cannot configure the {kind} pipeline.")
    p = presets.stage_params(config)
    c = make_components(image)

    def cache(task):
        task.set_caching_options(caching)
        return task

    if kind == "cnn":
        @dsl.pipeline(name=PIPELINE_NAMES["cnn"],
                      description="DARTS CNN: search over seeds, select, evaluate, transfer (Liu et al. 2019)")
        def cnn_pipeline(seeds: list = p["seeds"], ingest_config: dict = p["ingest_config"],
                         search_config: dict = p["search_config"], select_config: dict = p["select_config"],
                         evaluate_config: dict = p["evaluate_config"], transfer_config: dict = p["transfer_config"]):
            data = cache(c.ingest(config=ingest_config)).set_display_name("ingest")
            with dsl.ParallelFor(seeds, name="search-seeds") as seed:
                found = cache(c.search(dataset=data.outputs["dataset"], kind="cnn", seed=seed,
                                       config=search_config)).set_display_name("search")
                derived = cache(c.derive(search_run=found.outputs["search_run"])).set_display_name("derive")
            chosen = cache(c.select(dataset=data.outputs["dataset"],
                                    candidates=dsl.Collected(derived.outputs["genotype"]), kind="cnn",
                                    config=select_config)).set_display_name("select")
            final = cache(c.evaluate(dataset=data.outputs["dataset"], genotype=chosen.outputs["best_genotype"],
                                     kind="cnn", config=evaluate_config)).set_display_name("evaluate")
            moved = cache(c.transfer(genotype=chosen.outputs["best_genotype"], config=transfer_config))
            moved.set_display_name("transfer").after(final)

        return cnn_pipeline

    @dsl.pipeline(name=PIPELINE_NAMES["rnn"],
                  description="DARTS RNN: search over seeds, select, evaluate on PTB, transfer to WikiText-2")
    def rnn_pipeline(seeds: list = p["seeds"], ingest_config: dict = p["ingest_config"],
                     search_config: dict = p["search_config"], select_config: dict = p["select_config"],
                     evaluate_config: dict = p["evaluate_config"],
                     transfer_ingest_config: dict = p["transfer_ingest_config"],
                     transfer_config: dict = p["transfer_config"]):
        data = cache(c.ingest(config=ingest_config)).set_display_name("ingest")
        with dsl.ParallelFor(seeds, name="search-seeds") as seed:
            found = cache(c.search(dataset=data.outputs["dataset"], kind="rnn", seed=seed,
                                   config=search_config)).set_display_name("search")
            derived = cache(c.derive(search_run=found.outputs["search_run"])).set_display_name("derive")
        chosen = cache(c.select(dataset=data.outputs["dataset"], candidates=dsl.Collected(derived.outputs["genotype"]),
                                kind="rnn", config=select_config)).set_display_name("select")
        final = cache(c.evaluate(dataset=data.outputs["dataset"], genotype=chosen.outputs["best_genotype"],
                                 kind="rnn", config=evaluate_config)).set_display_name("evaluate")
        other = cache(c.ingest(config=transfer_ingest_config)).set_display_name("ingest-transfer")
        moved = cache(c.transfer_text(dataset=other.outputs["dataset"], genotype=chosen.outputs["best_genotype"],
                                      config=transfer_config))
        moved.set_display_name("transfer").after(final)

    return rnn_pipeline
