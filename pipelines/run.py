"""Runs a DARTS pipeline locally with kfp.local (the default way to run it; no cluster, no Docker).

    python -m pipelines.run --pipeline cnn --preset smoke --root runs/pipeline
    python -m pipelines.run --pipeline rnn --preset paper --root runs/rnn --set ingest.data_dir=/data/penn \
        --set transfer_ingest.data_dir=/data/wikitext-2
    tensorboard --logdir runs/pipeline        # every stage's logs

Each stage runs as a subprocess of this Python (`kfp.local.SubprocessRunner(use_venv=False)`), so the
installed darts_tf / components / pipelines packages are what runs. Finished stages are cached by kfp.local
(keyed by the component, its parameters and its input artifacts; entries in ROOT/.kfp_cache): re-running the
same command reuses them; `--no-cache` runs everything again. The resolved settings are written to
ROOT/<pipeline>-config.json before the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from typing import Any, Dict, Optional, Sequence

from pipelines import presets

CACHE_DIR = ".kfp_cache"


def run_pipeline(kind: str, root: str, config: Optional[presets.PipelineConfig] = None, cache: bool = True,
                 raise_on_error: bool = True) -> Dict[str, Any]:
    """Runs the `kind` pipeline under `root` with `config` (the smoke preset if None); returns its
    settings and root. Raises RuntimeError naming the failed task when a stage fails."""
    from kfp import local

    from pipelines.dag import build_pipeline

    config = config or presets.get_preset(kind, "smoke")
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    params = presets.stage_params(config)
    with open(os.path.join(root, f"{kind}-config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=1, sort_keys=True, default=str)
    # The components name the cluster image; locally they run in this Python, which is the point here.
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*", category=RuntimeWarning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=raise_on_error,
               enable_caching=cache, cache_root=os.path.join(root, CACHE_DIR))
    build_pipeline(kind, config, caching=cache)(**params)
    return {"pipeline": kind, "root": root, "params": params}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=presets.PIPELINES, default="cnn")
    parser.add_argument("--preset", default="smoke", help="registered preset: smoke (CPU minutes) or paper")
    parser.add_argument("--root", required=True, help="pipeline root: every artifact and TensorBoard log goes here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. search.epochs=3, seeds=[1,2], select.overrides.units=64")
    parser.add_argument("--no-cache", action="store_true", help="run every stage again")
    parser.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = presets.override(presets.get_preset(args.pipeline, args.preset), args.overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(dataclasses.asdict(config), indent=1, sort_keys=True, default=str))
        return 0
    try:
        run_pipeline(args.pipeline, args.root, config, cache=not args.no_cache)
    except RuntimeError as e:
        print(f"error: the {args.pipeline} pipeline failed: {e}\nThe failing stage's log above names the artifact; "
              f"finished stages are cached under {os.path.join(args.root, CACHE_DIR)}.", file=sys.stderr)
        return 1
    print(f"The {args.pipeline} pipeline finished. Artifacts and logs: {os.path.abspath(args.root)} "
          f"(tensorboard --logdir {args.root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
