"""Grappler settings for the traced steps (issue 23: the time to the first step).

Before a traced step runs the first time, TensorFlow's graph optimiser (Grappler) rewrites its graph, one pass after
another. On the search supernet's graphs (76k-254k ops) that is 29-59% of the wait before the first step, and one
pass, the ``memory_optimizer``, is 37-47% of Grappler's time (benchmarks/RESULTS.md, "Where the time to the first
step goes"). It looks for recomputation and host-swapping opportunities (recomputation only of ops a user marked,
and nothing here marks any; swapping only to relieve a GPU's memory) and rewrites large gradient sums (AddN) into
in-place accumulations, which can lower the peak memory. Grappler also runs its whole list of passes twice; the
second round found almost nothing left to do on these graphs (14 of 65k nodes, 20% of Grappler's time at L8 C8).
The ``dependency_optimizer`` (which prunes redundant control edges and identities) then took a third of what
remained on the second-order graphs (25 of 73 s, FD at L8 C16). So by default darts_tf runs Grappler once, without
the memory optimizer and without the dependency optimizer: the traced step is the same computation
and its first call comes sooner; its effect on the peak memory (measured lower, not higher) and on the step time is in
benchmarks/RESULTS.md ("Grappler: one round, no memory optimizer"). ``DARTS_TF_GRAPPLER_DEFAULTS=1`` in the environment brings TensorFlow's defaults back (e.g.
for a GPU whose memory a run overflows).

TensorFlow has no public switch for the memory optimizer: ``tf.config.optimizer.set_experimental_options`` has no
key for ``memory_optimization``. What the runtime hands Grappler for a ``tf.function`` call is the ConfigProto of the eager
context's function-call options (``context.function_call_options``), which is where ``apply_graph_options`` sets it;
the options are per thread (set them in the thread that runs the steps, as every trainer does through
``checkpoint.start_run``) and ``set_experimental_options`` resets them (apply again after it).
"""

from __future__ import annotations

import os

from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context as tf_context  # no public API for the function-call ConfigProto

DEFAULTS_ENV = "DARTS_TF_GRAPPLER_DEFAULTS"


def tensorflow_defaults_wanted() -> bool:
    """True when the environment asks for TensorFlow's own Grappler settings (``DARTS_TF_GRAPPLER_DEFAULTS`` set to
    1/true/yes/on); False by default. Other values are refused with the accepted ones named."""
    value = os.environ.get(DEFAULTS_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{DEFAULTS_ENV} must be 1/true/yes/on (TensorFlow's Grappler settings: the memory optimizer, two "
                     f"rounds) or 0/false/no/off (darts_tf's: one round, no memory or dependency optimizer; the default). "
                     f"Received: {DEFAULTS_ENV}={os.environ[DEFAULTS_ENV]!r}")


def function_config() -> config_pb2.ConfigProto:
    """The ConfigProto the runtime gives Grappler for this thread's ``tf.function`` calls."""
    config = config_pb2.ConfigProto()
    config.ParseFromString(tf_context.context().function_call_options.config_proto_serialized)
    return config


def apply_graph_options(tensorflow_defaults: bool | None = None) -> config_pb2.ConfigProto:
    """Sets the Grappler options of this thread's ``tf.function`` calls: one round of passes without the memory and
    dependency optimizers, or with `tensorflow_defaults` (default: ``tensorflow_defaults_wanted()``) TensorFlow's own. Functions
    first called after this get them; returns the ConfigProto now in force."""
    if tensorflow_defaults is None:
        tensorflow_defaults = tensorflow_defaults_wanted()
    config = function_config()
    RewriterConfig = rewriter_config_pb2.RewriterConfig
    rewrite = config.graph_options.rewrite_options
    rewrite.memory_optimization = RewriterConfig.DEFAULT_MEM_OPT if tensorflow_defaults else RewriterConfig.NO_MEM_OPT
    rewrite.meta_optimizer_iterations = RewriterConfig.DEFAULT_NUM_ITERS if tensorflow_defaults else RewriterConfig.ONE
    rewrite.dependency_optimization = RewriterConfig.DEFAULT if tensorflow_defaults else RewriterConfig.OFF
    tf_context.context().function_call_options.config_proto_serialized = config
    return config
