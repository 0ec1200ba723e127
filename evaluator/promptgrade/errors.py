"""Typed errors. Every user mistake is one of these, so the CLI can print it as one line.

Errors carry *where* the problem is (file, line, example id) because a message without a location
makes the user search for it, and *what to do* where that is knowable.
"""

from __future__ import annotations

from pathlib import Path


class PromptgradeError(Exception):
    """Base class: ``str(error)`` is the one line the CLI prints."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        if self.path is None:
            return self.message
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


class ConfigError(PromptgradeError):
    """An experiment, task or price file is invalid."""


class PromptError(PromptgradeError):
    """A prompt template is missing, invalid or cannot be rendered."""


class PromptChangedError(PromptError):
    """A released prompt version's text changed: released versions are immutable."""


class DatasetError(PromptgradeError):
    """A dataset cannot be loaded, or one of its examples is unusable."""


class ProviderError(PromptgradeError):
    """A model provider cannot be used (e.g. unknown provider, bad settings)."""


class CredentialsError(ProviderError):
    """No usable credentials are configured for a provider."""


class TrackingError(PromptgradeError):
    """The MLflow store cannot be used as asked."""


class SweepBusy(TrackingError):
    """Another live sweep holds the unfinished sweep run this one would resume: wait, or run it later."""

    exit_code = 3


class SweepAborted(PromptgradeError):
    """A sweep stopped before the end (provider keeps failing, quota, budget); it can be resumed."""

    exit_code = 3


class SettingsError(ConfigError):
    """An environment variable promptgrade reads has a value it cannot use (named in the message)."""
