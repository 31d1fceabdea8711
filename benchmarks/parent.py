"""The parent side of a benchmark run: each configuration is measured in a fresh Python process (``run.py
--child``, see ``child.py``), so that its peak memory, XLA cache and thread pools are its own. ``run_in_subprocess``
starts that process, samples how much of it is in swap (``swapped_kb``), kills it past its timeout, reaps it with
``os.wait4`` to learn its peak RSS even when it was killed, and turns its output into a record, or into an error
record that says why it failed (``error_tail`` of its stderr, ``_kill_reason``). ``run_all`` measures a list of
configurations this way, writing the JSON lines and the Markdown table as it goes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import logging

from benchmarks.child import RESULT_PREFIX, child_env
from benchmarks.configs import BenchConfig
from benchmarks.records import (base_record, cpu_model, exact_to_fd_ratios, fmt, load_avg, load_schema,
                                markdown_table, ratios_markdown, validate_record)

# the script a child runs as (with --child): a fresh interpreter, as from the command line
RUN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")

# TensorFlow's info/warning start-up lines and faulthandler's Python stack dump (a fatal 'F' or error 'E' line, a
# 'Check failed' or a Python traceback is what explains a failure)
_LOG_NOISE = re.compile(r"^([IW]\d{4} |WARNING: All log messages|To enable the following instructions|Current thread 0x|"
                        r"Thread 0x|\s+File \"|\s+Garbage-collecting|\s+<no Python frame>|Extension modules:)")


_ERROR_LINE = re.compile(r"Error\b|Exception\b|Out of memory|Check failed|Killed")


@dataclasses.dataclass(frozen=True)
class _Finished:
    """What a child process left: its exit code, peak RSS and swap (MiB), whether it was killed for time, its output."""

    returncode: int
    peak_mb: float
    peak_swap_mb: float
    timed_out: bool
    stdout: str
    stderr: str


def error_tail(text: str, lines: int = 3) -> str:
    """The last `lines` lines of a child's stderr that are not TensorFlow's start-up logging, after the last line
    that names an error (e.g. XLA's 'Out of memory while trying to allocate ...') when that is further up."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip() and not _LOG_NOISE.match(line)]
    tail = kept[-lines:]
    named = [line for line in kept[:-lines] if _ERROR_LINE.search(line)]
    return " | ".join(named[-1:] + tail)


def _kill_reason(returncode: int, peak_mb: Optional[float]) -> str:
    if returncode == -9:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
        return (f"killed by SIGKILL at {peak_mb:.0f} MiB peak RSS: out of host memory (this machine has "
                f"{total:.0f} GiB; the kernel's OOM killer)")
    if returncode < 0:
        return f"child died of {signal.Signals(-returncode).name}"
    return f"child exited {returncode}"


def swapped_kb(pid: int) -> int:
    """How much of process `pid` is in swap now (VmSwap, KiB); 0 if it is gone or the kernel does not say."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmSwap:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _wait(proc: subprocess.Popen, timeout: float) -> Tuple[int, Any, bool, int]:
    """Reaps `proc` with ``os.wait4``, sampling its swap every 0.2 s and killing it past `timeout` seconds: its wait
    status, resource usage, whether it was killed for time, and the most of it seen in swap (KiB)."""
    peak_swap_kb = 0
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage, False, peak_swap_kb
        peak_swap_kb = max(peak_swap_kb, swapped_kb(proc.pid))
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return status, usage, True, peak_swap_kb
        time.sleep(0.2)


def _run_child_process(cfg: BenchConfig, timeout: float) -> _Finished:
    """Runs ``run.py --child`` for `cfg` in a fresh Python process, in the environment the child needs."""
    import tempfile

    cmd = [sys.executable, RUN_SCRIPT, "--child", json.dumps(dataclasses.asdict(cfg))]
    env = child_env(cfg)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        status, usage, timed_out, peak_swap_kb = _wait(proc, timeout)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return _Finished(proc.returncode, round(usage.ru_maxrss / 1024.0, 1), round(peak_swap_kb / 1024.0, 1),
                     timed_out, stdout, stderr)


def _failure_reason(done: _Finished, timeout: float) -> str:
    if done.timed_out:
        return f"timed out after {timeout:.0f} s (peak RSS {done.peak_mb:.0f} MiB so far)"
    tail = error_tail(done.stderr or done.stdout)
    return _kill_reason(done.returncode, done.peak_mb) + (f": {tail}" if tail else "")


def run_in_subprocess(cfg: BenchConfig, timeout: float) -> Dict[str, Any]:
    """`cfg` in a fresh Python process (``run.py --child``); an error record if it fails or times out.

    The child is reaped with ``os.wait4`` so that its peak RSS is known even when it is killed (out of memory)
    or times out; that figure goes into the error record."""
    load_start = load_avg()
    done = _run_child_process(cfg, timeout)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX):]), "peak_swap_mb": done.peak_swap_mb}
    return {**base_record(cfg, "error", _failure_reason(done, timeout)[:2000], load_start),
            "peak_host_mem_mb": done.peak_mb, "peak_swap_mb": done.peak_swap_mb}


def _measure_all(configs: List[BenchConfig], output: str, timeout: float) -> List[Dict[str, Any]]:
    """Each configuration's schema-checked record, also written to the JSON-lines file `output` as it comes."""
    schema = load_schema()
    records = []
    with open(output, "w") as f:
        for i, cfg in enumerate(configs):
            record = validate_record(run_in_subprocess(cfg, timeout), schema)
            records.append(record)
            f.write(json.dumps(record) + "\n")
            f.flush()
            step = record["step_s"]["median"] if record["step_s"] else None
            logging.info("[%d/%d] %s: %s step %s s (load %s)", i + 1, len(configs), cfg.name, record["status"],
                         fmt(step, 3), record["load_avg"]["end"])
    return records


def run_all(configs: List[BenchConfig], output: str, markdown: str, timeout: float,
            command: str) -> List[Dict[str, Any]]:
    """Measures `configs` one after the other, each in its own process; writes their records to `output` (JSON
    lines) and their table and exact/FD ratios to `markdown` (headed by `command` and the machine), and prints them."""
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    start = time.time()
    records = _measure_all(configs, output, timeout)
    table = markdown_table(records)
    ratios = exact_to_fd_ratios(records)
    with open(markdown, "w") as f:
        f.write(f"Command: `{command}`  \n"
                f"Machine: {cpu_model()}, {os.cpu_count()} cores; wall time {time.time() - start:.0f} s\n\n{table}\n")
        f.write(ratios_markdown(ratios))
    print(table)
    for k, v in ratios.items():
        print(f"exact/fd {k}: {v}x")
    print(f"wrote {output} and {markdown} in {time.time() - start:.0f} s")
    return records
