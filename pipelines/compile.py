"""Compiles a DARTS pipeline to Kubeflow Pipelines v2 YAML, for a cluster.

    python -m pipelines.compile --pipeline cnn --image REGISTRY/darts-tf:TAG --output cnn_pipeline.yaml \
        [--preset paper] [--set search.epochs=25 ...]

Every component runs in IMAGE (built from this repository's Dockerfile). The preset's settings become the
pipeline parameters' defaults; they can still be changed per run in the KFP UI or with
`kfp.Client().create_run_from_pipeline_package(path, arguments={...})`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from pipelines import presets


def compile_pipeline(kind: str, image: str, output: str, config: Optional[presets.PipelineConfig] = None,
                     caching: bool = True) -> str:
    from kfp import compiler

    from pipelines.dag import build_pipeline

    compiler.Compiler().compile(build_pipeline(kind, config, image=image, caching=caching), output)
    return output


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.compile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=presets.PIPELINES, default="cnn")
    parser.add_argument("--image", required=True, help="container image with darts_tf installed (see Dockerfile)")
    parser.add_argument("--output", required=True, help="where to write the pipeline YAML")
    parser.add_argument("--preset", default="paper", help="the parameters' defaults: paper (default) or smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-cache", action="store_true", help="compile with caching disabled on every task")
    args = parser.parse_args(argv)
    try:
        config = presets.override(presets.get_preset(args.pipeline, args.preset), args.overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    compile_pipeline(args.pipeline, args.image, args.output, config, caching=not args.no_cache)
    print(f"Wrote {args.output} ({args.pipeline} pipeline, image {args.image}, preset {args.preset}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
