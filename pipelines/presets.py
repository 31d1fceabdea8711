"""Pipeline presets: every setting of a DARTS pipeline run, as nested dataclasses registered by name.

* ``paper``: the paper's settings (CIFAR-10 / PTB search over 4 seeds, 100-epoch / 300-epoch selection,
  600-epoch CIFAR-10 / PTB evaluation, ImageNet / WikiText-2 transfer): a GPU user's real run.
* ``smoke``: minutes on 2 CPU cores with offline real data that ships with a package (scikit-learn's
  digits; the CPython reference manual as text): tiny networks, 2 seeds, 1-3 epochs.

Stage settings are the library's own config dataclasses (`SearchConfig`, `TrainConfig`, `ImageNetConfig`,
...), so every library flag is a preset setting; ``override(preset, ["search.epochs=3", "seeds=[1,2]"])``
changes any of them (values parse as JSON, else as plain strings). Fields a stage sets itself (output
directories, the seed of each search, the genotype and dataset it reads) are ignored in the presets.

How each stage runs on a cluster is the `cluster` setting (`ClusterConfig`): per stage its Kubernetes resources
(CPU and memory requests and limits; GPUs, their resource name, node selector and tolerations for the stages that
train) and its retry policy, plus where the long stages keep their resumable state (`state_root`, optionally a PVC
mounted there) and how many searches run at once. ``--set evaluate.resources.gpus=8`` and
``--set search.retry.num_retries=5`` are short for ``cluster.evaluate.resources.gpus=8`` etc. These are compile-time
settings (KFP fixes them per task); `state_root` is also a pipeline parameter, changeable per run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from typing import Any, Callable, Dict, List, Sequence, Union

if __package__ and __package__.startswith("darts_tf_pipelines."):  # installed (see setup.py)
    from darts_tf_pipelines.components.ingest import IngestConfig
else:  # the source tree
    from components.ingest import IngestConfig
from darts_tf.cnn.search import SearchConfig
from darts_tf.cnn.train import ImageNetConfig, TrainConfig
from darts_tf.rnn.search import SearchConfig as RNNSearchConfig
from darts_tf.rnn.task import RNNEvalConfig, RNNSelectConfig

PIPELINES = ("cnn", "rnn")
# Set by the stages themselves; never passed from a preset.
STAGE_OWNED = ("output_dir", "resume", "genotype")
# Pipeline-config fields that are no stage's settings: the seeds, and how the stages run on a cluster.
CLUSTER = "cluster"
STATE_ROOT = "state_root"  # the pipeline parameter holding ClusterConfig.state_root

# ------------------------------------------------------------------------------------------ cluster settings

# Stages that train (may ask for accelerators) and those that never do (CPU only); `transfer_ingest` runs as `ingest`.
GPU_STAGES = ("search", "select", "evaluate", "transfer")
CPU_STAGES = ("ingest", "derive")
RESUMABLE_STAGES = ("search", "evaluate", "transfer")  # continue from their last finished epoch on a retry
DEFAULT_ACCELERATOR = "nvidia.com/gpu"
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?s$")


@dataclasses.dataclass
class Resources:
    """A stage's Kubernetes resources; "" / 0 asks for none (the cluster's defaults apply).

    CPU and memory are Kubernetes quantities ("500m", "4"; "16Gi"). `gpus` > 0 asks for that many `accelerator`s
    (the extended resource name: nvidia.com/gpu, amd.com/gpu, or a KFP accelerator type) and puts the stage in the
    GPU image. `node_selector` and `tolerations` (Kubernetes' own keys: key, operator, value, effect) place the pod
    (kfp-kubernetes)."""

    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    gpus: int = 0
    accelerator: str = DEFAULT_ACCELERATOR
    node_selector: Dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: List[Dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Retry:
    """KFP's retry policy of a task: up to `num_retries` more attempts, the n-th after
    min(backoff_duration * backoff_factor**n, backoff_max_duration)."""

    num_retries: int = 0
    backoff_duration: str = "60s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "3600s"


@dataclasses.dataclass
class StageRuntime:
    resources: Resources = dataclasses.field(default_factory=Resources)
    retry: Retry = dataclasses.field(default_factory=Retry)


def _cpu(cpu: str, memory: str, cpu_limit: str = "", memory_limit: str = "", retries: int = 0) -> StageRuntime:
    return StageRuntime(Resources(cpu_request=cpu, cpu_limit=cpu_limit or cpu, memory_request=memory,
                                  memory_limit=memory_limit or memory), Retry(num_retries=retries))


def _gpu(gpus: int, cpu: str, memory: str, cpu_limit: str, memory_limit: str, retries: int) -> StageRuntime:
    runtime = _cpu(cpu, memory, cpu_limit, memory_limit, retries)
    runtime.resources.gpus = gpus
    return runtime


@dataclasses.dataclass
class ClusterConfig:
    """How every stage runs on a Kubernetes cluster (compile time), and where the long stages keep their state.

    `state_root`: a directory that outlives a pod (a PVC mount path, or a bucket: gs://..., s3://...) under which
    search, evaluate and transfer keep their run directory, at ``<state_root>/<pipeline run id>/<stage>[-seed-N]``,
    checkpointed every epoch; a retried pod continues from the last finished epoch there, and the directory is
    removed once the stage has published its artifact. "" keeps the run inside the pod: a retry starts over.
    `state_pvc`: the name of a PersistentVolumeClaim mounted at `state_root` (then an absolute path) in those stages.
    `seed_parallelism`: how many searches run at once (0: all seeds together)."""

    ingest: StageRuntime = dataclasses.field(default_factory=StageRuntime)
    search: StageRuntime = dataclasses.field(default_factory=StageRuntime)
    derive: StageRuntime = dataclasses.field(default_factory=StageRuntime)
    select: StageRuntime = dataclasses.field(default_factory=StageRuntime)
    evaluate: StageRuntime = dataclasses.field(default_factory=StageRuntime)
    transfer: StageRuntime = dataclasses.field(default_factory=StageRuntime)
    state_root: str = ""
    state_pvc: str = ""
    seed_parallelism: int = 0

    def runtime(self, stage: str) -> StageRuntime:
        return getattr(self, "ingest" if stage == "transfer_ingest" else stage)

    def validate(self) -> "ClusterConfig":
        for stage in (*CPU_STAGES, *GPU_STAGES):
            r, retry = self.runtime(stage).resources, self.runtime(stage).retry
            where = f"{stage}.resources"
            for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
                value = getattr(r, name)
                if value and not _QUANTITY.match(str(value)):
                    raise ValueError(f"{where}.{name} must be a Kubernetes quantity (e.g. '500m', '4', '16Gi'). "
                                     f"Received: {name}={value!r}")
            if r.gpus < 0:
                raise ValueError(f"{where}.gpus must be >= 0. Received: gpus={r.gpus}")
            if r.gpus and stage in CPU_STAGES:
                raise ValueError(f"{where}.gpus: the {stage} stage runs on CPU only (it trains nothing). "
                                 f"Received: gpus={r.gpus}")
            if r.gpus and not r.accelerator:
                raise ValueError(f"{where}.accelerator must name the GPU resource (e.g. nvidia.com/gpu) when gpus > 0.")
            for t in r.tolerations:
                if not isinstance(t, dict) or set(t) - {"key", "operator", "value", "effect", "toleration_seconds"}:
                    raise ValueError(f"{where}.tolerations: each is an object with key, operator, value, effect "
                                     f"(toleration_seconds). Received: {t!r}")
            if retry.num_retries < 0 or retry.backoff_factor < 1:
                raise ValueError(f"{stage}.retry: num_retries must be >= 0 and backoff_factor >= 1. Received: "
                                 f"num_retries={retry.num_retries}, backoff_factor={retry.backoff_factor}")
            for name in ("backoff_duration", "backoff_max_duration"):
                if not _DURATION.match(getattr(retry, name)):
                    raise ValueError(f"{stage}.retry.{name} must be seconds like '60s'. Received: "
                                     f"{getattr(retry, name)!r}")
        if self.seed_parallelism < 0:
            raise ValueError(f"seed_parallelism must be >= 0 (0: every seed at once). Received: {self.seed_parallelism}")
        if self.state_pvc and not self.state_root.startswith("/"):
            raise ValueError(f"state_pvc {self.state_pvc!r} is mounted at state_root, which must then be an absolute "
                             f"path (e.g. /mnt/darts-state). Received: state_root={self.state_root!r}")
        return self


def smoke_cluster() -> ClusterConfig:
    """Tiny CPU pods (the smoke preset runs in minutes on 2 cores); one retry of the searches and trainings."""
    return ClusterConfig(ingest=_cpu("1", "2Gi"), search=_cpu("2", "4Gi", retries=1), derive=_cpu("500m", "1Gi"),
                         select=_cpu("2", "4Gi", retries=1), evaluate=_cpu("2", "4Gi", retries=1),
                         transfer=_cpu("2", "4Gi", retries=1))


def paper_cluster() -> ClusterConfig:
    """One GPU per search, selection, evaluation and transfer (the paper's single-GPU runs; ImageNet and WikiText-2
    too, where `strategy=auto` would spread over more: --set transfer.resources.gpus=8); host memory for the data
    pipelines and the second-order step; three retries (two for ingest and derive), backing off from a minute (60 s,
    120 s, 240 s), the long stages resuming from their checkpoint when cluster.state_root is set."""
    return ClusterConfig(ingest=_cpu("2", "8Gi", retries=2), search=_gpu(1, "8", "32Gi", "16", "48Gi", 3),
                         derive=_cpu("1", "2Gi", retries=2), select=_gpu(1, "8", "32Gi", "16", "48Gi", 3),
                         evaluate=_gpu(1, "8", "32Gi", "16", "48Gi", 3), transfer=_gpu(1, "16", "64Gi", "32", "96Gi", 3))


@dataclasses.dataclass
class CNNPipelineConfig:
    """The CNN pipeline: ingest -> search x seeds -> derive -> select -> evaluate -> transfer."""

    seeds: List[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4])
    ingest: IngestConfig = dataclasses.field(default_factory=lambda: IngestConfig(kind="images", dataset="cifar10"))
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    select: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        layers=8, init_channels=16, epochs=100, batch_size=64, validation_portion=0.5, cutout_length=0,
        drop_path_prob=0.0, auxiliary=False, verbose=2))
    evaluate: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(verbose=2))
    transfer: ImageNetConfig = dataclasses.field(default_factory=lambda: ImageNetConfig(verbose=2, export=True))
    cluster: ClusterConfig = dataclasses.field(default_factory=paper_cluster)

    kind = "cnn"
    description = "DARTS CNN: search over seeds, select, evaluate, transfer (Liu et al. 2019)"


@dataclasses.dataclass
class RNNPipelineConfig:
    """The RNN pipeline: ingest PTB -> search x seeds -> derive -> select -> evaluate; ingest WikiText-2 -> transfer."""

    seeds: List[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4])
    ingest: IngestConfig = dataclasses.field(default_factory=lambda: IngestConfig(
        kind="text", dataset="ptb", data_dir="data/penn"))
    search: RNNSearchConfig = dataclasses.field(default_factory=RNNSearchConfig)
    select: RNNSelectConfig = dataclasses.field(default_factory=lambda: RNNSelectConfig(preset="ptb", epochs=300))
    evaluate: RNNEvalConfig = dataclasses.field(default_factory=lambda: RNNEvalConfig(preset="ptb"))
    transfer_ingest: IngestConfig = dataclasses.field(default_factory=lambda: IngestConfig(
        kind="text", dataset="wikitext2", data_dir="data/wikitext-2"))
    transfer: RNNEvalConfig = dataclasses.field(default_factory=lambda: RNNEvalConfig(preset="wikitext2"))
    cluster: ClusterConfig = dataclasses.field(default_factory=paper_cluster)

    kind = "rnn"
    description = "DARTS RNN: search over seeds, select, evaluate on PTB, transfer to WikiText-2"


PipelineConfig = Union[CNNPipelineConfig, RNNPipelineConfig]

_SMOKE_PRIMITIVES = "none,max_pool_3x3,skip_connect,sep_conv_3x3"
_SMOKE_RNN = dict(units=32, batch_size=16, eval_batch_size=10, test_batch_size=10, bptt=20, max_seq_len_delta=5)


def _cnn_paper() -> CNNPipelineConfig:
    # Search: A.1.1 (second-order DARTS, 50 epochs, 8 cells, C=16, batch 64); the paper ran it 4 times.
    # Select: 100 epochs of a small network (8 cells) on a validation split of train (sect. 3.2).
    # Evaluate: A.2.1 (20 cells, C=36, 600 epochs, cutout, drop-path 0.2, auxiliary towers).
    # Transfer: ImageNet mobile setting A.2.3 (14 cells, C=48, 250 epochs); tfds imagenet2012 in data_dir.
    return CNNPipelineConfig(search=SearchConfig(arch_mode="second_order_fd"))


def _cnn_smoke() -> CNNPipelineConfig:
    tiny = dict(dataset="digits", layers=3, batch_size=32, cutout_length=0, drop_path_prob=0.0, auxiliary=False,
                verbose=2)
    return CNNPipelineConfig(
        seeds=[1, 2],
        ingest=IngestConfig(kind="images", dataset="digits"),
        search=SearchConfig(dataset="digits", epochs=1, batch_size=32, layers=3, init_channels=4, nodes=2,
                            primitives=_SMOKE_PRIMITIVES),
        select=TrainConfig(**tiny, init_channels=4, epochs=1, validation_portion=0.2),
        evaluate=TrainConfig(**tiny, init_channels=8, epochs=3),
        # No second offline image dataset ships with a package: the smoke transfer retrains on digits with the
        # ImageNet recipe (exponential lr decay, label smoothing) to exercise the stage; `paper` uses ImageNet.
        transfer=ImageNetConfig(dataset="digits", network="cifar", layers=3, init_channels=4, epochs=1,
                                batch_size=32, auxiliary=False, export=True, verbose=2),
        cluster=smoke_cluster(),
    )


def _rnn_paper() -> RNNPipelineConfig:
    # Search: A.1.2 (300 units, batch 256, bptt 35, 50 epochs); select: 300 epochs; evaluate: PTB preset (A.2.2);
    # transfer: WikiText-2 preset (A.2.4). PTB and WikiText-2 are read from the corpus directories in data_dir.
    return RNNPipelineConfig()


def _rnn_smoke() -> RNNPipelineConfig:
    return RNNPipelineConfig(
        seeds=[1, 2],
        ingest=IngestConfig(kind="text", dataset="smoke", max_train_tokens=20_000),
        search=RNNSearchConfig(units=16, nodes=3, batch_size=16, bptt=20, max_seq_len_delta=5, epochs=1,
                               dropout=0.1, dropouth=0.1, dropoutx=0.1, dropouti=0.1),
        select=RNNSelectConfig(preset="smoke", overrides=dict(_SMOKE_RNN), epochs=1, validation_portion=0.1),
        evaluate=RNNEvalConfig(preset="smoke", overrides={**_SMOKE_RNN, "epochs": 2}),
        transfer_ingest=IngestConfig(kind="text", dataset="smoke", max_train_tokens=10_000),
        transfer=RNNEvalConfig(preset="smoke", overrides={**_SMOKE_RNN, "epochs": 1}),
        cluster=smoke_cluster(),
    )


PRESETS: Dict[str, Dict[str, Callable[[], PipelineConfig]]] = {
    "cnn": {"paper": _cnn_paper, "smoke": _cnn_smoke},
    "rnn": {"paper": _rnn_paper, "smoke": _rnn_smoke},
}


def register_preset(pipeline: str, name: str, factory: Callable[[], PipelineConfig]) -> None:
    if name in PRESETS[pipeline]:
        raise ValueError(f"{pipeline} preset {name!r} is already registered.")
    PRESETS[pipeline][name] = factory


def get_preset(pipeline: str, name: str) -> PipelineConfig:
    """A fresh copy of a registered preset; an unknown name raises an error listing the known ones."""
    if pipeline not in PRESETS:
        raise ValueError(f"Unknown pipeline {pipeline!r}. Known: {', '.join(PIPELINES)}.")
    if name not in PRESETS[pipeline]:
        raise ValueError(f"Unknown preset {name!r} for the {pipeline} pipeline. Known presets: "
                         f"{', '.join(sorted(PRESETS[pipeline]))}.")
    return PRESETS[pipeline][name]()


# ------------------------------------------------------------------------------------------ overrides


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        low = raw.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return raw


def _coerce(value: Any, hint: Any, raw: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is Union:
        if value is None:
            return None
        return _coerce(value, args[0], raw, key) if len(args) == 1 else value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"--set {key} expects true or false. Received: {raw!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"--set {key} expects an integer. Received: {raw!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"--set {key} expects a number. Received: {raw!r}")
    if hint is str:
        return raw
    if origin in (list, List):
        if isinstance(value, (int, float)):
            value = [value]
        elif isinstance(value, str):
            value = [_parse_value(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ValueError(f"--set {key} expects a list like [1,2] or 1,2. Received: {raw!r}")
        return [_coerce(v, args[0], json.dumps(v), key) for v in value] if args else value
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ValueError(f"--set {key} expects a JSON object. Received: {raw!r}")
        return value
    return value


def override(config: PipelineConfig, assignments: Sequence[str]) -> PipelineConfig:
    """Applies ``key=value`` assignments (``search.epochs=3``, ``seeds=[1,2]``, ``select.overrides.units=64``)
    in place and returns `config`. Unknown keys raise an error listing the known ones."""
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set expects key=value (e.g. search.epochs=3). Received: {assignment!r}")
        key, raw = assignment.split("=", 1)
        key = key.strip()
        target: Any = config
        parts = _cluster_alias(key.split("."))
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(target, dict):
                if last:
                    target[part] = _parse_value(raw)
                else:
                    target = target.setdefault(part, {})
                continue
            names = [f.name for f in dataclasses.fields(target)]
            if part not in names:
                where = ".".join(parts[:i]) or "the pipeline config"
                raise ValueError(f"Unknown setting {key!r}: {where} has no {part!r}. Known: {', '.join(names)}.")
            if last:
                hint = typing.get_type_hints(type(target))[part]
                setattr(target, part, _coerce(_parse_value(raw), hint, raw, key))
            else:
                target = getattr(target, part)
    return config


def _cluster_alias(parts: List[str]) -> List[str]:
    """``evaluate.resources.gpus`` -> ``cluster.evaluate.resources.gpus`` (and ``.retry.``, ``transfer_ingest.``)."""
    if len(parts) > 2 and parts[1] in ("resources", "retry") and parts[0] in (*CPU_STAGES, *GPU_STAGES):
        return [CLUSTER, *parts]
    return parts


def validate_stages(config: PipelineConfig) -> PipelineConfig:
    """Runs every stage config's own checks (its `validate()`: the checks the scripts make) before any stage runs,
    so that an impossible setting fails in seconds rather than after ingest; the error names the stage."""
    seeds = list(config.seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, at least one (each search keeps its state under its seed). "
                         f"Received: seeds={seeds!r}")
    try:
        config.cluster.validate()
    except ValueError as e:
        raise ValueError(f"[cluster] {e} (--set STAGE.resources.NAME=VALUE, STAGE.retry.NAME=VALUE or "
                         f"cluster.NAME=VALUE)") from e
    for field in dataclasses.fields(config):
        stage = getattr(config, field.name)
        if field.name == CLUSTER or not hasattr(stage, "validate"):
            continue
        # what the stage sets itself: where it writes, and (the search) where the ingested data is
        owned = {"output_dir": f"<{field.name} output>"}
        if field.name == "search":
            owned.update(dataset=config.ingest.dataset, data_dir="<ingested data>")
        names = {f.name for f in dataclasses.fields(stage)}
        try:
            dataclasses.replace(stage, **{k: v for k, v in owned.items() if k in names}).validate()
        except ValueError as e:
            raise ValueError(f"[stage '{field.name}'] {e} (a setting of --set {field.name}.NAME=VALUE)") from e
    return config


def stage_params(config: PipelineConfig) -> Dict[str, Any]:
    """The pipeline parameters: `seeds`, one plain dict per stage (what the KFP components receive) and `state_root`.

    Settings that are None are left out (KFP parameters cannot be None): the stage then uses its default,
    which is None for every such setting here."""
    params: Dict[str, Any] = {"seeds": [int(s) for s in config.seeds]}
    for field in dataclasses.fields(config):
        if field.name in ("seeds", CLUSTER):
            continue
        values = dataclasses.asdict(getattr(config, field.name))
        params[f"{field.name}_config"] = _drop_none({k: v for k, v in values.items() if k not in STAGE_OWNED})
    params[STATE_ROOT] = config.cluster.state_root
    return params


def _drop_none(values: Dict[str, Any]) -> Dict[str, Any]:
    """KFP parameters cannot hold None; a dropped key means the stage config's default (None for all of ours)."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None}
