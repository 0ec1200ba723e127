"""The lab's environment in one typed object: defaults, parsing, one-line errors, and who may read it.

Given the variables a user exports, when a command starts, then each has its documented meaning, a
malformed one is one line naming it (never a traceback), the README's table says what the class
says, and the modules shipped in the Lambda zip never import the settings module.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from promptgrade.batch.executor import FIRST_POLL_S
from promptgrade.cli import app
from promptgrade.config import ModelSpec, load_experiment
from promptgrade.errors import ConfigError, SettingsError
from promptgrade.providers.gemini_batch import INLINE_LIMIT_BYTES
from promptgrade.settings import (
    Settings,
    child_environment,
    load_settings,
    read_secret,
    reference_table,
    set_library_default,
)
from promptgrade.shipping.package import GRADING_PATH, PROVIDER_MODULES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "evaluator" / "promptgrade"
VARIABLES = [str(field.validation_alias) for field in Settings.model_fields.values()]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """None of the variables set (the suite's own conftest sets some); HOME and the working directory
    are the test's own."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # the default answer cache is relative: never the checkout's


def test_the_defaults_are_what_the_modules_did_before() -> None:
    settings = load_settings()
    assert settings.cache == Path(".promptgrade") / "cache.sqlite"
    assert settings.cache_dir == Path.home() / ".cache" / "promptgrade"
    assert settings.trace_examples is True and settings.gemini_convert_per_call is False
    assert settings.plots is True
    assert settings.trace_workers_after == 512
    assert settings.batch_poll_s == FIRST_POLL_S == 10.0
    assert settings.batch_inline_bytes == INLINE_LIMIT_BYTES == 20 * 1024 * 1024
    assert settings.mlflow_tracking_uri is None and settings.openai_base_url is None
    assert settings.openai_api_key is None


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("PROMPTGRADE_CACHE", "/data/answers.sqlite", "cache", Path("/data/answers.sqlite")),
        ("PROMPTGRADE_CACHE_DIR", "/data/datasets", "cache_dir", Path("/data/datasets")),
        ("PROMPTGRADE_TRACE_EXAMPLES", "0", "trace_examples", False),
        ("PROMPTGRADE_PLOTS", "off", "plots", False),
        ("PROMPTGRADE_GEMINI_CONVERT_PER_CALL", "1", "gemini_convert_per_call", True),
        ("PROMPTGRADE_TRACE_WORKERS_AFTER", "1", "trace_workers_after", 1),
        ("PROMPTGRADE_BATCH_POLL_S", "0.05", "batch_poll_s", 0.05),
        ("PROMPTGRADE_BATCH_INLINE_BYTES", " 1000 ", "batch_inline_bytes", 1000),
        ("PROMPTGRADE_BATCH_MAX_REQUESTS", "4", "batch_max_requests", 4),
        ("PROMPTGRADE_BEDROCK_BATCH_MIN_RECORDS", "1", "bedrock_batch_min_records", 1),
        ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000", "mlflow_tracking_uri", "http://127.0.0.1:5000"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1", "openai_base_url", "http://127.0.0.1:11434/v1"),
    ],
)
def test_each_variable_is_read(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(variable, raw)
    assert getattr(load_settings(), field) == expected


def test_every_variable_has_a_test_above_and_a_meaning() -> None:
    tested = {"OPENAI_API_KEY"}  # its own tests below: a secret
    source = Path(__file__).read_text(encoding="utf-8")
    tested |= {name for name in VARIABLES if f'("{name}", ' in source}
    assert set(VARIABLES) == tested
    assert all(field.description for field in Settings.model_fields.values())


def test_an_empty_variable_is_the_default_and_a_home_path_is_expanded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As ``os.environ.get(name) or default`` read them, and as a shell would not expand ``~`` in quotes."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "")
    assert load_settings() == Settings()
    monkeypatch.setenv("PROMPTGRADE_CACHE_DIR", "~/datasets")
    assert load_settings().cache_dir == Path.home() / "datasets"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(w, True) for w in ("1", "true", "yes", "on", " TRUE ")]
    + [(w, False) for w in ("0", "false", "no", "off", "False")],
)
def test_flags_take_the_spellings_they_always_took(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("PROMPTGRADE_TRACE_EXAMPLES", raw)
    monkeypatch.setenv("PROMPTGRADE_GEMINI_CONVERT_PER_CALL", raw)
    settings = load_settings()
    assert settings.trace_examples is expected and settings.gemini_convert_per_call is expected


def test_the_openai_key_is_a_secret_and_blank_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", " sk-test-not-real ")
    settings = load_settings()
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-test-not-real"
    assert "sk-test" not in repr(settings) and "sk-test" not in str(settings)
    assert settings.openai_key(None) == "sk-test-not-real"
    monkeypatch.setenv("MY_LLM_KEY", "sk-other")
    assert settings.openai_key("MY_LLM_KEY") == "sk-other" and settings.openai_key("UNSET_KEY_X") is None
    monkeypatch.setenv("OPENAI_API_KEY", "   ")
    assert load_settings().openai_api_key is None and load_settings().openai_key(None) is None


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("PROMPTGRADE_BATCH_INLINE_BYTES", "abc", "expected a number of bytes"),
        ("PROMPTGRADE_BATCH_INLINE_BYTES", "20MB", "expected a number of bytes"),
        ("PROMPTGRADE_BATCH_INLINE_BYTES", "-5", "expected a number of bytes"),
        ("PROMPTGRADE_BATCH_POLL_S", "soon", "expected a number of seconds above 0"),
        ("PROMPTGRADE_BATCH_MAX_REQUESTS", "0", "expected a whole number above 0"),
        ("PROMPTGRADE_BEDROCK_BATCH_MIN_RECORDS", "a hundred", "expected a whole number above 0"),
        ("PROMPTGRADE_BATCH_POLL_S", "0", "expected a number of seconds above 0"),
        ("PROMPTGRADE_TRACE_EXAMPLES", "maybe", "expected 1/true/yes/on or 0/false/no/off"),
        ("PROMPTGRADE_GEMINI_CONVERT_PER_CALL", "2", "expected 1/true/yes/on or 0/false/no/off"),
    ],
)
def test_a_malformed_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, expected: str
) -> None:
    monkeypatch.setenv(variable, raw)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == 2
    assert str(caught.value) == f"{variable}={raw!r}: {expected}"


def test_two_malformed_values_are_both_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTGRADE_BATCH_POLL_S", "x")
    monkeypatch.setenv("PROMPTGRADE_BATCH_INLINE_BYTES", "y")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "PROMPTGRADE_BATCH_POLL_S='x'" in message and "PROMPTGRADE_BATCH_INLINE_BYTES='y'" in message


@pytest.mark.parametrize(
    "command",
    [["cache", "info"], ["sweep", str(ROOT / "experiments" / "quickstart.yaml"), "--dry-run"]],
    ids=["cache-info", "sweep-dry-run"],
)
def test_through_the_cli_a_malformed_value_is_exit_code_2_and_one_line(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("PROMPTGRADE_BATCH_INLINE_BYTES", "abc")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert line == "error: PROMPTGRADE_BATCH_INLINE_BYTES='abc': expected a number of bytes"


def test_the_sweep_hands_its_settings_to_the_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider reads nothing itself (it ships in the Lambda); the lab's entry point passes values."""
    from promptgrade.providers.gemini import GeminiProvider
    from promptgrade.sweep import Sweep, provider_for

    experiment = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    spec = ModelSpec(provider="gemini", model="gemini-2.5-flash")
    for name in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-not-real")

    def templated(settings: Settings | None = None) -> bool:
        provider = provider_for(spec, experiment, settings)
        assert isinstance(provider, GeminiProvider)
        return provider.converts_once

    assert templated()
    monkeypatch.setenv("PROMPTGRADE_GEMINI_CONVERT_PER_CALL", "1")
    assert not templated()
    assert templated(Settings(gemini_convert_per_call=False))  # a library caller's own settings win
    assert Sweep(ROOT / "experiments" / "quickstart.yaml").settings.gemini_convert_per_call


def test_named_secrets_and_environments_for_other_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "  k  ")
    monkeypatch.setenv("BLANK_KEY", " ")
    monkeypatch.delenv("UNSET_KEY", raising=False)
    assert read_secret("MY_LLM_KEY") == "k"
    assert read_secret("BLANK_KEY") is None and read_secret("UNSET_KEY") is None

    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    env = child_environment(
        {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "EXTRA": "1"}, drop_prefix="PYTHON"
    )
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"  # the user's value wins over a default
    assert env["EXTRA"] == "1" and "PYTHONPATH" not in env and env["HOME"]

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    set_library_default("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    assert child_environment()["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"  # the user's, kept
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")  # recorded: restored after the test
    set_library_default("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    assert child_environment()["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_table_is_the_one_generated_from_the_settings() -> None:
    generator = _generator()
    page = ROOT / "docs" / "reference" / "settings.md"
    text = page.read_text(encoding="utf-8")
    assert text == generator.splice(text, "settings", reference_table(), page), (
        f"{page.name}'s table of environment variables differs from promptgrade.settings: run `{generator.COMMAND}`"
    )
    for name in VARIABLES:
        assert f"| `{name}` |" in text


def test_the_markdown_command_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "promptgrade.settings", "--markdown"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == reference_table()


# -- who reads the environment -----------------------------------------------------------------------
def _lambda_shipped() -> list[Path]:
    """The grading path and every provider module: shipped in the zip, or reachable from the Lambda."""
    shipped = {PACKAGE / name for name in GRADING_PATH}
    shipped |= {PACKAGE / name for names in PROVIDER_MODULES.values() for name in names}
    shipped |= set((PACKAGE / "providers").glob("*.py"))
    return sorted(shipped)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_modules_shipped_in_the_lambda_do_not_import_the_settings() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in _lambda_shipped()
        if "promptgrade.settings" in _imports(path)
    ]
    assert not offenders, f"Lambda-shipped modules import promptgrade.settings: {offenders}"


def test_importing_the_grading_path_and_providers_loads_no_settings() -> None:
    """A fresh interpreter: in this process other tests have imported whatever they liked."""
    modules = sorted(
        "promptgrade."
        + str(path.relative_to(PACKAGE).with_suffix("")).replace("/", ".").removesuffix(".__init__")
        for path in _lambda_shipped()
        if path.name != "__init__.py" or path.parent != PACKAGE
    )
    probe = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps('promptgrade.settings' in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) is False


def _environment_readers(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in {"environ", "getenv", "putenv", "unsetenv", "environb"}
        ) or (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {alias.name for alias in node.names} & {"environ", "getenv", "environb"}
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_settings_module_touches_os_environ() -> None:
    """The test servers (``promptgrade.testing``) may: they stand in for the outside world."""
    offenders = {
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "settings.py" and "testing" not in path.relative_to(PACKAGE).parts
        for line in _environment_readers(path)
    }
    assert not offenders, f"read the environment through promptgrade.settings instead: {sorted(offenders)}"
