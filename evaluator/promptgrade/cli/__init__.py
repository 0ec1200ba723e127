"""The ``promptgrade`` command: thin verbs over the library, rendered with rich.

One module per verb group (``sweep``, ``compare`` — also ``ui`` and ``report`` —, ``ship`` — promote,
package, deploy —, ``tools`` — cache, prompts, fake-gemini —, ``data``, ``optimize``, ``batches``,
``label`` and ``production`` — backfill, monitor). Each registers on the one typer ``app`` of
``common``, which also holds what they share: the consoles, escaping, and the one-line errors. This
package is the top of the import graph: it imports the library, and nothing of the library imports it.

Every PromptgradeError becomes one red line and a non-zero exit; a traceback means a bug in
promptgrade, never a mistake of the user's.
"""

from __future__ import annotations

import importlib

from promptgrade.cli.common import app, esc, user_errors

# Imported in the loop's order, which is the order `promptgrade --help` lists them in (commands first,
# then groups, each in the order they were registered).
for _verbs in ("sweep", "compare", "ship", "tools", "data", "optimize", "batches", "label", "production"):
    importlib.import_module(f"promptgrade.cli.{_verbs}")

__all__ = ["app", "esc", "main", "user_errors"]


def main() -> None:  # pragma: no cover - the console script calls app()
    app()
