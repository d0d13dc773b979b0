"""Settings: profiles, environment overrides, one-line refusals of bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from settings import PROFILES, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]
PROFILE_NAMES = ["development", "staging", "production"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("ENVIRONMENT", "DEBUG", "CACHE_SIZE", "DATABASE_URL", "PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("environment", "cache", "response_ms", "memory_mb", "db_cost"),
    [
        ("development", 500, 500, 300, 0.0001),
        ("staging", 1000, 300, 500, 0.00015),
        ("production", 2000, 200, 1000, 0.0002),
    ],
)
def test_profile_values(
    monkeypatch, environment, cache, response_ms, memory_mb, db_cost
):
    monkeypatch.setenv("ENVIRONMENT", environment)

    settings = load_settings()

    assert settings.environment == environment
    assert settings.cache_size == cache
    assert settings.alert_response_time_ms == response_ms
    assert settings.alert_memory_mb == memory_mb
    assert settings.cost_per_db_query == db_cost
    assert settings.cost_per_100_requests == 0.001
    assert settings.graphiql is (environment != "production")


def test_environment_variable_overrides_the_profile(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "staging")
    monkeypatch.setenv("CACHE_SIZE", "42")

    settings = load_settings()

    assert settings.cache_size == 42
    assert settings.alert_memory_mb == PROFILES["staging"]["alert_memory_mb"]


def test_dot_env_file_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CACHE_SIZE=77\nENVIRONMENT=production\n")

    settings = load_settings()

    assert (settings.environment, settings.cache_size) == ("production", 77)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "ENVIRONMENT",
            "prod",
            "ENVIRONMENT: Input should be 'development', 'staging' or 'production'",
        ),
        ("CACHE_SIZE", "-1", "CACHE_SIZE: Input should be greater than or equal to 0"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL: must start with sqlite:///"),
        ("PORT", "99999", "PORT: Input should be less than or equal to 65535"),
        ("REDIS_URL", "http://x", "REDIS_URL: must start with redis://"),
        ("REDIS_PREFIX", "", "REDIS_PREFIX: String should have at least 1 character"),
        ("GC_THRESHOLD", "700,10", "GC_THRESHOLD: must be three whole numbers"),
        (
            "GC_THRESHOLD",
            "0,10,10",
            "GC_THRESHOLD: the first threshold must be at least 1",
        ),
        (
            "CORS_ORIGINS",
            "https://app.example,*",
            "CORS_ORIGINS: `*` allows everyone: list the hosts or origins",
        ),
        *(
            (
                "TRUSTED_HOSTS",
                f"localhost,{pattern}",
                f"TRUSTED_HOSTS: '{pattern}': a host, or `*.` and a domain "
                "(*.example.org)",
            )
            for pattern in ("*.*", "**", "*com", "api.*.org")
        ),
        (
            "TRUSTED_HOSTS",
            "*",
            "TRUSTED_HOSTS: `*` allows everyone: list the hosts or origins",
        ),
    ],
)
def test_bad_values_stop_with_one_line_naming_the_variable(
    monkeypatch, variable, value, message
):
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith("invalid settings: " + message)


def test_production_refuses_debug(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("DEBUG", "true")

    with pytest.raises(
        SettingsError,
        match=r"^invalid settings: DEBUG: DEBUG must be off in production$",
    ):
        load_settings()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///a.db",
        "sqlite+aiosqlite:///a.db",
        "postgresql://u@h/d",
        "postgresql+asyncpg://u@h/d",
    ],
)
def test_accepted_database_urls(monkeypatch, url):
    monkeypatch.setenv("DATABASE_URL", url)

    assert load_settings().database_url == url


def test_redis_is_unset_and_its_prefix_is_gradepulse(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_PREFIX", raising=False)
    plain = load_settings()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("REDIS_PREFIX", "district-7:")
    shared = load_settings()

    assert (plain.redis_url, plain.redis_prefix) == (None, "gradepulse:")
    assert (shared.redis_url, shared.redis_prefix) == (
        "redis://127.0.0.1:6379/3",
        "district-7:",
    )


def test_workers_default_to_one_and_several_need_redis(monkeypatch):
    monkeypatch.delenv("WORKERS", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    one = load_settings()
    monkeypatch.setenv("WORKERS", "3")
    with pytest.raises(SettingsError) as alone:
        load_settings()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    shared = load_settings()
    monkeypatch.setenv("WORKERS", "0")
    with pytest.raises(SettingsError) as none:
        load_settings()

    assert one.workers == 1
    assert shared.workers == 3
    assert str(alone.value) == (
        "invalid settings: WORKERS: WORKERS above 1 (3) needs REDIS_URL: workers "
        "share budgets, feeds and caches through Redis (set REDIS_URL, or WORKERS=1)"
    )
    assert str(none.value) == (
        "invalid settings: WORKERS: Input should be greater than or equal to 1"
    )


def test_app_start_up_refuses_a_bad_value_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "CACHE_SIZE": "-5", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "invalid settings: CACHE_SIZE: Input should be greater than or equal to 0"
    ]


async def test_the_serving_app_sets_the_collectors_thresholds(make_api, scratch_url):
    import gc

    before = gc.get_threshold()
    try:
        await make_api(scratch_url, gc_threshold="12345,7,8")
        assert gc.get_threshold() == (12345, 7, 8)
    finally:
        gc.set_threshold(*before)
