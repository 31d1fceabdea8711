"""The finiteness guard: a run whose loss, alphas or weights become NaN or infinite stops at once, with an error that
says where (epoch, step) and the likely cause (a learning rate too large), before anything is written from the bad
values (checkpoint, genotype, metrics). One component with one job, added to ``fit``'s callbacks ahead of the writers.

``FirstStepNotice`` guards against the other silent failure of a long run, a slow start that cannot be told from a
hang: it says before the first step that the step is being traced (and XLA-compiled), and how long that took.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import keras
import numpy as np
from absl import logging

# the flags that set the step sizes: what a diverged run should lower
WEIGHT_RATE_FLAGS = ("--learning_rate",)
SEARCH_RATE_FLAGS = ("--learning_rate", "--arch_learning_rate")


class NonFiniteError(ValueError):
    """A loss, alpha or weight became NaN or infinite (the run diverged), or a file holds such values."""


def non_finite(arrays: Mapping[str, Any]) -> List[str]:
    """'name (k of n values are nan/inf)' for each floating value of `arrays` that is not finite, in order."""
    found = []
    for name, value in arrays.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.inexact):
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            kinds = "/".join(k for k, m in (("nan", np.isnan(value)), ("inf", np.isinf(value))) if m.any())
            found.append(f"{name} ({int(bad.sum())} of {value.size} values are {kinds})")
    return found


def check_finite(arrays: Mapping[str, Any], what: str, fix: str) -> None:
    """Raises ``NonFiniteError`` ("<what> are not finite: ...; <fix>") when any of `arrays` holds NaN or inf."""
    bad = non_finite(arrays)
    if bad:
        raise NonFiniteError(f"{what} are not finite: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. {fix}")


def lower_rate_hint(rate_flags: Sequence[str]) -> str:
    return f"The learning rate is likely too large: lower {' or '.join(rate_flags)}"


class NonFiniteGuard(keras.callbacks.Callback):
    """Raises ``NonFiniteError`` at the first training step whose logged losses/metrics or architecture variables
    (``model.arch_variables``, where the model has them) are not finite, and at the end of an epoch whose variables
    (weights, alphas, batch-norm statistics) are not. Put it before the callbacks that write: a bad epoch then writes
    nothing, and the checkpoint of the epoch before it (`state_path`) is kept.

    `rate_flags` are the flags named as the likely cause (``SEARCH_RATE_FLAGS`` for a search).
    """

    def __init__(self, rate_flags: Sequence[str] = WEIGHT_RATE_FLAGS, state_path: Optional[str] = None):
        super().__init__()
        self.rate_flags, self.state_path = tuple(rate_flags), state_path
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        where = f"epoch {self.epoch + 1}, step {batch + 1}"
        steps = (getattr(self, "params", None) or {}).get("steps")
        if steps:
            where += f" of {steps}"
        self._check_logs(logs, where)
        arch = list(getattr(self.model, "arch_variables", None) or [])
        if arch:
            bad = non_finite({v.path: v.numpy() for v in arch})
            if bad:
                self._fail(where, f"the architecture variables are not finite ({', '.join(bad)})",
                           f"The architecture learning rate is likely too large: lower "
                           f"{' or '.join(reversed(self.rate_flags))}")

    def on_epoch_end(self, epoch, logs=None):
        where = f"the end of epoch {epoch + 1}"
        self._check_logs(logs, where)
        bad = non_finite({v.path: v.numpy() for v in self.model.variables})
        if bad:
            self._fail(where, f"the model's variables are not finite ({', '.join(bad[:5])})",
                       lower_rate_hint(self.rate_flags))

    def _check_logs(self, logs: Optional[Dict[str, Any]], where: str) -> None:
        values = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float, np.number, np.ndarray))}
        bad = [k for k in values if non_finite({k: values[k]})]
        if bad:
            what = "the loss is" if any("loss" in k for k in bad) else "the logged metrics are"
            shown = ", ".join(f"{k}={float(np.mean(values[k]))}" for k in bad)
            self._fail(where, f"{what} not finite ({shown})", lower_rate_hint(self.rate_flags))

    def _fail(self, where: str, what: str, cause: str) -> None:
        if self.state_path and self.epoch and os.path.isfile(self.state_path):
            kept = f" The last good checkpoint ({self.state_path}, after epoch {self.epoch}) is kept."
        elif not self.epoch:
            kept = " No epoch finished, so there is no checkpoint."
        else:
            kept = ""
        raise NonFiniteError(f"Training diverged at {where}: {what}. {cause}, and run again in a new --output_dir "
                             f"(a resume keeps the run's flags).{kept} Nothing was written from the non-finite values.")


class FirstStepNotice(keras.callbacks.Callback):
    """Logs, when `fit` begins, that its first step includes tracing the step into a TensorFlow graph (and with
    jit_compile its XLA compilation, which can take minutes), then how long that first step took."""

    def on_train_begin(self, logs=None):
        self.started = time.time()
        self.pending = True
        if getattr(self.model, "jit_compile", False):
            logging.info("Starting the first step: it includes tracing the step into a graph and compiling it with "
                         "XLA (--jit_compile), which can take minutes.")
        else:
            logging.info("Starting the first step: it includes tracing the step into a graph (slower than the "
                         "steps after it; minutes on a loaded machine).")

    def on_train_batch_end(self, batch, logs=None):
        if self.pending:
            self.pending = False
            logging.info("First step done in %.1f s (tracing included).", time.time() - self.started)
