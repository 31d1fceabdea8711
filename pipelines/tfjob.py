"""A Kubeflow Training Operator ``TFJob`` (kubeflow.org/v1) that runs a pipeline's long training on several nodes.

    python -m pipelines.tfjob --stage evaluate --workers 4 --gpus_per_worker 8 --image REGISTRY/darts-tf:TAG-gpu \
        --genotype gs://BUCKET/run/genotype.json --output_dir gs://BUCKET/run/evaluate > tfjob.yaml
    kubectl apply -f tfjob.yaml        # the Training Operator starts the worker pods and sets TF_CONFIG in each

    python -m pipelines.tfjob --pipeline cnn --stage transfer --workers 2 --gpus_per_worker 8 --image ... \
        --genotype ... --set transfer.data_dir=gs://BUCKET/tensorflow_datasets [--preset paper] > transfer.yaml

    python -m pipelines.tfjob --pipeline rnn --stage evaluate --workers 2 --gpus_per_worker 4 --image ... \
        --genotype gs://BUCKET/rnn/genotype.json --data_dir gs://BUCKET/data/penn > rnn_evaluate.yaml

Every worker pod runs the stage's training script (``darts-train`` for the CNN evaluate stage, ``darts-train-imagenet``
for its transfer, ``darts-rnn-train`` for both RNN stages, with ``--preset`` and the stage's overrides as flags, and
the corpus directory of the stage's ingest unless ``--data_dir`` is given) with the preset's stage settings (``--set
STAGE.NAME=VALUE`` changes them, as in ``pipelines.compile``), ``--strategy=multi_worker`` and ``--resume``: worker 0
is the chief and
writes ``--output_dir``; a pod that fails is restarted (``restartPolicy: OnFailure``, up to the preset's retries of the
stage as ``runPolicy.backoffLimit``), the others fail with it when their collectives lose the peer and restart too, and
every worker resumes from the chief's last epoch checkpoint. ``--output_dir`` must therefore be storage that every pod
reads: a bucket (gs://...), or ``cluster.state_pvc`` (a ReadWriteMany claim mounted at ``cluster.state_root``).
Without ``--output_dir`` the run directory is ``<cluster.state_root>/<name>``.

Each pod asks for the preset's resources of the stage (CPU, memory, node selector, tolerations; ``--gpus_per_worker``
instead of its GPU count). ``--batch_size`` stays the global batch (``darts_tf.distribute``): the preset's 96 over 4
workers x 8 GPUs is 3 images per GPU; raise it with ``--set evaluate.batch_size=...`` (and the learning rate with it,
if you follow the linear scaling rule) where that is too few.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

from . import presets

API_VERSION, KIND = "kubeflow.org/v1", "TFJob"
CONTAINER = "tensorflow"  # the container the Training Operator looks for (TFJobDefaultContainerName)
PORT_NAME, PORT = "tfjob-port", 2222  # TFJobDefaultPortName / TFJobDefaultPort
STAGES = ("evaluate", "transfer")
RESTART_POLICY = "OnFailure"
# The training script of each (pipeline, stage).
SCRIPTS = {("cnn", "evaluate"): "darts_tf.cli.train", ("cnn", "transfer"): "darts_tf.cli.train_imagenet",
           ("rnn", "evaluate"): "darts_tf.cli.rnn_train", ("rnn", "transfer"): "darts_tf.cli.rnn_train"}
# Set by the job itself, never from the preset.
_JOB_OWNED = ("output_dir", "resume", "genotype", "strategy", "verbose")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _flag(name: str, value: Any) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"--{name}={value}"


def stage_flags(config: presets.PipelineConfig, stage: str) -> List[str]:
    """The training script's flags for the preset's `stage` settings (None settings left to the script's defaults); an
    RNN stage is an RNN preset with overrides: ``--preset=NAME`` and one flag per override."""
    values = dataclasses.asdict(getattr(config, stage))
    if config.kind == "rnn":
        values = {"preset": values["preset"], **values["overrides"]}
    return [_flag(k, v) for k, v in values.items() if v is not None and k not in _JOB_OWNED]


def _stage_batch(config: presets.PipelineConfig, stage: str) -> int:
    """The stage's global batch (an RNN stage's: its preset's with the overrides)."""
    if config.kind == "rnn":
        from darts_tf.rnn.task import preset_config

        settings = getattr(config, stage)
        return preset_config(settings.preset, settings.overrides, stage).batch_size
    return getattr(config, stage).batch_size


def _stage_data_dir(config: presets.PipelineConfig, stage: str) -> str:
    """Where an RNN stage's pods read its corpus by default: the pipeline's ingest directory of that corpus."""
    if config.kind != "rnn":
        return ""
    return (config.ingest if stage == "evaluate" else config.transfer_ingest).data_dir or ""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def build_tfjob(config: presets.PipelineConfig, stage: str, *, workers: int, image: str, genotype: str,
                output_dir: str = "", gpus_per_worker: Optional[int] = None, name: str = "",
                namespace: str = "", data_dir: str = "") -> Dict[str, Any]:
    """The TFJob manifest (a dict) of `stage` of `config` on `workers` worker pods; errors name the flag and the fix."""
    _check(stage in STAGES, f"--stage must be one of {', '.join(STAGES)} (the long trainings). Received: stage={stage!r}")
    _check(workers >= 1, f"--workers must be >= 1. Received: workers={workers}")
    _check(bool(image), "--image must name the container image (Dockerfile target gpu, or cpu). Received: image=''")
    _check(bool(genotype), "--genotype must be the genotype the stage trains: a published name or a genotype.json path "
                           "that every pod reads. Received: genotype=''")
    _check(gpus_per_worker is None or gpus_per_worker >= 0,
           f"--gpus_per_worker must be >= 0. Received: gpus_per_worker={gpus_per_worker}")
    name = name or f"darts-{config.kind}-{stage}"
    _check(len(name) <= 63 and bool(_DNS_1035.match(name)), "--name must be a DNS-1035 label (lower-case letters, "
           f"digits and '-', starting with a letter, at most 63 characters). Received: name={name!r}")
    cluster = config.cluster
    if not output_dir:
        _check(bool(cluster.state_root), "--output_dir must be set (a bucket or shared volume every worker reads), or "
                                         "cluster.state_root (--set cluster.state_root=gs://BUCKET/darts-state). "
                                         "Received: output_dir=''")
        output_dir = f"{cluster.state_root.rstrip('/')}/{name}"
    resources = cluster.runtime(stage).resources
    gpus = resources.gpus if gpus_per_worker is None else gpus_per_worker
    batch = _stage_batch(config, stage)
    _check(batch >= workers * max(gpus, 1),
           f"{stage}.batch_size is the global batch, split over {workers * max(gpus, 1)} replicas ({workers} workers x "
           f"{max(gpus, 1)}): it must be at least that. Received: batch_size={batch} (--set {stage}.batch_size=N)")
    replicas = workers * max(gpus, 1)
    _check(config.kind != "rnn" or batch % replicas == 0,
           f"{stage}.batch_size must be a multiple of the {replicas} replicas for darts-rnn-train (each replica carries "
           f"the hidden state of its own rows of the text stream). Received: batch_size={batch} (--set "
           f'{stage}.overrides={{"batch_size": N}})')

    args = [*stage_flags(config, stage), f"--genotype={genotype}", f"--output_dir={output_dir}",
            "--strategy=multi_worker", "--resume", "--verbose=2"]
    data_dir = data_dir or _stage_data_dir(config, stage)
    if data_dir:
        args = [a for a in args if not a.startswith("--data_dir=")] + [f"--data_dir={data_dir}"]
    limits: Dict[str, Any] = {}
    requests: Dict[str, Any] = {}
    for key, request, limit in (("cpu", resources.cpu_request, resources.cpu_limit),
                                ("memory", resources.memory_request, resources.memory_limit)):
        if request:
            requests[key] = request
        if limit:
            limits[key] = limit
    if gpus:
        limits[resources.accelerator] = gpus
    container: Dict[str, Any] = {
        "name": CONTAINER, "image": image, "command": ["python", "-m", SCRIPTS[(config.kind, stage)]], "args": args,
        "ports": [{"name": PORT_NAME, "containerPort": PORT}],
    }
    if requests or limits:
        container["resources"] = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    pod: Dict[str, Any] = {"containers": [container]}
    if resources.node_selector:
        pod["nodeSelector"] = dict(resources.node_selector)
    if resources.tolerations:
        pod["tolerations"] = [_toleration(t) for t in resources.tolerations]
    if cluster.state_pvc:
        container["volumeMounts"] = [{"name": "darts-state", "mountPath": cluster.state_root}]
        pod["volumes"] = [{"name": "darts-state", "persistentVolumeClaim": {"claimName": cluster.state_pvc}}]
    metadata: Dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "darts-tf",
                                                         "darts-tf/stage": stage, "darts-tf/pipeline": config.kind}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": int(cluster.runtime(stage).retry.num_retries)},
            "tfReplicaSpecs": {"Worker": {"replicas": workers, "restartPolicy": RESTART_POLICY,
                                          "template": {"spec": pod}}},
        },
    }


def _toleration(t: Dict[str, Any]) -> Dict[str, Any]:
    """A preset toleration (kfp-kubernetes' snake_case `toleration_seconds`) in Kubernetes' own keys."""
    return {("tolerationSeconds" if k == "toleration_seconds" else k): v for k, v in t.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.tfjob", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=presets.PIPELINES, default="cnn")
    parser.add_argument("--stage", choices=STAGES, default="evaluate")
    parser.add_argument("--preset", default="paper", help="the stage's settings and resources: paper (default), smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a preset setting, as in pipelines.compile (evaluate.epochs=300, "
                             "evaluate.resources.memory_limit=96Gi, cluster.state_root=gs://BUCKET/state)")
    parser.add_argument("--workers", type=int, required=True, help="worker pods (worker 0 is the chief)")
    parser.add_argument("--gpus_per_worker", type=int, default=None, help="GPUs of each pod (default: the preset's "
                        "for the stage)")
    parser.add_argument("--image", required=True, help="the container image with darts_tf installed (Dockerfile "
                        "target gpu, or cpu)")
    parser.add_argument("--genotype", required=True, help="the genotype to train: a published name, or a "
                        "genotype.json that every pod reads (gs://..., or on the state volume)")
    parser.add_argument("--output_dir", default="", help="the run directory, on storage every pod reads (default: "
                        "<cluster.state_root>/<name>)")
    parser.add_argument("--data_dir", default="", help="the data directory of the training script (tfds data_dir; the "
                        "RNN corpus directory)")
    parser.add_argument("--name", default="", help="the TFJob's name (default: darts-<pipeline>-<stage>)")
    parser.add_argument("--namespace", default="")
    parser.add_argument("--output", default="-", help="where to write the YAML (default: stdout)")
    args = parser.parse_args(argv)
    try:
        config = presets.override(presets.get_preset(args.pipeline, args.preset), args.overrides)
        presets.validate_stages(config)
        job = build_tfjob(config, args.stage, workers=args.workers, image=args.image, genotype=args.genotype,
                          output_dir=args.output_dir, gpus_per_worker=args.gpus_per_worker, name=args.name,
                          namespace=args.namespace, data_dir=args.data_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import yaml

    text = yaml.safe_dump(job, sort_keys=False)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        from darts_tf.io_utils import atomic_write_text

        atomic_write_text(args.output, text)
        print(f"Wrote {args.output} (TFJob {job['metadata']['name']}: {args.workers} workers).", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
