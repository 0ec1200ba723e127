"""The ``promptgrade`` command: thin verbs over the library, rendered with rich.

One module per verb group (``sweep``, ``compare`` — also ``ui`` and ``report`` —, ``ship`` — promote,
package, deploy —, ``data``, ``tools`` — cache, prompts, fake-gemini), plus the groups that live in
their own packages (``batches``, ``optimize``, ``label``). Each registers on the one typer ``app`` of
``common``, which also holds what they share: the consoles, escaping, and the one-line errors.

Every PromptgradeError becomes one red line and a non-zero exit; a traceback means a bug in
promptgrade, never a mistake of the user's.
"""

from __future__ import annotations

import importlib

from promptgrade.batch.cli import batches_app
from promptgrade.cli.common import app, esc, user_errors
from promptgrade.labels.cli import label_app
from promptgrade.optimize.command import optimize as _optimize

# Imported in the loop's order, which is the order `promptgrade --help` lists them in.
for _verbs in ("sweep", "compare", "ship", "tools", "data"):
    importlib.import_module(f"promptgrade.cli.{_verbs}")
app.add_typer(batches_app, name="batches")
app.command("optimize")(user_errors(_optimize))
app.add_typer(label_app, name="label")

__all__ = ["app", "esc", "main", "user_errors"]


def main() -> None:  # pragma: no cover - the console script calls app()
    app()
