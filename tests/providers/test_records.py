"""Given the provider records, then each one is whole: its class imports and keeps the protocol, its
Lambda files exist, its experiment fields are the only ones its models accept, its Lambda variables
are documented, and it has a local server for the tests — and the record module stays light enough
for every Lambda zip."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from helpers.provider_servers import STAND_INS
from promptgrade.config import PROVIDER_FIELDS, ModelSpec
from promptgrade.errors import ProviderError
from promptgrade.providers import records
from promptgrade.providers.records import NAMES, RECORDS, Credential, ProviderRecord, accepting, find
from promptgrade.providers.registry import make_provider
from promptgrade.shipping.package import GRADING_PATH, RUNTIME_PROVIDED

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "evaluator" / "promptgrade"


@pytest.mark.parametrize("record", RECORDS, ids=NAMES)
def test_the_class_imports_and_keeps_the_protocol(record: ProviderRecord) -> None:
    provider_class = record.provider_class()
    assert provider_class.name == record.name
    for method in ("complete", "aclose"):
        assert inspect.iscoroutinefunction(getattr(provider_class, method)), method
    assert record.module == provider_class.__module__
    assert record.module.removeprefix("promptgrade.").replace(".", "/") + ".py" in record.lambda_modules
    if record.batch is not None:
        assert record.batch_class().__name__ == record.batch.partition(":")[2]


@pytest.mark.parametrize("record", RECORDS, ids=NAMES)
def test_what_its_lambda_zip_needs_exists(record: ProviderRecord) -> None:
    for module in record.lambda_modules:
        assert (PACKAGE / module).is_file(), module
    lock = ROOT / record.lambda_requirements
    assert lock.is_file() and lock.with_suffix(".in").is_file()
    if record.package not in RUNTIME_PROVIDED:
        assert f"\n{record.package}==" in lock.read_text(encoding="utf-8")
    assert (record.role_grant is not None) is (record.credential is Credential.IAM_ROLE)


def test_the_record_module_is_light_and_shipped_in_every_zip() -> None:
    """Pure data and the standard library: a Bedrock zip must not import pydantic-settings or an SDK."""
    tree = ast.parse((PACKAGE / "providers" / "records.py").read_text(encoding="utf-8"))
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    assert "providers/records.py" in GRADING_PATH
    assert records.__file__ and Path(records.__file__).resolve() == PACKAGE / "providers" / "records.py"


@pytest.mark.parametrize("record", RECORDS, ids=NAMES)
def test_its_lambda_variables_are_documented(record: ProviderRecord) -> None:
    readme = (ROOT / "lambda_handler" / "README.md").read_text(encoding="utf-8")
    for variable in record.lambda_settings.values():
        assert f"`{variable}`" in readme, variable


def test_every_provider_has_a_stand_in() -> None:
    assert set(STAND_INS) == set(NAMES)


@pytest.mark.parametrize("provider", NAMES)
@pytest.mark.parametrize("field", [*PROVIDER_FIELDS, "batch"])
def test_a_model_may_set_only_the_fields_its_provider_takes(provider: str, field: str) -> None:
    value: object = True if field == "batch" else "x"
    owners = accepting(field)
    if find(provider) in owners:
        assert getattr(ModelSpec(provider=provider, model="m", **{field: value}), field) == value
        return
    with pytest.raises(ValidationError) as raised:
        ModelSpec(provider=provider, model="m", **{field: value})
    if field == "batch":
        expected = f"only {' or '.join(r.title for r in owners)} models run as batch jobs"
    else:
        expected = f"{field} is for provider: {' or '.join(r.name for r in owners)}, not {provider}"
    assert expected in str(raised.value)


def test_an_unknown_provider_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(
        ProviderError, match=f"unknown provider 'watsonx' \\(available: {', '.join(NAMES)}\\)"
    ):
        make_provider("watsonx", "granite-vision")
    with pytest.raises(ValidationError) as raised:
        ModelSpec(provider="watsonx", model="granite-vision")  # type: ignore[arg-type]
    assert all(f"'{name}'" in str(raised.value) for name in NAMES)
