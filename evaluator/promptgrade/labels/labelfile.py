"""The labels CSV as a file to rewrite safely: every other row and column kept exactly, the write
atomic, the previous version kept.

A folder dataset's ``labels.csv`` (``id,file,categories,<grade>,split``) or a grades CSV
(``id,<grade>``) for hub and parquet datasets: only the categories and grade cells of the rows being
labelled change — never an id, a file or a split. Before each write the current file is copied to
``<name>.bak`` and into ``<name>.history/`` (with the import's changes appended to
``<name>.history/imports.jsonl``), so nothing is ever lost.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from promptgrade.errors import DatasetError
from promptgrade.files import atomic_write


def file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise DatasetError("labels file not found", path=path) from None
    except OSError as exc:
        raise DatasetError(f"cannot read labels file: {exc.strerror}", path=path) from None


def format_grade(value: float) -> str:
    return f"{value:g}"


@dataclass
class LabelsFile:
    """A CSV read as text cells (nothing normalised), so untouched rows are written back unchanged."""

    path: Path
    sha256: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]  # the line each row starts on, for messages
    newline: str

    @classmethod
    def read(cls, path: Path) -> LabelsFile:
        digest = file_sha256(path)
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DatasetError("labels file is not UTF-8 text", path=path) from None
        newline = "\r\n" if "\r\n" in text else "\n"
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError("labels file is empty", path=path, line=1) from None
        except csv.Error as exc:
            raise DatasetError(f"not valid CSV: {exc}", path=path, line=1) from None
        rows, lines = [], []
        try:
            start = reader.line_num + 1
            for row in reader:
                rows.append(row)
                lines.append(start)
                start = reader.line_num + 1
        except csv.Error as exc:
            raise DatasetError(f"not valid CSV: {exc}", path=path, line=reader.line_num) from None
        header = [name.strip() for name in header]
        if "id" not in header:
            raise DatasetError(f"labels file has no id column; its header is: {','.join(header)}", path=path)
        return cls(path, digest, header, rows, lines, newline)

    def column(self, name: str) -> int | None:
        return self.header.index(name) if name in self.header else None

    def index(self) -> dict[str, int]:
        """Example id → row position (the first, if an id repeats: validate-data reports that)."""
        at = self.header.index("id")
        found: dict[str, int] = {}
        for position, row in enumerate(self.rows):
            if len(row) > at:
                found.setdefault(row[at].strip(), position)
        return found

    def cell(self, position: int, name: str) -> str:
        column = self.column(name)
        row = self.rows[position]
        return row[column].strip() if column is not None and column < len(row) else ""

    def set(self, position: int, name: str, value: str) -> None:
        if name not in self.header:
            self.header.append(name)
            for row in self.rows:
                row.extend([""] * (len(self.header) - len(row)))
        row = self.rows[position]
        column = self.header.index(name)
        row.extend([""] * (column + 1 - len(row)))
        row[column] = value

    def render(self) -> str:
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator=self.newline)
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return out.getvalue()

    def write(self, record: dict[str, Any]) -> Path:
        """Replace the file atomically, after keeping the previous one; returns the backup's path."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        history = self.path.with_name(self.path.name + ".history")
        history.mkdir(exist_ok=True)
        previous = self.path.read_bytes()
        atomic_write(history / f"{stamp}-{self.sha256[:12]}.csv", previous)
        backup = self.path.with_name(self.path.name + ".bak")
        atomic_write(backup, previous)
        atomic_write(self.path, self.render().encode("utf-8"))
        with (history / "imports.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps({"at": stamp, "previous_sha256": self.sha256, **record}) + "\n")
        return backup
