"""Configuration is one validated object: a bad key stops start-up with a message naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.config import ConfigError, build, load
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_without_a_file():
    settings = load({})
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.dedup_window_seconds == 600
    assert settings.retention_seconds == 7 * 86400
    assert settings.redis_ingest_timeout == 0.1  # a hung Redis costs a callback at most this
    assert settings.metastudio_source is None and settings.cdnetworks_source is None  # no secret: those sources refuse


@pytest.mark.parametrize("raw, key", [
    ({"sources": {"metastudio": {"auth_type": "MD5", "key": "k"}}}, "sources.metastudio.auth_type"),
    ({"sources": {"metastudio": {"auth_type": "MSS_A"}}}, "sources.metastudio.key"),
    ({"sources": {"metastudio": {"auth_type": "MSS_A_HEAD"}}}, "sources.metastudio.key"),
    ({"sources": {"metastudio": {"auth_type": "NONE"}}}, "sources.metastudio.token"),
    ({"sources": {"metastudio": {"key": "x" * 33}}}, "sources.metastudio.key"),
    ({"sources": {"metastudio": {"key": "k", "tolerance_seconds": 0}}}, "sources.metastudio.tolerance_seconds"),
    ({"sources": {"cdnetworks": {}}}, "sources.cdnetworks.token"),
    ({"sources": {"youtube": {}}}, "sources.youtube"),
    ({"max_body_bytes": "big"}, "max_body_bytes"),
    ({"public_base_url": "hooks.example.com"}, "public_base_url"),
    ({"redis": {"url": "http://localhost"}}, "redis.url"),
    ({"redis": {"ingest_timeout": 0}}, "redis.ingest_timeout"),
    ({"dedup_window_secs": 10}, "dedup_window_secs"),
])
def test_bad_value_names_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        build(raw, env={})
    assert f"{key}:" in str(err.value)


def test_secrets_and_redis_url_from_environment():
    settings = build({"sources": {"metastudio": {"auth_type": "MSS_A_HEAD"}}}, env={
        "MEDIAHOOK_METASTUDIO_KEY": "from-env-key", "MEDIAHOOK_CDNETWORKS_TOKEN": "cdn-token-env",
        "REDIS_URL": "redis://redis.internal:6380/2"})
    assert settings.metastudio_source.auth_type == "MSS_A_HEAD" and settings.metastudio_source.key == "from-env-key"
    assert settings.cdnetworks_source.token == "cdn-token-env"
    assert settings.redis_url == "redis://redis.internal:6380/2"


def test_environment_beats_the_file():
    settings = build({"sources": {"cdnetworks": {"token": "file-token-1"}}},
                     env={"MEDIAHOOK_CDNETWORKS_TOKEN": "env-token-22"})
    assert settings.cdnetworks_source.token == "env-token-22"


def test_secrets_stay_out_of_repr():
    settings = build({"sources": {"metastudio": {"key": "very-secret-key"},
                                  "cdnetworks": {"token": "very-secret-token"}}}, env={})
    assert "very-secret" not in repr(settings)


def test_missing_or_broken_file_names_mediahook_config(tmp_path):
    with pytest.raises(ConfigError, match="MEDIAHOOK_CONFIG: no such file"):
        load({"MEDIAHOOK_CONFIG": str(tmp_path / "nope.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("max_body_bytes = \n")
    with pytest.raises(ConfigError, match="MEDIAHOOK_CONFIG: .* not valid TOML"):
        load({"MEDIAHOOK_CONFIG": str(bad)})


def test_example_config_is_valid_and_documents_every_key():
    example = ROOT / "deploy" / "mediahook.example.toml"
    # Its secrets are left to the environment, as a deployment would set them.
    load({"MEDIAHOOK_CONFIG": str(example), "MEDIAHOOK_METASTUDIO_KEY": "k" * 32,
          "MEDIAHOOK_CDNETWORKS_TOKEN": "t" * 16})
    text = example.read_text()
    for key in ("public_base_url", "max_body_bytes", "dedup_window_seconds", "retention_days", "spool_dir",
                "job_timeout_seconds", "[redis]", "url", "socket_timeout", "connect_timeout",
                "ingest_timeout",
                "[sources.metastudio]", "auth_type", "key", "token", "tolerance_seconds", "[sources.cdnetworks]",
                "[transcoder]", "auth_header", "origin_url_template", "ladder", "format", "poll_initial_seconds",
                "poll_max_seconds", "poll_deadline_seconds", "resubmit_count", "read_timeout", "retry_attempts",
                "retry_base_seconds", "retry_max_seconds", "[flighthub]", "user_token", "project_uuid", "language",
                "[[flighthub.bindings]]", "room_id", "output_url", "converter_id", "create", "[koophone]",
                "auth_token", "[koophone.profiles.", "definition_540P", "definition_720P", "definition_1080P",
                "[[koophone.bindings]]", "instance_ids", "on_state", "[metastudio]", "project_id"):
        assert key in text, key


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAHOOK_", "REDIS_URL"))}
    return {**env, **extra}


@pytest.mark.slow
def test_gunicorn_refuses_to_start_on_a_bad_config(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[sources.metastudio]\nauth_type = "MSS_A"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{free_port()}", "app:create_app()"],
        env=_clean_env(MEDIAHOOK_CONFIG=str(cfg)), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "sources.metastudio.key" in proc.stderr


def test_check_config_command(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("max_body_bytes = -1\n")
    bad = subprocess.run([sys.executable, "-m", "app.cli", "check-config"], env=_clean_env(MEDIAHOOK_CONFIG=str(cfg)),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "max_body_bytes" in bad.stderr
    cfg.write_text('[sources.cdnetworks]\ntoken = "good-token-123"\n')
    good = subprocess.run([sys.executable, "-m", "app.cli", "check-config"], env=_clean_env(MEDIAHOOK_CONFIG=str(cfg)),
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert "good-token-123" not in good.stdout


def test_dev_config_switches_every_vendor_on():
    settings = load({"MEDIAHOOK_CONFIG": str(ROOT / "deploy" / "mediahook.dev.toml")})
    assert settings.transcoder and settings.flighthub and settings.koophone and settings.metastudio_api
    assert set(settings.koophone.profiles) == {"low", "normal"}


@pytest.mark.parametrize("section, key", [
    ({"transcoder": {"base_url": "http://t", "ladder": [240]}}, "transcoder.ladder"),
    ({"transcoder": {"base_url": "http://t", "origin_url_template": "https://{host}/{videoId}"}},
     "transcoder.origin_url_template"),
    ({"transcoder": {}}, "transcoder.base_url"),
    ({"flighthub": {"base_url": "http://f"}}, "flighthub.user_token"),
    ({"flighthub": {"base_url": "http://f", "user_token": "t", "bindings": [{"room_id": "r"}]}},
     "flighthub.bindings.0.converter_id"),
    ({"koophone": {"base_url": "http://k", "auth_token": "a", "profiles": {"low": {
        "definition_540P": {"code_rate": 150, "fps": 30}, "definition_720P": {"code_rate": 1000, "fps": 30},
        "definition_1080P": {"code_rate": 1000, "fps": 30}}}}},
     "koophone.profiles.low.value.definition_540P.code_rate"),
    ({"koophone": {"base_url": "http://k", "auth_token": "a", "profiles": {"low": {
        "definition_540P": {"code_rate": 1000, "fps": 25}, "definition_720P": {"code_rate": 1000, "fps": 30},
        "definition_1080P": {"code_rate": 1000, "fps": 30}}}}}, "koophone.profiles.low.value.definition_540P.fps"),
    ({"koophone": {"base_url": "http://k", "auth_token": "a", "bindings": [
        {"room_id": "r", "instance_ids": ["i"], "on_state": {"CONNECTED": "missing"}}]}}, "koophone.bindings.0"),
    ({"metastudio": {"base_url": "http://m", "auth_token": "a"}}, "metastudio.project_id"),
])
def test_bad_vendor_value_names_the_key(section, key):
    with pytest.raises(ConfigError) as err:
        build(section, env={})
    assert f"{key}" in str(err.value)


def test_vendor_secret_from_environment_only_fills_a_present_section():
    env = {"MEDIAHOOK_FLIGHTHUB_USER_TOKEN": "env-token", "MEDIAHOOK_KOOPHONE_AUTH_TOKEN": "env-k"}
    settings = build({"flighthub": {"base_url": "http://f"}}, env=env)
    assert settings.flighthub.user_token == "env-token"
    assert settings.koophone is None  # a secret alone does not switch a vendor on
    assert "env-token" not in repr(settings)


def test_every_registered_source_has_its_settings_section():
    """A source's section is ``Settings.<name>_source`` (``[sources.<name>]`` in the file): the
    receive path asks ``Settings.source(name)``, so a source registered without one fails here."""
    from app.sources import SOURCES

    settings = build({"sources": {"metastudio": {"key": "k" * 16}, "cdnetworks": {"token": "t" * 16}}}, env={})
    for name in SOURCES:
        assert settings.source(name) is getattr(settings, f"{name}_source") is not None
    assert load({}).source("metastudio") is None
