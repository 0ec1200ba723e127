"""YAML in, typed objects out, with the line of the offending key in every error.

pydantic reports *which* field is wrong; users need *where* it is in their file. Composing the YAML
node tree alongside the data lets us map a pydantic error location back to a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from promptgrade.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def read_yaml(path: str | Path, what: str) -> tuple[Any, yaml.Node | None]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", path=path) from None
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"not valid YAML: {problem}", path=path, line=mark.line + 1 if mark else None
        ) from None


def validation_error(exc: ValidationError, path: str | Path, node: yaml.Node | None) -> ConfigError:
    """The first pydantic error as a ConfigError at its line (the rest are usually consequences)."""
    first = exc.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    field = ".".join(str(p) for p in loc) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field (check its spelling against docs/guides/experiments.md)"
    return ConfigError(f"{field}: {message}", path=path, line=line_of(node, loc))


def load_model(model: type[M], path: str | Path, what: str, **context: Any) -> M:
    data, node = read_yaml(path, what)
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} must be a YAML mapping", path=path, line=1)
    try:
        return model.model_validate(data, context=context or None)
    except ValidationError as exc:
        raise validation_error(exc, path, node) from None
