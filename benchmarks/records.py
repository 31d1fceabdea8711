"""The benchmark records: one JSON object per configuration, checked against ``benchmarks/schema.json`` with
``jsonschema`` (``load_schema``, ``validate_record``); how a record is started for a configuration, with the
machine it ran on (``base_record``, ``environment``, ``cpu_model``, ``git_commit``, ``load_avg``); and how records
are summarized: the Markdown table, the second_order_exact / second_order_fd step-time ratios, and ``summarize``,
which merges JSON-lines files into one table. Imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
from typing import Any, Dict, List, Optional, Tuple

import jsonschema

from benchmarks.configs import BenchConfig

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")
SCHEMA_VERSION = 1


# ------------------------------------------------------------------------------------------ schema
def _is_finite_number(checker, value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# JSON has no NaN or Infinity (Python's json writes them anyway): a record's numbers must be finite
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,  # the draft schema.json declares in "$schema"
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("number", _is_finite_number))


def load_schema() -> Dict[str, Any]:
    """schema.json, checked against its draft's meta-schema."""
    with open(SCHEMA_PATH) as f:
        schema = json.load(f)
    _Validator.check_schema(schema)
    return schema


def validate_record(record: Dict[str, Any], schema: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """`record` itself if it matches the schema (default: schema.json); else a ValueError naming every failing
    path, e.g. ``$.step_s.median: -1 is less than the minimum of 0``."""
    errors = [f"{e.json_path}: {e.message}" for e in _Validator(schema or load_schema()).iter_errors(record)]
    if errors:
        raise ValueError(f"Benchmark record {record.get('name')!r} does not match benchmarks/schema.json: "
                         + "; ".join(errors))
    return record


# ------------------------------------------------------------------------------------------ records
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    """The checkout's HEAD (with '+dirty' for uncommitted changes under darts_tf/), or 'unknown'."""
    repo = os.path.dirname(os.path.dirname(SCHEMA_PATH))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "darts_tf"], cwd=repo, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+dirty" if dirty else "")) or "unknown"


def environment(tf_version: str = "", keras_version: str = "") -> Dict[str, Any]:
    """A record's ``env``: library versions, the machine and the commit measured."""
    return {"tensorflow": tf_version, "keras": keras_version, "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count() or 1, "python": platform.python_version(), "git_commit": git_commit()}


def load_avg() -> List[float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def base_record(cfg: BenchConfig, status: str, reason: Optional[str], load_start: List[float],
                env: Optional[Dict[str, Any]] = None, device: str = "cpu") -> Dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "name": cfg.name, "model": cfg.model, "arch_mode": cfg.arch_mode,
            "batch_size": cfg.batch_size, "jit_compile": cfg.jit_compile, "mixed_precision": cfg.mixed_precision,
            "data": cfg.data, "shape": cfg.shape(),
            "exact_recompute": cfg.exact_recompute if cfg.arch_mode == "second_order_exact" else None,
            "exact_hvp": cfg.exact_hvp if cfg.arch_mode == "second_order_exact" else None,
            "grappler_options": cfg.grappler_options, "tf_grappler_defaults": cfg.tf_grappler_defaults,
            "malloc": cfg.malloc,
            "partial_channels": cfg.partial_channels, "edge_normalization": cfg.edge_normalization,
            "status": status, "reason": reason,
            "warmup_iters": cfg.warmup, "timed_iters": cfg.iters, "build_s": None, "trace_compile_s": None, "step_s": None,
            "examples_per_s": None, "tokens_per_s": None, "peak_host_mem_mb": None, "peak_swap_mb": None,
            "timed_major_faults": None, "timed_cpu_s": None, "peak_gpu_mem_mb": None,
            "device": device, "env": env or environment(), "load_avg": {"start": load_start, "end": load_avg()},
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


# ------------------------------------------------------------------------------------------ summaries
def fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mode_label(r: Dict[str, Any]) -> str:
    mode = r["arch_mode"] or "-"
    if r.get("exact_hvp") == "forward":
        mode += " (forward HVP)"
    elif r.get("exact_recompute") is False:
        mode += " (keep tape)"
    if r.get("grappler_options"):
        mode += " (grappler: " + ", ".join(f"{k}={v}" for k, v in sorted(r["grappler_options"].items())) + ")"
    if r.get("malloc", "system") != "system":
        mode += f" ({r['malloc']})"
    if r.get("tf_grappler_defaults"):  # records before issue 23 lack the key (they ran them): no label
        mode += " (TF's Grappler defaults)"
    if r.get("partial_channels", 1) != 1:
        mode += f" (PC K={r['partial_channels']})"
    if r.get("edge_normalization"):
        mode += " (edge norm)"
    return mode


def _memory_label(r: Dict[str, Any]) -> str:
    memory = fmt(r["peak_host_mem_mb"], 0)
    if r.get("peak_swap_mb"):
        memory += f" + {r['peak_swap_mb']:.0f} swap"
        if r.get("timed_major_faults") is not None:
            memory += f" ({r['timed_major_faults']} major faults timed"
            if r.get("timed_cpu_s") is not None and r["step_s"]:
                memory += f", {r['timed_cpu_s'] / sum(r['step_s']['all']):.2f} CPU-s per s"
            memory += ")"
    return memory


def _table_row(r: Dict[str, Any]) -> str:
    step = r["step_s"]
    step_txt = "-" if step is None else f"{step['median']:.3f} ({step['min']:.3f}-{step['max']:.3f})"
    status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}".replace("|", "\\|")
    size = r["shape"]
    what = (f"{r['model']} L{size['layers']} C{size['channels']}" if r["model"].startswith("cnn")
            else f"{r['model']} {size['units']}u V{size['vocab_size']} T{size['window']}")
    return (f"| {what} | {_mode_label(r)} | {r['batch_size']} | {'on' if r['jit_compile'] else 'off'} "
            f"| {'mixed16' if r['mixed_precision'] else 'fp32'} | {r['data']} | {fmt(r['trace_compile_s'], 1)} "
            f"| {step_txt} | {fmt(r['examples_per_s'], 1)} | {_memory_label(r)} | {status} |")


def markdown_table(records: List[Dict[str, Any]]) -> str:
    head = ("| configuration | mode | batch | XLA | precision | data | trace+compile s | step s median (min-max) "
            "| examples/s | peak RSS MiB | status |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(_table_row(r) for r in records) + "\n"


def exact_to_fd_ratios(records: List[Dict[str, Any]]) -> Dict[str, float]:
    """median(second_order_exact) / median(second_order_fd) for every configuration measured in both modes."""
    by_name = {r["name"]: r for r in records if r["status"] == "ok"}
    ratios = {}
    for name, r in by_name.items():
        if r["arch_mode"] == "second_order_exact":
            fd = by_name.get(name.replace("second_order_exact", "second_order_fd"))
            if fd:
                ratios[name.replace("/second_order_exact", "")] = round(r["step_s"]["median"] / fd["step_s"]["median"], 3)
    return ratios


def ratios_markdown(ratios: Dict[str, float]) -> str:
    """The exact/FD ratios as a Markdown list under its heading ('' when there are none)."""
    if not ratios:
        return ""
    return "second_order_exact / second_order_fd step time:\n\n" + "".join(f"- {k}: {v}x\n" for k, v in ratios.items())


def _read_records(path: str, schema: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The schema-checked records of the JSON-lines file `path`; a ValueError names the file and line."""
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(validate_record(json.loads(line), schema))
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: {e}") from None
    return records


def summarize(paths: List[str]) -> Tuple[List[Dict[str, Any]], str]:
    """Records of `paths` merged by configuration name (the last one read wins), schema-checked, and their table."""
    schema = load_schema()
    by_name: Dict[str, Dict[str, Any]] = {}
    for path in paths:
        for record in _read_records(path, schema):
            by_name.pop(record["name"], None)
            by_name[record["name"]] = record
    records = list(by_name.values())
    ratios = exact_to_fd_ratios(records)
    text = markdown_table(records)
    if ratios:
        text += "\n" + ratios_markdown(ratios)
    return records, text
