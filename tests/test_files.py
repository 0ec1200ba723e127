"""Files the user named: written as UTF-8, and a failure is one error naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptgrade.errors import PromptgradeError
from promptgrade.files import write_text


def test_write_text_writes_utf8(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    write_text(path, '[{"reason": "#1 disagreement · soupe à l\'oignon"}]\n')
    assert path.read_bytes().decode("utf-8") == '[{"reason": "#1 disagreement · soupe à l\'oignon"}]\n'


def test_a_file_that_cannot_be_written_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "no-such-folder" / "tasks.json"
    with pytest.raises(PromptgradeError) as caught:
        write_text(path, "[]\n")
    assert str(caught.value) == f"{path}: cannot write: No such file or directory"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no traceback chain shown
