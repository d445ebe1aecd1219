"""Settings: defaults, the file < CLI < env precedence, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from homeport.errors import StartupError
from homeport.settings import Settings, SettingsError, load_settings


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The default settings file is looked up relative to the working directory.
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    message = str(exc)
    assert "\n" not in message
    assert "validation error" not in message.lower()  # never a pydantic dump
    for fragment in fragments:
        assert fragment in message


def test_defaults(workdir: Path) -> None:
    settings = load_settings({}, {}, None)
    assert settings == Settings()
    assert settings.api_port == 5000
    assert settings.listen is False and settings.listen_host is None
    assert settings.api_key is None and settings.admin_key is None
    assert settings.ssl_keyfile is None and settings.ssl_certfile is None
    assert settings.model is None
    assert settings.model_dir == Path("user_data/models")
    assert settings.user_data_dir == Path("user_data")
    assert (settings.ctx_size, settings.threads, settings.n_gpu_layers) == (0, 0, 0)
    assert (settings.batch_size, settings.ubatch_size, settings.parallel, settings.max_queue) == (512, 512, 8, 256)
    assert settings.cors_origins == ("*",)
    assert settings.debug is False


def test_settings_are_frozen_and_closed() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.api_port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(no_such_field=1)  # type: ignore[call-arg]


def test_precedence_file_then_cli_then_env(workdir: Path) -> None:
    file = write(
        workdir / "s.yaml",
        "api_port: 6000\nthreads: 3\nctx_size: 4096\ndebug: true\napi_key: from-file\n",
    )
    only_file = load_settings({}, {}, file)
    assert (only_file.api_port, only_file.threads, only_file.ctx_size) == (6000, 3, 4096)
    assert only_file.debug is True and only_file.api_key == "from-file"

    with_cli = load_settings({"api_port": 7000, "threads": 5, "ctx_size": None}, {}, file)
    assert (with_cli.api_port, with_cli.threads) == (7000, 5)
    assert with_cli.ctx_size == 4096  # None means "not given", so the file's value stays

    with_env = load_settings(
        {"api_port": 7000, "threads": 5}, {"OPENEDAI_PORT": "8000", "OPENEDAI_DEBUG": "0"}, file
    )
    assert with_env.api_port == 8000
    assert with_env.threads == 5
    assert with_env.debug is False


def test_env_tls_paths_override_cli(workdir: Path) -> None:
    settings = load_settings(
        {"ssl_certfile": Path("cli.crt"), "ssl_keyfile": Path("cli.key")},
        {"OPENEDAI_CERT_PATH": "env.crt", "OPENEDAI_KEY_PATH": "env.key"},
        None,
    )
    assert settings.ssl_certfile == Path("env.crt")
    assert settings.ssl_keyfile == Path("env.key")


def test_default_settings_file_in_user_data_dir(workdir: Path) -> None:
    write(workdir / "user_data" / "settings.yaml", "api_port: 6001\n")
    assert load_settings({}, {}, None).api_port == 6001

    write(workdir / "other" / "settings.yaml", "api_port: 6002\n")
    settings = load_settings({"user_data_dir": workdir / "other"}, {}, None)
    assert settings.api_port == 6002
    assert settings.model_dir == workdir / "other" / "models"


def test_explicit_model_dir_wins_over_user_data_dir(workdir: Path) -> None:
    settings = load_settings({"user_data_dir": Path("ud"), "model_dir": Path("m")}, {}, None)
    assert settings.model_dir == Path("m")


def test_dashed_and_reference_yaml_keys(workdir: Path) -> None:
    file = write(
        workdir / "s.yaml",
        "api-port: 6100\nn-gpu-layers: -1\ncors-origins: [http://a, http://b]\nopenai-debug: true\n",
    )
    settings = load_settings({}, {}, file)
    assert settings.api_port == 6100
    assert settings.n_gpu_layers == -1
    assert settings.cors_origins == ("http://a", "http://b")
    assert settings.debug is True


def test_empty_settings_file_and_null_values(workdir: Path) -> None:
    assert load_settings({}, {}, write(workdir / "empty.yaml", "")) == Settings()
    assert load_settings({}, {}, write(workdir / "null.yaml", "api_port:\n")).api_port == 5000


def test_unknown_yaml_key(workdir: Path) -> None:
    file = write(workdir / "s.yaml", "api_port: 6000\ntruncation_length: 2048\n")
    with pytest.raises(StartupError) as info:
        load_settings({}, {}, file)
    assert_one_line(info.value, "truncation_length", str(file))


def test_bad_yaml(workdir: Path) -> None:
    file = write(workdir / "s.yaml", "api_port: [6000\nthreads: 2\n")
    with pytest.raises(StartupError) as info:
        load_settings({}, {}, file)
    assert_one_line(info.value, "invalid YAML", str(file))


def test_yaml_that_is_not_a_mapping(workdir: Path) -> None:
    file = write(workdir / "s.yaml", "- api_port\n")
    with pytest.raises(StartupError) as info:
        load_settings({}, {}, file)
    assert_one_line(info.value, str(file), "mapping")


def test_explicit_settings_file_must_exist(workdir: Path) -> None:
    with pytest.raises(StartupError) as info:
        load_settings({}, {}, workdir / "missing.yaml")
    assert_one_line(info.value, "not found", "missing.yaml")


def test_wrong_type_in_file_names_setting_and_file(workdir: Path) -> None:
    file = write(workdir / "s.yaml", "parallel: many\n")
    with pytest.raises(SettingsError) as info:
        load_settings({}, {}, file)
    assert_one_line(info.value, "invalid value for parallel", f"from {file}", "'many' is not an integer")
    assert info.value.origin == "file"


def test_yaml_boolean_is_not_a_number(workdir: Path) -> None:
    with pytest.raises(StartupError) as info:
        load_settings({}, {}, write(workdir / "s.yaml", "parallel: yes\n"))
    assert_one_line(info.value, "parallel", "not an integer")


def test_env_port_garbage(workdir: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"api_port": 7000}, {"OPENEDAI_PORT": "abc"}, None)
    assert str(info.value) == "invalid value for api_port from OPENEDAI_PORT: 'abc' is not an integer"
    assert info.value.origin == "env"


@pytest.mark.parametrize(
    ("value", "field", "fragment"),
    [
        (-1, "api_port", "at least 0"),
        (65536, "api_port", "at most 65535"),
        (-1, "ctx_size", "at least 0"),
        (-2, "n_gpu_layers", "at least -1"),
        (0, "batch_size", "at least 1"),
        (0, "parallel", "at least 1"),
    ],
)
def test_out_of_range_from_cli(workdir: Path, value: int, field: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({field: value}, {}, None)
    flag = "--" + field.replace("_", "-")
    assert_one_line(info.value, f"invalid value for {field} from {flag}", fragment)
    assert info.value.origin == "cli"


def test_secret_values_are_not_echoed(workdir: Path) -> None:
    with pytest.raises(StartupError) as info:
        load_settings({}, {}, write(workdir / "s.yaml", "api_key: 123456789\n"))
    assert_one_line(info.value, "api_key")
    assert "123456789" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("yes", True),
        ("anything", True),
        ("0", False),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("", False),  # empty counts as unset, so the default stays
    ],
)
def test_openedai_debug(workdir: Path, raw: str, expected: bool) -> None:
    assert load_settings({}, {"OPENEDAI_DEBUG": raw}, None).debug is expected


def test_openedai_debug_false_overrides_cli(workdir: Path) -> None:
    assert load_settings({"debug": True}, {"OPENEDAI_DEBUG": "no"}, None).debug is False


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "127.0.0.1"),
        ({"listen": True}, "0.0.0.0"),
        ({"listen_host": "10.0.0.5"}, "10.0.0.5"),
        ({"listen": True, "listen_host": "::1"}, "::1"),
    ],
)
def test_bind_host(kwargs: dict, expected: str) -> None:
    assert Settings(**kwargs).bind_host == expected


def test_effective_admin_key() -> None:
    assert Settings().effective_admin_key is None
    assert Settings(api_key="a").effective_admin_key == "a"
    assert Settings(api_key="a", admin_key="b").effective_admin_key == "b"
    assert Settings(admin_key="b").effective_admin_key == "b"
    assert Settings(api_key="").api_key is None  # an empty key means "no key"


def test_ssl_pair_validation(workdir: Path) -> None:
    with pytest.raises(ValidationError, match="ssl_keyfile"):
        Settings(ssl_certfile=Path("c.pem"))
    with pytest.raises(ValidationError, match="ssl_certfile"):
        Settings(ssl_keyfile=Path("k.pem"))
    both = Settings(ssl_certfile=Path("c.pem"), ssl_keyfile=Path("k.pem"))
    assert both.ssl_certfile == Path("c.pem")

    with pytest.raises(StartupError) as info:
        load_settings({}, {"OPENEDAI_CERT_PATH": "c.pem"}, None)
    assert_one_line(info.value, "ssl_keyfile", "ssl_certfile from OPENEDAI_CERT_PATH")


def test_cors_origins_from_a_string() -> None:
    assert Settings(cors_origins="http://a, http://b").cors_origins == ("http://a", "http://b")
