"""Pipeline presets: every setting of a DARTS pipeline run, as nested dataclasses registered by name.

* ``paper``: the paper's settings (CIFAR-10 / PTB search over 4 seeds, 100-epoch / 300-epoch selection,
  600-epoch CIFAR-10 / PTB evaluation, ImageNet / WikiText-2 transfer): a GPU user's real run.
* ``smoke``: minutes on 2 CPU cores with offline real data that ships with a package (scikit-learn's
  digits; the CPython reference manual as text): tiny networks, 2 seeds, 1-3 epochs.

Stage settings are the library's own config dataclasses (`SearchConfig`, `TrainConfig`, `ImageNetConfig`,
...), so every library flag is a preset setting; ``override(preset, ["search.epochs=3", "seeds=[1,2]"])``
changes any of them (values parse as JSON, else as plain strings). Fields a stage sets itself (output
directories, the seed of each search, the genotype and dataset it reads) are ignored in the presets.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Callable, Dict, List, Sequence, Union

from components.ingest import IngestConfig
from darts_tf.cnn.search import SearchConfig
from darts_tf.cnn.train import ImageNetConfig, TrainConfig
from darts_tf.rnn.search import SearchConfig as RNNSearchConfig
from darts_tf.rnn.task import RNNEvalConfig, RNNSelectConfig

PIPELINES = ("cnn", "rnn")
# Set by the stages themselves; never passed from a preset.
STAGE_OWNED = ("output_dir", "resume", "genotype")


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
        parts = key.split(".")
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


def validate_stages(config: PipelineConfig) -> PipelineConfig:
    """Runs every stage config's own checks (its `validate()`: the checks the scripts make) before any stage runs,
    so that an impossible setting fails in seconds rather than after ingest; the error names the stage."""
    for field in dataclasses.fields(config):
        stage = getattr(config, field.name)
        if not hasattr(stage, "validate"):
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
    """The pipeline parameters: `seeds` and one plain dict per stage (what the KFP components receive).

    Settings that are None are left out (KFP parameters cannot be None): the stage then uses its default,
    which is None for every such setting here."""
    params: Dict[str, Any] = {"seeds": list(config.seeds)}
    for field in dataclasses.fields(config):
        if field.name == "seeds":
            continue
        values = dataclasses.asdict(getattr(config, field.name))
        params[f"{field.name}_config"] = _drop_none({k: v for k, v in values.items() if k not in STAGE_OWNED})
    return params


def _drop_none(values: Dict[str, Any]) -> Dict[str, Any]:
    """KFP parameters cannot hold None; a dropped key means the stage config's default (None for all of ours)."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None}
