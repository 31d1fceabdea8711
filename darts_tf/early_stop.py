"""Early stopping of an architecture search, before DARTS collapses into parameter-free operations.

Two rules, each a pure function of the per-epoch history that ``darts_tf.search`` keeps in metrics.json (the
``darts_tf.health`` keys), so a decision can be replayed on a scripted history or on a resumed run's file:

* ``darts_plus`` (Liang et al. 2019, DARTS+): stop once the normal cell holds ``max_skip_connects`` (2) or more
  skip-connects, keeping the epoch before; or once the derived genotype has not changed for ``stable_epochs`` (10)
  epochs in a row (the ranking of the alphas is stable), keeping the current epoch. A recurrent cell has no normal
  cell: there only the stability rule applies.
* ``robust_darts`` (Zela et al. 2020, DARTS-ES): track the dominant eigenvalue lambda of the Hessian of L_val w.r.t.
  alpha; with lambda_bar(i) its mean over the ``window`` (5) epochs centred on epoch i, stop at epoch t once
  lambda_bar(i) / lambda_bar(i - lag) > ``ratio`` (1.3) for i = t - window // 2 (the newest full window), keeping
  epoch i - lag (``lag`` 5, the paper's k: "return the architecture from epoch i - k"); no decision before epoch
  i - lag reaches ``start_epoch``.

Epochs are counted as in metrics.json (1 = after the first epoch). ``EarlyStopping`` is the Keras callback; the
search then publishes the kept epoch's alphas and genotype and says in metrics.json why and when it stopped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

import keras
from absl import logging

from darts_tf.health import HEALTH_FLAG_METADATA

EARLY_STOP_RULES = ("none", "darts_plus", "robust_darts")

# absl flag metadata of the search configs' early-stopping fields (``darts_tf.cli.common`` makes an enum of `choices`)
EARLY_STOP_FLAG_METADATA = {
    "early_stop": {"choices": EARLY_STOP_RULES,
                   "help": "Stop the search early and publish an earlier epoch's genotype: darts_plus (DARTS+: >= "
                           "--es_max_skip_connects skip-connects in the normal cell, or a genotype unchanged for "
                           "--es_stable_epochs epochs) or robust_darts (RobustDARTS: the dominant Hessian eigenvalue's "
                           "--es_window-epoch average rises past --es_ratio times its value --es_lag epochs before; "
                           "implies --hessian_eigenvalue). metrics.json's early_stop says which epoch and why."},
    "es_max_skip_connects": {"help": "darts_plus: stop once the normal cell holds this many skip-connects (the epoch "
                                     "before is kept)."},
    "es_stable_epochs": {"help": "darts_plus: stop once the derived genotype has not changed for this many epochs "
                                 "(0: never)."},
    "es_ratio": {"help": "robust_darts: stop once the averaged dominant eigenvalue exceeds this ratio of its value "
                         "--es_lag epochs before (Zela et al.: 1/0.75)."},
    "es_window": {"help": "robust_darts: the eigenvalue is averaged over this many epochs centred on each epoch."},
    "es_lag": {"help": "robust_darts: compare with the average this many epochs earlier, and keep that epoch."},
    "es_start_epoch": {"help": "robust_darts: the earliest epoch (from 1) that can be kept, i.e. compared against."},
}


@dataclasses.dataclass(frozen=True)
class EarlyStopConfig:
    """The early-stopping rule and its settings, validated here; ``from_flags`` reads them from a search's flags."""

    rule: str = "none"
    max_skip_connects: int = 2
    stable_epochs: int = 10
    ratio: float = 1.3
    window: int = 5
    lag: int = 5
    start_epoch: int = 10

    def __post_init__(self):
        if self.rule not in EARLY_STOP_RULES:
            raise ValueError(f"--early_stop must be one of {', '.join(EARLY_STOP_RULES)}. Received: "
                             f"early_stop={self.rule!r}")
        for flag, value, least in (("es_max_skip_connects", self.max_skip_connects, 1),
                                   ("es_stable_epochs", self.stable_epochs, 0), ("es_window", self.window, 1),
                                   ("es_lag", self.lag, 1), ("es_start_epoch", self.start_epoch, 1)):
            if int(value) != value or value < least:
                raise ValueError(f"--{flag} must be an integer >= {least}. Received: {flag}={value}")
        if not self.ratio > 1.0:
            raise ValueError(f"--es_ratio must be > 1 (the rise of the eigenvalue that stops the search). Received: "
                             f"es_ratio={self.ratio}")

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any]) -> "EarlyStopConfig":
        """From a search's flags (``SearchConfig.to_dict()``); missing keys take the defaults."""
        return cls(**{field: flags[flag] for flag, field in _FLAG_FIELDS.items() if flags.get(flag) is not None})

    @property
    def enabled(self) -> bool:
        return self.rule != "none"

    @property
    def needs_eigenvalue(self) -> bool:
        return self.rule == "robust_darts"


# flag -> EarlyStopConfig field
_FLAG_FIELDS = {"early_stop": "rule", "es_max_skip_connects": "max_skip_connects", "es_stable_epochs": "stable_epochs",
                "es_ratio": "ratio", "es_window": "window", "es_lag": "lag", "es_start_epoch": "start_epoch"}
HEALTH_DEFAULTS = {"hessian_eigenvalue": False, "hessian_iterations": 20}


def monitor_field(flag: str):
    """The search configs' dataclass field of a health or early-stopping flag: its default (``EarlyStopConfig``'s,
    ``HEALTH_DEFAULTS``) and its flag help, so that the CNN and RNN searches declare them alike."""
    if flag in HEALTH_DEFAULTS:
        return dataclasses.field(default=HEALTH_DEFAULTS[flag], metadata=HEALTH_FLAG_METADATA[flag])
    return dataclasses.field(default=getattr(EarlyStopConfig, _FLAG_FIELDS[flag]),
                             metadata=EARLY_STOP_FLAG_METADATA[flag])


def check_monitor_flags(flags: Mapping[str, Any]) -> EarlyStopConfig:
    """Validates a search's health and early-stopping flags (``SearchConfig.validate``); returns the rule's config."""
    iterations = flags.get("hessian_iterations", HEALTH_DEFAULTS["hessian_iterations"])
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"--hessian_iterations must be an integer >= 1. Received: hessian_iterations={iterations}")
    return EarlyStopConfig.from_flags(flags)


@dataclasses.dataclass(frozen=True)
class StopDecision:
    """Stop after epoch `stop_epoch`; publish epoch `kept_epoch` (both counted from 1, as metrics.json)."""

    rule: str
    stop_epoch: int
    kept_epoch: int
    reason: str

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _epoch(history: Sequence[Mapping[str, Any]], index: int) -> int:
    return int(history[index].get("epoch", index + 1))


def darts_plus_decision(history: Sequence[Mapping[str, Any]], max_skip_connects: int = 2,
                        stable_epochs: int = 10) -> Optional[StopDecision]:
    """DARTS+ after the last epoch of `history`: >= `max_skip_connects` skip-connects in the normal cell (keep the
    epoch before; the first epoch is kept if it is the first), or `stable_epochs` epochs in a row without a genotype
    change (keep this epoch). None: go on."""
    if not history:
        return None
    last, epoch = history[-1], _epoch(history, -1)
    skips = last.get("skip_connects/normal", last.get("skip_connects/cell"))  # DARTS' normal cell, NAS-Bench-201's
    if skips is not None and skips >= max_skip_connects:
        kept = _epoch(history, -2) if len(history) > 1 else epoch
        note = "" if len(history) > 1 else " (no earlier epoch: the first is kept)"
        return StopDecision("darts_plus", epoch, kept, f"the normal cell holds {int(skips)} skip-connects "
                                                       f"(>= {max_skip_connects}) after epoch {epoch}{note}")
    if stable_epochs and len(history) >= stable_epochs:
        changes = [h.get("genotype_changes") for h in history[-stable_epochs:]]
        if all(c is not None and c == 0 for c in changes):
            return StopDecision("darts_plus", epoch, epoch, f"the genotype has not changed for {stable_epochs} epochs "
                                                            f"(epochs {_epoch(history, -stable_epochs)}-{epoch})")
    return None


def windowed_mean(values: Sequence[float], centre: int, window: int) -> float:
    """The mean of values[centre - window // 2 : centre + window // 2 + 1] (cut at the start)."""
    half = window // 2
    part = values[max(0, centre - half): centre + half + 1]
    return float(sum(part) / len(part))


def robust_darts_decision(history: Sequence[Mapping[str, Any]], ratio: float = 1.3, window: int = 5, lag: int = 5,
                          start_epoch: int = 10) -> Optional[StopDecision]:
    """RobustDARTS (DARTS-ES) after the last epoch t of `history` (its ``hessian_eigenvalue`` values): with i the
    newest epoch whose centred `window` is complete (t - window // 2), stop once mean(window at i) /
    mean(window at i - lag) > `ratio`, keeping epoch i - lag, once that epoch is >= `start_epoch`. None: go on."""
    values = [h.get("hessian_eigenvalue") for h in history]
    if not values or any(v is None for v in values):
        return None
    centre = len(values) - 1 - window // 2
    early = centre - lag
    if early < 0 or _epoch(history, early) < start_epoch:
        return None
    now, before = windowed_mean(values, centre, window), windowed_mean(values, early, window)
    if before > 0 and now / before > ratio:
        epoch, kept = _epoch(history, -1), _epoch(history, early)
        return StopDecision("robust_darts", epoch, kept,
                            f"the dominant Hessian eigenvalue averaged over {window} epochs rose {now / before:.3f}x "
                            f"(> {ratio}) from epoch {kept} ({before:.4g}) to epoch {_epoch(history, centre)} "
                            f"({now:.4g})")
    return None


def decide(config: EarlyStopConfig, history: Sequence[Mapping[str, Any]]) -> Optional[StopDecision]:
    """The decision of `config`'s rule after the last epoch of `history`."""
    if config.rule == "darts_plus":
        return darts_plus_decision(history, config.max_skip_connects, config.stable_epochs)
    if config.rule == "robust_darts":
        return robust_darts_decision(history, config.ratio, config.window, config.lag, config.start_epoch)
    return None


def first_stop(config: EarlyStopConfig, history: Sequence[Mapping[str, Any]]) -> Optional[StopDecision]:
    """The first epoch of `history` after which `config` stops (a resumed search replays its history with this)."""
    for n in range(1, len(history) + 1):
        decision = decide(config, history[:n])
        if decision is not None:
            return decision
    return None


class EarlyStopping(keras.callbacks.Callback):
    """Stops ``fit`` when `config`'s rule fires on `history` (the per-epoch list of metrics.json, which the
    ``ArchitectureLogger`` ahead of this callback has just extended by the epoch). ``decision`` says what to keep."""

    def __init__(self, config: EarlyStopConfig, history: List[Dict[str, Any]]):
        super().__init__()
        self.config, self.history = config, history
        self.decision: Optional[StopDecision] = None

    def on_epoch_end(self, epoch, logs=None):
        if self.decision is None:
            self.decision = decide(self.config, self.history)
            if self.decision is not None:
                logging.info("Early stop (%s): %s; keeping epoch %d.", self.decision.rule, self.decision.reason,
                             self.decision.kept_epoch)
                self.model.stop_training = True
