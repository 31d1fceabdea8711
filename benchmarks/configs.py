"""The benchmark configurations: ``BenchConfig`` (one measured configuration, named by its fields), the grids
``run.py`` runs (``full_grid`` for a GPU, ``cpu_grid`` for a 2-core CPU, ``quick_grid`` for a smoke run,
``gpu_grid`` and ``gpu_tiny_grid`` for ``benchmarks/gpu.sh``, all in ``GRIDS``), ``select`` (a grid filtered by
a regular expression), and the allowed values of the fields (MODELS, ARCH_MODES, DATA_KINDS, MALLOCS). Pure
Python: importing it loads neither TensorFlow nor Keras.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Iterable, List, Optional

MODELS = ("cnn_search", "cnn_eval", "rnn_search")
ARCH_MODES = ("first_order", "second_order_exact", "second_order_fd")  # == darts_tf.bilevel.ARCH_MODES
DATA_KINDS = ("cached", "pipeline")
# malloc implementations a child can run under (LD_PRELOAD), by the shared library each one loads and the Debian
# package that ships it; "system" is the C library's own malloc
MALLOCS = {"system": None, "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
           "jemalloc": ("libjemalloc.so.2", "libjemalloc2")}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One measured configuration; ``name`` is its id in the JSON lines and the table."""

    model: str
    batch_size: int
    arch_mode: Optional[str] = None
    jit_compile: bool = False
    mixed_precision: bool = False
    data: str = "cached"
    layers: Optional[int] = None
    channels: Optional[int] = None
    nodes: Optional[int] = None
    image_size: Optional[int] = None
    num_classes: Optional[int] = None
    units: Optional[int] = None
    vocab_size: Optional[int] = None
    bptt: Optional[int] = None
    max_seq_len_delta: int = 0
    exact_recompute: bool = True  # second_order_exact: recompute the virtual step (False: keep its tape)
    exact_hvp: str = "reverse"  # second_order_exact: "forward" = forward-over-reverse Hessian-vector product
    grappler_options: Optional[Dict[str, bool]] = None  # tf.config.optimizer.set_experimental_options, before tracing
    # TensorFlow's Grappler settings (memory optimizer, two rounds) instead of darts_tf's (darts_tf.graph_options: one
    # round, no memory optimizer, since issue 23): True measures the code as it ran before
    tf_grappler_defaults: bool = False
    malloc: str = "system"  # the child's malloc (MALLOCS): "tcmalloc" or "jemalloc" are preloaded with LD_PRELOAD
    partial_channels: int = 1  # cnn_search: PC-DARTS' K (1/K of each edge's channels through its mixed op)
    edge_normalization: bool = False  # cnn_search: PC-DARTS' edge normalisation (betas)
    warmup: int = 1
    iters: int = 3

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"Unknown benchmark model {self.model!r}. Known: {', '.join(MODELS)}.")
        if self.model.endswith("_search") and self.arch_mode not in ARCH_MODES:
            raise ValueError(f"A search benchmark needs arch_mode in {ARCH_MODES}. Received: arch_mode={self.arch_mode!r}")
        if self.data not in DATA_KINDS:
            raise ValueError(f"data must be one of {DATA_KINDS}. Received: data={self.data!r}")
        if self.exact_hvp not in ("reverse", "forward"):
            raise ValueError(f"exact_hvp must be 'reverse' or 'forward'. Received: exact_hvp={self.exact_hvp!r}")
        if self.grappler_options is not None and not (
                isinstance(self.grappler_options, dict) and self.grappler_options
                and all(isinstance(k, str) and isinstance(v, bool) for k, v in self.grappler_options.items())):
            raise ValueError("grappler_options must be a non-empty JSON object of booleans for "
                             "tf.config.optimizer.set_experimental_options, e.g. {\"disable_meta_optimizer\": true}. "
                             f"Received: grappler_options={self.grappler_options!r}")
        if self.malloc not in MALLOCS:
            raise ValueError(f"malloc must be one of {', '.join(MALLOCS)}. Received: malloc={self.malloc!r}")
        if isinstance(self.partial_channels, bool) or not isinstance(self.partial_channels, int) \
                or self.partial_channels < 1:
            raise ValueError(f"partial_channels must be an integer >= 1. Received: partial_channels={self.partial_channels!r}")
        if (self.partial_channels != 1 or self.edge_normalization) and self.model != "cnn_search":
            raise ValueError(f"partial_channels and edge_normalization are options of the cnn_search model. Received: "
                             f"model={self.model!r}, partial_channels={self.partial_channels}, "
                             f"edge_normalization={self.edge_normalization}")
        if self.channels and self.channels % self.partial_channels:
            raise ValueError(f"partial_channels must divide channels. Received: partial_channels={self.partial_channels}, "
                             f"channels={self.channels}")
        if self.warmup < 1 or self.iters < 1:
            raise ValueError(f"warmup and iters must be >= 1 (warm-up includes the tracing call). "
                             f"Received: warmup={self.warmup}, iters={self.iters}")

    @property
    def name(self) -> str:
        size = f"L{self.layers}C{self.channels}" if self.model.startswith("cnn") else f"U{self.units}V{self.vocab_size}"
        mode = [self.arch_mode] if self.arch_mode else []
        pc = ([f"pc{self.partial_channels}"] if self.partial_channels != 1 else []) + \
            (["edgenorm"] if self.edge_normalization else [])
        if self.arch_mode == "second_order_exact" and self.exact_hvp == "forward":
            mode = [self.arch_mode + "_fwdhvp"]
        elif self.arch_mode == "second_order_exact" and not self.exact_recompute:
            mode = [self.arch_mode + "_keeptape"]
        parts = [self.model] + mode + pc + [
            f"{size}b{self.batch_size}", "xla" if self.jit_compile else "noxla",
            "mp16" if self.mixed_precision else "fp32", self.data]
        if self.grappler_options:
            parts.append("grappler[" + ",".join(f"{k}={int(v)}" for k, v in sorted(self.grappler_options.items())) + "]")
        if self.malloc != "system":
            parts.append(f"malloc[{self.malloc}]")
        if self.tf_grappler_defaults:
            parts.append("tfgrappler")
        return "/".join(parts)

    @property
    def window(self) -> Optional[int]:
        return None if self.bptt is None else self.bptt + self.max_seq_len_delta

    def shape(self) -> Dict[str, Optional[int]]:
        return {"layers": self.layers, "channels": self.channels, "nodes": self.nodes, "image_size": self.image_size,
                "num_classes": self.num_classes, "units": self.units, "vocab_size": self.vocab_size,
                "window": self.window}


def _cnn_search(mode, batch, layers=8, channels=16, image_size=32, nodes=4, **kw):
    return BenchConfig("cnn_search", batch, mode, layers=layers, channels=channels, nodes=nodes, image_size=image_size,
                       num_classes=10, **kw)


def _cnn_eval(batch, layers=20, channels=36, **kw):
    return BenchConfig("cnn_eval", batch, None, layers=layers, channels=channels, image_size=32, num_classes=10, **kw)


def _rnn_search(mode, batch, units=300, vocab=10000, nodes=8, bptt=35, delta=20, **kw):
    return BenchConfig("rnn_search", batch, mode, nodes=nodes, units=units, vocab_size=vocab, bptt=bptt,
                       max_seq_len_delta=delta, **kw)


def full_grid() -> List[BenchConfig]:
    """The paper's shapes: CNN search 8 cells C=16 (batch 64 and 16), evaluation 20 cells C=36 batch 96, RNN search
    300 units, PTB vocabulary, windows of bptt 35 padded to 55 as darts_tf.data.text feeds them (batch 256 and 64);
    each with and without XLA, fp32 and mixed precision; plus tf.data pipeline vs cached for the first order."""
    grid = []
    # iteration counts keep the CPU run near 25 minutes: a batch-64 second-order CNN step is tens of seconds on 2 cores
    cnn_iters = {(64, "first_order"): 3, (64, "second_order_exact"): 2, (64, "second_order_fd"): 2,
                 (16, "first_order"): 5, (16, "second_order_exact"): 3, (16, "second_order_fd"): 3}
    for mp in (False, True):
        for jit in (False, True):
            for batch in (64, 16):
                for mode in ARCH_MODES:
                    grid.append(_cnn_search(mode, batch, jit_compile=jit, mixed_precision=mp,
                                            iters=cnn_iters[batch, mode]))
            grid.append(_cnn_eval(96, jit_compile=jit, mixed_precision=mp, iters=3))
            for batch in (256, 64):
                for mode in ARCH_MODES:
                    grid.append(_rnn_search(mode, batch, jit_compile=jit, mixed_precision=mp, iters=3))
    for batch in (64, 16):
        grid.append(_cnn_search("first_order", batch, data="pipeline", iters=cnn_iters[batch, "first_order"]))
    grid.append(_rnn_search("first_order", 256, data="pipeline", iters=3))
    return grid


def cpu_grid() -> List[BenchConfig]:
    """The subset of ``full_grid`` a 2-core CPU measures in about 25 minutes, most important first: the paper's
    CNN search (batch 64) in the three modes, the RNN search (batch 256) in the three modes, the evaluation network,
    tf.data pipeline vs cached, XLA where it compiles in reasonable time, and mixed precision (skipped on CPU)."""
    grid = [_cnn_search(mode, 64, iters=2) for mode in ("second_order_fd", "second_order_exact", "first_order")]
    grid += [_rnn_search(mode, 256, iters=3) for mode in ARCH_MODES]
    grid += [_cnn_eval(96, iters=2),
             _cnn_search("first_order", 16, iters=4), _cnn_search("first_order", 16, data="pipeline", iters=4),
             _rnn_search("first_order", 64, iters=3), _rnn_search("first_order", 64, jit_compile=True, iters=3),
             _cnn_search("first_order", 16, jit_compile=True, iters=4)]
    grid += [_cnn_search(mode, 64, mixed_precision=True) for mode in ARCH_MODES]
    grid += [_cnn_eval(96, mixed_precision=True)] + [_rnn_search(mode, 256, mixed_precision=True) for mode in ARCH_MODES]
    return grid


def quick_grid() -> List[BenchConfig]:
    """Every model and mode at small sizes; XLA for the RNN first order only; one pipeline-vs-cached pair."""
    # tiny cells (2 nodes) keep graph tracing, which dominates on CPU, inside the 5-minute budget; XLA compilation
    # of the CNN supernet takes minutes on CPU, so the quick set compiles only the RNN with XLA
    small_cnn = dict(layers=3, channels=4, image_size=16, nodes=2, iters=3)
    small_rnn = dict(units=32, vocab=500, nodes=3, delta=5, iters=3)
    grid = [_cnn_search(mode, 16, **small_cnn) for mode in ARCH_MODES]
    grid += [_cnn_search("first_order", 16, data="pipeline", **small_cnn),
             _cnn_search("first_order", 16, mixed_precision=True, **small_cnn),
             _cnn_eval(16, layers=3, channels=8, iters=3)]
    grid += [_rnn_search(mode, 32, **small_rnn) for mode in ARCH_MODES]
    grid += [_rnn_search("first_order", 32, jit_compile=True, **small_rnn)]
    return grid


def pc_grid() -> List[BenchConfig]:
    """PC-DARTS against the plain supernet at the paper's search size (8 cells, C=16, first order, batch 64):
    plain, partial channels K=2, 4, 8, and K=4 with edge normalisation; every one at batch 16 too, so that memory
    per example is the slope (peak(64) - peak(16)) / 48, which cancels the fixed cost (runtime, graph, weights).
    The key pairs (plain and K=4 at both batches) run first, then the other variants at batch 64, then at 16."""
    key = [dict(), dict(partial_channels=4)]
    others = [dict(partial_channels=2), dict(partial_channels=8), dict(partial_channels=4, edge_normalization=True)]
    return ([_cnn_search("first_order", batch, iters=3, **kw) for kw in key for batch in (64, 16)]
            + [_cnn_search("first_order", batch, iters=3, **kw) for batch in (64, 16) for kw in others])


def gpu_grid() -> List[BenchConfig]:
    """What ``benchmarks/gpu.sh`` measures on a GPU in about 8 minutes: the paper's CNN search at batch 64 in the
    three modes, XLA off and on, fp32 and mixed precision, and the evaluation network (20 cells, C=36, batch 96).
    GPU steps are short, so more timed steps than the CPU grids; the first call (tracing, Grappler, XLA) is CPU work
    of minutes, which is why gpu.sh runs these in parallel lanes, longest first, and records what did not fit."""
    grid = []
    for jit, mp in ((False, False), (False, True), (True, False), (True, True)):
        grid += [_cnn_search(mode, 64, jit_compile=jit, mixed_precision=mp, warmup=2, iters=5) for mode in
                 ("second_order_exact", "second_order_fd", "first_order")]
        grid.append(_cnn_eval(96, jit_compile=jit, mixed_precision=mp, warmup=2, iters=5))
    return grid


def gpu_tiny_grid() -> List[BenchConfig]:
    """``gpu_grid``'s kinds of configuration at tiny sizes (3 cells, C=4, 1 node, 8x8 images, batch 8; the
    evaluation network 3 cells, C=8, 16x16), for ``gpu.sh --tiny`` on a CPU in under 2 minutes: the three modes,
    mixed precision (recorded as skipped without a GPU) and XLA (the evaluation network, which compiles in seconds).
    Cheapest first: on 2 cores the second-order steps are what may not fit, and they are then recorded as such."""
    tiny = dict(batch_size=8, layers=3, nodes=1, image_size=8, channels=4, warmup=1, iters=2)
    keep = {("second_order_exact", False, False), ("second_order_fd", False, False), ("first_order", False, False),
            ("first_order", False, True), (None, False, False), (None, True, False)}
    cost = {"first_order": 0, None: 1, "second_order_fd": 2, "second_order_exact": 3}
    grid = [dataclasses.replace(c, **(tiny if c.model == "cnn_search" else dict(tiny, nodes=None, image_size=16,
                                                                                 channels=8)))
            for c in gpu_grid() if (c.arch_mode, c.jit_compile, c.mixed_precision) in keep]
    return sorted(grid, key=lambda c: cost[c.arch_mode])


GRIDS = {"full": full_grid, "cpu": cpu_grid, "quick": quick_grid, "pc": pc_grid, "gpu": gpu_grid,
         "gpu_tiny": gpu_tiny_grid}


def select(grid: Iterable[BenchConfig], pattern: Optional[str]) -> List[BenchConfig]:
    regex = re.compile(pattern) if pattern else None
    chosen = [c for c in grid if regex is None or regex.search(c.name)]
    names = [c.name for c in chosen]
    if len(set(names)) != len(names):
        raise ValueError(f"Duplicate configuration names: {sorted(n for n in names if names.count(n) > 1)}")
    return chosen
