"""Configuration: defaults in code, then TOML, then ``THUMBGEN_*``; every bad value named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from watcher import config
from watcher.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# The keys of SPEC §5, copied here on purpose: the contract is the spec, not the code.
SPEC_KEYS = """ENVIRONMENT LOG_LEVEL BASE_PATH UPLOAD_PATH BACKGROUND_PATH OUTPUT_PATH LOG_PATH
BACKUP_PATH MAX_FILE_SIZE MAX_PIXELS ALLOWED_FORMATS REMOVAL_BACKEND GRADIO_API_URL GRADIO_API_NAME
GRADIO_TOKEN GRADIO_TIMEOUT GRADIO_RETRY_ATTEMPTS GRADIO_FALLBACK_ENABLED MAX_CONCURRENT_REQUESTS
WORKERS CACHE_ENABLED CACHE_TTL HTTP_HOST HTTP_PORT METRICS_ENABLED HEALTH_CHECK_ENABLED WATCH_MODE
RESCAN_INTERVAL SETTLE_SECONDS SHUTDOWN_TIMEOUT SCHEDULER_ENABLED BACKUP_SCHEDULE
BACKUP_RETENTION_DAYS CLEANUP_SCHEDULE PROCESSED_RETENTION_DAYS FAILED_RETENTION_DAYS OUTPUT_SIZE
OUTPUT_FORMAT OUTPUT_QUALITY FILL_RATIO MODEL_PATH WORKER_ID RATE_LIMIT_PER_MINUTE""".split()
# keys the issues added to the contract (SPEC: where an issue changes it, the issue wins)
SPEC_KEYS += ["CLAIM_LEASE_SECONDS"]  # issue 9
SPEC_KEYS += ["OUTPUTS"]  # issue 10
SPEC_KEYS += ["LANGUAGE", "UI_TOKEN"]  # issue 11
SPEC_KEYS += ["POLL_INTERVAL"]  # issue 12
SPEC_KEYS += ["LOCAL_RUNTIME"]  # issue 13
SPEC_KEYS += ["REMOTE_MAX_SIDE"]  # issue 13

TOKEN = "hf_SecretSecretSecret123"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    return folder


def env_for(base: Path, **values: object) -> dict[str, str]:
    """An environment with nothing but ``THUMBGEN_*`` values and an empty config file, so a
    ``config/thumbgen.toml`` in the working directory changes nothing."""
    empty = base.parent / "empty.toml"
    empty.touch()
    env = {"THUMBGEN_CONFIG": str(empty), "THUMBGEN_BASE_PATH": str(base),
           "THUMBGEN_WORKER_ID": "test-worker"}
    env.update({f"THUMBGEN_{key}": str(value) for key, value in values.items()})
    return env


def load(base: Path, toml: str | None = None, **values: object) -> config.Settings:
    path = None
    if toml is not None:
        path = base / "given.toml"
        path.write_text(toml)
    return config.load(path, env=env_for(base, **values))


def refused(base: Path, key: str, toml: str | None = None, **values: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(base, toml, **values)
    assert caught.value.key == key
    assert key in str(caught.value)
    return caught.value


# -- every key, once -------------------------------------------------------------------------------

def test_every_key_of_the_spec_is_an_option_and_a_settings_field() -> None:
    assert config.option_names() == [opt.key for opt in config.OPTIONS]
    assert sorted(config.option_names()) == sorted(SPEC_KEYS)
    assert sorted(config.settings_fields()) == sorted(key.lower() for key in SPEC_KEYS)
    assert len(set(config.option_names())) == len(config.OPTIONS)


def test_each_option_has_help_and_an_env_name_derived_from_its_key() -> None:
    for opt in config.OPTIONS:
        assert opt.help.strip(), opt.key
        assert opt.env_name == f"THUMBGEN_{opt.key}"


def test_the_defaults_are_those_of_the_spec(base: Path) -> None:
    settings = load(base)

    assert settings.upload_path == base / "produtos"
    assert settings.output_path == base / "thumbnails-prontas"
    assert settings.background_path == base / "backgrounds"
    assert settings.state_path == base / "produtos" / ".thumbgen"
    assert settings.max_file_size == 10 * 1024**2
    assert settings.max_pixels == 40_000_000
    assert settings.allowed_formats == ("jpeg", "png", "webp")
    assert settings.output_size == (1200, 1200)
    assert (settings.output_format, settings.output_quality) == ("jpeg", 90)
    assert settings.fill_ratio == 0.85
    assert settings.backup_schedule == "0 3 * * *"
    assert settings.backup_retention_days == 30
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert settings.removal_kind == "local"
    assert set(settings.sources.values()) <= {"default", "env THUMBGEN_BASE_PATH",
                                              "env THUMBGEN_WORKER_ID"}


# -- precedence ------------------------------------------------------------------------------------

def test_defaults_then_toml_then_environment(base: Path) -> None:
    toml = ("workers = 3\n"
            "HTTP_PORT = 9000\n"
            "[output]\n"
            "output_size = [800, 600]\n")
    settings = load(base, toml, HTTP_PORT=9100)

    assert settings.output_quality == 90  # default
    assert settings.sources["OUTPUT_QUALITY"] == "default"
    assert settings.workers == 3  # file, lower-case key
    assert settings.output_size == (800, 600)  # file, inside a [section]
    assert settings.sources["WORKERS"].startswith("file ")
    assert settings.http_port == 9100  # env beats file
    assert settings.sources["HTTP_PORT"] == "env THUMBGEN_HTTP_PORT"


def test_the_config_file_comes_from_the_argument_then_env_then_the_default(
        base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "thumbgen.toml").write_text("workers = 5\n")
    (tmp_path / "from-env.toml").write_text("workers = 6\n")
    (tmp_path / "explicit.toml").write_text("workers = 7\n")
    monkeypatch.chdir(tmp_path)
    env = env_for(base)
    del env["THUMBGEN_CONFIG"]

    assert config.load(env=env).workers == 5
    env["THUMBGEN_CONFIG"] = str(tmp_path / "from-env.toml")
    assert config.load(env=env).workers == 6
    assert config.load(tmp_path / "explicit.toml", env=env).workers == 7


def test_a_missing_or_broken_config_file_is_a_config_error(base: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml", env=env_for(base))
    broken = tmp_path / "broken.toml"
    broken.write_text("workers = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(broken, env=env_for(base))


def test_relative_paths_start_from_base_path(base: Path) -> None:
    settings = load(base, UPLOAD_PATH="in/box", OUTPUT_PATH="/srv/out")

    assert settings.upload_path == base / "in" / "box"
    assert settings.output_path == Path("/srv/out")


def test_settings_are_frozen(base: Path) -> None:
    settings = load(base)
    with pytest.raises(AttributeError):
        settings.workers = 9  # type: ignore[misc]


# -- values ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "text", "expected"), [
    ("MAX_FILE_SIZE", "10MiB", 10 * 1024**2),
    ("MAX_FILE_SIZE", "500 KB", 500_000),
    ("MAX_FILE_SIZE", "2m", 2 * 1024**2),
    ("MAX_FILE_SIZE", "1048576", 1024**2),
    ("OUTPUT_SIZE", "1200", (1200, 1200)),
    ("OUTPUT_SIZE", "1200x900", (1200, 900)),
    ("OUTPUT_SIZE", "800 X 600", (800, 600)),
    ("GRADIO_FALLBACK_ENABLED", "off", False),
    ("GRADIO_FALLBACK_ENABLED", "YES", True),
    ("LOG_LEVEL", "DEBUG", "debug"),
    ("ALLOWED_FORMATS", "JPEG, png", ("jpeg", "png")),
    ("ALLOWED_FORMATS", "jpg,jpeg,png", ("jpeg", "png")),
    ("FILL_RATIO", "1", 1.0),
    ("FILL_RATIO", "0.05", 0.05),
    ("BACKUP_SCHEDULE", "*/15  2-5 * jan-mar mon-fri", "*/15 2-5 * jan-mar mon-fri"),
    ("BACKUP_SCHEDULE", "0 0 3 1,15 * 7", "0 0 3 1,15 * 7"),
    ("CLEANUP_SCHEDULE", "*/10 * * * * *", "*/10 * * * * *"),
    ("WORKERS", "1_0", 10),
])
def test_good_values_from_the_environment(base: Path, key: str, text: str,
                                          expected: object) -> None:
    assert load(base, **{key: text}).value(key) == expected


@pytest.mark.parametrize("expression", [
    "0 3 * * *", "*/15 2-5 * jan-mar mon-fri", "0 0 3 1,15 * 7", "*/10 * * * * *",
    "5/15 * * * *", "0 3 * * 5-7", "0 3 * * ?", "0 3 1-31/2 */2 *", "0 3 * * SUN"])
def test_a_schedule_config_accepts_is_one_the_scheduler_accepts(base: Path,
                                                                expression: str) -> None:
    from watcher.scheduler import build_trigger

    settings = load(base, BACKUP_SCHEDULE=expression)
    build_trigger("BACKUP_SCHEDULE", settings.backup_schedule)


def test_typed_toml_values_are_taken_as_they_are(base: Path) -> None:
    settings = load(base, "max_file_size = 2048\nmetrics_enabled = false\nfill_ratio = 0.5\n"
                          "allowed_formats = ['png']\noutput_size = 640\n")

    assert settings.max_file_size == 2048
    assert settings.metrics_enabled is False
    assert settings.fill_ratio == 0.5
    assert settings.allowed_formats == ("png",)
    assert settings.output_size == (640, 640)


@pytest.mark.parametrize(("key", "text"), [
    ("WORKERS", "two"),
    ("WORKERS", "1.5"),
    ("WORKERS", "-1"),
    ("WORKERS", ""),
    ("HTTP_PORT", "70000"),
    ("OUTPUT_QUALITY", "0"),
    ("OUTPUT_QUALITY", "101"),
    ("METRICS_ENABLED", "maybe"),
    ("CACHE_ENABLED", "2"),
    ("MAX_FILE_SIZE", "10XB"),
    ("MAX_FILE_SIZE", "-5MiB"),
    ("MAX_FILE_SIZE", "0"),
    ("MAX_FILE_SIZE", "lots"),
    ("WATCH_MODE", "inotify"),
    ("REMOVAL_BACKEND", "rembg"),
    ("OUTPUT_FORMAT", "gif"),
    ("LOG_LEVEL", "verbose"),
    ("ENVIRONMENT", "staging"),
    ("ALLOWED_FORMATS", "jpeg,gif"),
    ("ALLOWED_FORMATS", ","),
    ("OUTPUT_SIZE", "big"),
    ("OUTPUT_SIZE", "1200x"),
    ("OUTPUT_SIZE", "x900"),
    ("OUTPUT_SIZE", "1200x900x3"),
    ("OUTPUT_SIZE", "10"),
    ("OUTPUT_SIZE", "1200x9000"),
    ("OUTPUT_SIZE", "-1200"),
    ("FILL_RATIO", "0"),
    ("FILL_RATIO", "1.5"),
    ("FILL_RATIO", "-0.5"),
    ("FILL_RATIO", "nan"),
    ("FILL_RATIO", "most"),
    ("SETTLE_SECONDS", "-1"),
    ("RESCAN_INTERVAL", "0"),
    ("RESCAN_INTERVAL", "inf"),
    ("GRADIO_TIMEOUT", "inf"),
    ("REMOTE_MAX_SIDE", "255"),
    ("REMOTE_MAX_SIDE", "65501"),
    ("REMOTE_MAX_SIDE", "2k"),
    ("REMOTE_MAX_SIDE", "1024.5"),
    ("SHUTDOWN_TIMEOUT", "nan"),
    ("BACKUP_SCHEDULE", "every day at 3"),
    ("BACKUP_SCHEDULE", "0 3 * *"),
    ("BACKUP_SCHEDULE", "0 3 * * * * *"),
    ("BACKUP_SCHEDULE", "61 3 * * *"),
    ("BACKUP_SCHEDULE", "0 24 * * *"),
    ("BACKUP_SCHEDULE", "0 3 32 * *"),
    ("BACKUP_SCHEDULE", "0 3 0 * *"),
    ("BACKUP_SCHEDULE", "0 3 * 13 *"),
    ("BACKUP_SCHEDULE", "0 3 * * 8"),
    ("BACKUP_SCHEDULE", "0 3 * * funday"),
    ("BACKUP_SCHEDULE", "a b c d e"),
    ("BACKUP_SCHEDULE", "*/0 3 * * *"),
    ("BACKUP_SCHEDULE", "0 5-3 * * *"),
    ("CLEANUP_SCHEDULE", "60 * * * * *"),
    ("WORKER_ID", "has space"),
    ("WORKER_ID", "a/b"),
])
def test_a_bad_value_is_refused_naming_key_and_value(base: Path, key: str, text: str) -> None:
    error = refused(base, key, **{key: text})

    assert error.value == text
    assert repr(text) in str(error)
    assert error.reason


@pytest.mark.parametrize(("toml", "key"), [
    ("workers = true\n", "WORKERS"),
    ("workers = 2.5\n", "WORKERS"),
    ("metrics_enabled = 'sometimes'\n", "METRICS_ENABLED"),
    ("fill_ratio = 2\n", "FILL_RATIO"),
    ("output_size = [1200, 900, 3]\n", "OUTPUT_SIZE"),
    ("gradio_api_url = ['a', 'b']\n", "GRADIO_API_URL"),
    ("colour = 'blue'\n", "COLOUR"),
    ("[http]\nport = 8080\n", "PORT"),
])
def test_a_bad_toml_value_or_unknown_key_is_refused(base: Path, toml: str, key: str) -> None:
    error = refused(base, key, toml)

    assert "given.toml" in str(error)


def test_an_env_value_names_where_it_came_from(base: Path) -> None:
    error = refused(base, "WORKERS", WORKERS="two")

    assert "THUMBGEN_WORKERS" in error.reason


def test_output_path_inside_the_inbox_is_refused(base: Path) -> None:
    refused(base, "OUTPUT_PATH", OUTPUT_PATH="produtos/thumbs")
    refused(base, "OUTPUT_PATH", OUTPUT_PATH="produtos")
    refused(base, "OUTPUT_PATH", UPLOAD_PATH="thumbnails-prontas/in")
    refused(base, "OUTPUT_PATH", OUTPUT_PATH=str(base / "produtos" / ".." / "produtos" / "x"))
    assert load(base, OUTPUT_PATH="produtos-prontos").output_path == base / "produtos-prontos"


def test_gradio_backend_needs_a_url(base: Path) -> None:
    refused(base, "GRADIO_API_URL", REMOVAL_BACKEND="gradio")
    assert load(base, GRADIO_API_URL="owner/space").removal_kind == "gradio"
    assert load(base, GRADIO_API_URL="owner/space", REMOVAL_BACKEND="local").removal_kind == "local"


# -- secrets ---------------------------------------------------------------------------------------

def test_the_token_is_masked(base: Path) -> None:
    settings = load(base, GRADIO_TOKEN=TOKEN)

    assert settings.gradio_token == TOKEN
    shown = settings.masked()
    assert set(shown) == set(SPEC_KEYS)
    assert TOKEN not in " ".join(shown.values())
    assert "SecretSecret" not in shown["GRADIO_TOKEN"]
    assert "****" in shown["GRADIO_TOKEN"]
    assert config.mask_secret("") == ""
    assert config.mask_secret("short") == "****"
    assert TOKEN not in repr(settings.masked())


def test_a_url_setting_is_shown_without_its_secrets_and_names_them(base: Path) -> None:
    url = "https://:Tk0-url-secret@h.example/?lang=pt&access_token=Qs0-query"
    settings = load(base, GRADIO_API_URL=url, GRADIO_TOKEN=TOKEN)

    assert settings.gradio_api_url == url  # the client gets it whole
    shown = settings.masked()["GRADIO_API_URL"]
    assert shown == "https://****@h.example/?lang=pt&access_token=****"
    assert set(settings.secret_values()) >= {TOKEN, "Tk0-url-secret", "Qs0-query"}
    described = "\n".join(settings.describe())
    assert "Tk0-url-secret" not in described and "Qs0-query" not in described


def test_a_refused_value_is_named_without_its_secrets(base: Path) -> None:
    error = refused(base, "HTTP_PORT", HTTP_PORT="http://user:Pw0rd-x@h.example/")
    assert "Pw0rd-x" not in str(error) and "h.example" in str(error)


def test_masked_values_are_printable(base: Path) -> None:
    shown = load(base, OUTPUT_SIZE="1200x900", CACHE_ENABLED="no").masked()

    assert shown["OUTPUT_SIZE"] == "1200x900"
    assert shown["CACHE_ENABLED"] == "false"
    assert shown["ALLOWED_FORMATS"] == "jpeg,png,webp"
    assert shown["UPLOAD_PATH"] == str(base / "produtos")


# -- the shipped config files ----------------------------------------------------------------------

SHIPPED = ["thumbgen.toml", "development.toml", "production.toml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_config_files_load(name: str, base: Path) -> None:
    path = REPO / "config" / name
    if not path.is_file():
        pytest.skip(f"config/{name} is not there yet")
    settings = config.load(path, env=env_for(base))
    assert settings.sources  # loaded and validated


def test_the_documented_defaults_file_mentions_every_key() -> None:
    path = REPO / "config" / "thumbgen.toml"
    if not path.is_file():
        pytest.skip("config/thumbgen.toml is not there yet")
    text = path.read_text()
    missing = [key for key in SPEC_KEYS
               if not re.search(rf"(?<![A-Za-z_]){key}(?![A-Za-z_])", text, re.IGNORECASE)]
    assert not missing, f"config/thumbgen.toml does not mention {missing}"


def test_the_env_example_names_only_known_keys() -> None:
    path = REPO / "config" / "thumbgen.env.example"
    if not path.is_file():
        pytest.skip("config/thumbgen.env.example is not there yet")
    named = set(re.findall(r"^\s*#?\s*THUMBGEN_([A-Z0-9_]+)\s*=", path.read_text(), re.MULTILINE))
    assert named, "no THUMBGEN_ variables in the env example"
    assert named <= set(SPEC_KEYS) | {"CONFIG"}


def test_unknown_thumbgen_variables_are_found_but_not_kubernetes_service_links() -> None:
    env = {"THUMBGEN_OUTPUT_SIZ": "800", "THUMBGEN_OUTPUT_SIZE": "800",
           "THUMBGEN_CONFIG": "x.toml", "THUMBGEN_HTTP_PORT": "9000",
           "THUMBGEN_SERVICE_HOST": "10.0.0.1", "THUMBGEN_SERVICE_PORT": "8080",
           "THUMBGEN_SERVICE_PORT_HTTP": "8080", "THUMBGEN_PORT": "tcp://10.0.0.1:8080",
           "THUMBGEN_PORT_8080_TCP_ADDR": "10.0.0.1", "THUMBGEN_PORT_8080_TCP": "tcp://x",
           "OTHER_THING": "1", "THUMBGEN_HTP_PORT": "9000", "THUMBGEN_METRICS_PORT": "9000"}

    assert config.unknown_env(env) == ["THUMBGEN_HTP_PORT", "THUMBGEN_METRICS_PORT",
                                       "THUMBGEN_OUTPUT_SIZ"]
