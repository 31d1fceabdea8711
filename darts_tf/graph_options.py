"""Grappler settings for the traced steps (issue 23: the time to the first step).

Before a traced step runs the first time, TensorFlow's graph optimiser (Grappler) rewrites its graph, one pass after
another. On the search supernet's graphs (76k-254k ops) that is 29-59% of the wait before the first step, and one
pass, the ``memory_optimizer``, is 37-47% of Grappler's time (benchmarks/RESULTS.md, "Where the time to the first
step goes"). It looks for recomputation and host-swapping opportunities: recomputation only of ops a user marked
(nothing here marks any), swapping only to relieve a GPU's memory. So by default darts_tf runs without it: the
traced step is the same computation, its first call comes sooner. ``DARTS_TF_GRAPPLER_MEMORY_OPTIMIZER=1`` in the
environment brings it back (e.g. a GPU whose memory a run overflows).

TensorFlow has no public switch for it: ``tf.config.optimizer.set_experimental_options`` has no key for
``memory_optimization``. What the runtime hands Grappler for a ``tf.function`` call is the ConfigProto of the eager
context's function-call options (``context.function_call_options``), which is where ``apply_graph_options`` sets it;
the options are per thread (set them in the thread that runs the steps, as every trainer does through
``checkpoint.start_run``) and ``set_experimental_options`` resets them (apply again after it).
"""

from __future__ import annotations

import os

from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context as tf_context  # no public API for the function-call ConfigProto

MEMORY_OPTIMIZER_ENV = "DARTS_TF_GRAPPLER_MEMORY_OPTIMIZER"


def memory_optimizer_wanted() -> bool:
    """True when the environment asks for Grappler's memory optimizer (``DARTS_TF_GRAPPLER_MEMORY_OPTIMIZER`` set to
    1/true/yes/on); False by default. Other values are refused with the accepted ones named."""
    value = os.environ.get(MEMORY_OPTIMIZER_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{MEMORY_OPTIMIZER_ENV} must be 1/true/yes/on (run Grappler's memory optimizer) or 0/false/no/off "
                     f"(skip it, the default). Received: {MEMORY_OPTIMIZER_ENV}={os.environ[MEMORY_OPTIMIZER_ENV]!r}")


def function_config() -> config_pb2.ConfigProto:
    """The ConfigProto the runtime gives Grappler for this thread's ``tf.function`` calls."""
    config = config_pb2.ConfigProto()
    config.ParseFromString(tf_context.context().function_call_options.config_proto_serialized)
    return config


def apply_graph_options(memory_optimizer: bool | None = None) -> config_pb2.ConfigProto:
    """Sets the Grappler options of this thread's ``tf.function`` calls: the memory optimizer off unless
    `memory_optimizer` (default: ``memory_optimizer_wanted()``). Functions traced and first called after this get
    them; returns the ConfigProto now in force."""
    if memory_optimizer is None:
        memory_optimizer = memory_optimizer_wanted()
    config = function_config()
    RewriterConfig = rewriter_config_pb2.RewriterConfig
    config.graph_options.rewrite_options.memory_optimization = (
        RewriterConfig.DEFAULT_MEM_OPT if memory_optimizer else RewriterConfig.NO_MEM_OPT)
    tf_context.context().function_call_options.config_proto_serialized = config
    return config
