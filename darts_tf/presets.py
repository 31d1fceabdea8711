"""Named configs (the `--preset` of a script): a dict from name to a config dataclass, registered once, handed out
as fresh copies with some fields replaced. The RNN trainings' presets and the CNN search's are two of them."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict


class Presets(Dict[str, Any]):
    """Presets of one kind of config; `what` names them in errors ("RNN" -> "Unknown RNN preset 'x'. ...")."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, name: str, config: Any) -> Any:
        if name in self:
            raise ValueError(f"{self.what[:1].upper()}{self.what[1:]} preset {name!r} is already registered.")
        self[name] = config
        return config

    def config(self, name: str, **overrides) -> Any:
        """A fresh copy of the preset `name`, with the fields in `overrides` replaced."""
        if name not in self:
            raise ValueError(f"Unknown {self.what} preset {name!r}. Known presets: {', '.join(sorted(self))}.")
        return dataclasses.replace(self[name], **overrides)
