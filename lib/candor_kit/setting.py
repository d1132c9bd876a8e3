"""What a setting is: one environment variable a service reads, its kind, bounds and default, and
when it is required. The declarations themselves are candor_kit.catalogue's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "int", "float", "list", "choice", "file"]


@dataclass(frozen=True)
class Setting:
    """One environment variable a service reads."""

    name: str
    doc: str
    default: str | None = None
    kind: Kind = "text"
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    #: (setting, value): required only while that other setting has that value.
    required_if: tuple[Setting, str] | None = None
    #: The value is, or names a file holding, a secret: it comes from a Secret, never a ConfigMap.
    secret: bool = False

    @property
    def required(self) -> bool:
        """Whether the setting must always be given."""
        return self.default is None

    def missing(self, environ: Mapping[str, str]) -> str:
        """Why the setting must be given, when ``environ`` lacks it and needs it; "" otherwise."""
        if str(environ.get(self.name, "")).strip():
            return ""
        if self.required:
            return f"{self.name} is required"
        if self.required_if is not None:
            other, when = self.required_if
            if (str(environ.get(other.name, "")).strip() or other.default) == when:
                return f"{self.name} is required when {other.name}={when}"
        return ""


def int_setting(name: str, doc: str, default: int, low: int, high: int) -> Setting:
    """A whole number between ``low`` and ``high``."""
    return Setting(name, doc, str(default), "int", low, high)


def float_setting(name: str, doc: str, default: float, low: float, high: float) -> Setting:
    """A number between ``low`` and ``high``."""
    return Setting(name, doc, str(default), "float", low, high)


def file_setting(
    name: str, doc: str, *, secret: bool = False, required_if: tuple[Setting, str] | None = None
) -> Setting:
    """A file's path, empty by default (``secret``: the file holds one)."""
    return Setting(name, doc, "", "file", secret=secret, required_if=required_if)
