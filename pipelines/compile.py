"""Compiles a DARTS pipeline to Kubeflow Pipelines v2 YAML, for a cluster.

    python -m pipelines.compile --pipeline cnn --image REGISTRY/darts-tf:TAG-cpu --gpu_image REGISTRY/darts-tf:TAG-gpu \
        --output cnn_pipeline.yaml [--preset paper] [--set search.epochs=25 ...] [--set evaluate.resources.gpus=8] \
        [--accelerator nvidia.com/gpu] [--parallelism 2] [--set cluster.state_root=gs://BUCKET/darts-state]

The stages that ask for GPUs (the preset's `cluster` settings: paper = one per search, select, evaluate, transfer)
run in GPU_IMAGE, the others (and all of them without --gpu_image) in IMAGE; both are built from this repository's
Dockerfile (targets `cpu` and `gpu`). The preset's stage settings become the pipeline parameters' defaults, which
can still be changed per run in the KFP UI or with
`kfp.Client().create_run_from_pipeline_package(path, arguments={...})`; its cluster settings (resources, retries,
node selectors, tolerations, the state PVC) are fixed in the YAML: change them here with --set.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import presets


def compile_pipeline(kind: str, image: str, output: str, config: Optional[presets.PipelineConfig] = None,
                     caching: bool = True, gpu_image: Optional[str] = None, accelerator: Optional[str] = None) -> str:
    from kfp import compiler

    from .dag import build_pipeline

    pipeline = build_pipeline(kind, config, image=image, caching=caching, gpu_image=gpu_image, accelerator=accelerator)
    compiler.Compiler().compile(pipeline, output)
    return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.compile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=presets.PIPELINES, default="cnn")
    parser.add_argument("--image", required=True, help="container image with darts_tf installed (Dockerfile target "
                        "cpu): every stage without GPUs, and all of them without --gpu_image")
    parser.add_argument("--gpu_image", default=None, help="the image of the stages that ask for GPUs (Dockerfile "
                        "target gpu)")
    parser.add_argument("--accelerator", default=None, help="the accelerator type of every stage that asks for GPUs, "
                        "instead of the preset's (e.g. nvidia.com/gpu, amd.com/gpu)")
    parser.add_argument("--parallelism", type=int, default=None, help="at most this many searches at once (the seed "
                        "loop's parallelism; same as --set cluster.seed_parallelism=N)")
    parser.add_argument("--output", required=True, help="where to write the pipeline YAML")
    parser.add_argument("--preset", default="paper", help="the parameters' defaults: paper (default) or smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-cache", action="store_true", help="compile with caching disabled on every task")
    args = parser.parse_args(argv)
    try:
        config = presets.override(presets.get_preset(args.pipeline, args.preset), args.overrides)
        if args.parallelism is not None:
            config.cluster.seed_parallelism = args.parallelism
        presets.validate_stages(config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    compile_pipeline(args.pipeline, args.image, args.output, config, caching=not args.no_cache,
                     gpu_image=args.gpu_image, accelerator=args.accelerator)
    images = f"image {args.image}" + (f", GPU stages in {args.gpu_image}" if args.gpu_image else "")
    print(f"Wrote {args.output} ({args.pipeline} pipeline, {images}, preset {args.preset}).")
    if not config.cluster.state_root:
        print("note: cluster.state_root is empty, so a retried search, evaluate or transfer starts over; set it to a "
              "bucket (--set cluster.state_root=gs://BUCKET/darts-state) or a PVC path (--set cluster.state_pvc=CLAIM "
              "--set cluster.state_root=/mnt/darts-state), or per run as the state_root parameter.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
