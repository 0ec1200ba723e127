"""Rewrite the README's table of environment variables from ``promptgrade.settings``.

The table lives between two marker comments so that the prose around it stays hand-written; the
rows come from the ``Settings`` class, so a variable added there cannot be missing here
(``tests/test_settings.py`` fails while the README is stale).

    .venv/bin/python scripts/gen_settings_table.py            # rewrite README.md
    .venv/bin/python scripts/gen_settings_table.py --check    # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from promptgrade.settings import reference_table

README = Path(__file__).resolve().parents[1] / "README.md"
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
COMMAND = "python scripts/gen_settings_table.py"


def splice(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table`` (markers kept)."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"README.md has no {START} … {END} block for the table")
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether README.md is up to date")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    wanted = splice(current, reference_table())
    if args.check:
        if wanted != current:
            print(f"README.md's settings table is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
