"""Settings precedence: defaults → modelplane.yaml → .env → MODELPLANE_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.config import Settings


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in (
        "MODELPLANE_HOME",
        "MODELPLANE_PORT",
        "MODELPLANE_CONFIG",
        "MODELPLANE_HOST",
        "MODELPLANE_DATABASE_URL",
        "MODELPLANE_ADMIN_KEY",
    ):
        monkeypatch.delenv(var, raising=False)


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings()
    assert s.port == 8080 and s.host == "127.0.0.1"
    assert s.home == tmp_path / ".modelplane"
    assert s.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path / '.modelplane' / 'modelplane.db'}"


def test_yaml_then_dotenv_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "modelplane.yaml").write_text("port: 9000\nhost: 0.0.0.0\nlog_level: DEBUG\n")
    assert Settings().port == 9000
    (tmp_path / ".env").write_text("MODELPLANE_PORT=9100\nMODELPLANE_HOST=10.0.0.1\n")
    s = Settings()
    assert (s.port, s.host, s.log_level) == (9100, "10.0.0.1", "DEBUG")
    monkeypatch.setenv("MODELPLANE_PORT", "9200")
    assert Settings().port == 9200


def test_config_file_location_can_be_chosen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "elsewhere.yaml"
    cfg.write_text("max_body_bytes: 1024\n")
    monkeypatch.setenv("MODELPLANE_CONFIG", str(cfg))
    assert Settings().max_body_bytes == 1024


def test_postgres_urls_get_the_async_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLANE_DATABASE_URL", "postgresql://u@h:5432/db")
    assert Settings().sqlalchemy_url == "postgresql+asyncpg://u@h:5432/db"


def test_admin_key_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLANE_ADMIN_KEY", "mp-very-secret")
    s = Settings()
    assert "mp-very-secret" not in repr(s)
    assert s.admin_key is not None and s.admin_key.get_secret_value() == "mp-very-secret"


def test_bad_yaml_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "modelplane.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        Settings()


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (None, "needs MODELPLANE_SECRET_KEY"),
        ("short", "shorter than 32"),
        ("changeme-changeme-changeme-changeme-1234", "placeholder"),
        ("a" * 40, "placeholder"),
    ],
)
def test_production_refuses_a_missing_or_default_master_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str | None, why: str
) -> None:
    monkeypatch.setenv("MODELPLANE_MODE", "production")
    if secret is not None:
        monkeypatch.setenv("MODELPLANE_SECRET_KEY", secret)
    with pytest.raises(ValueError, match=why):
        Settings()


def test_production_starts_with_a_random_master_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLANE_MODE", "production")
    monkeypatch.setenv("MODELPLANE_SECRET_KEY", "Zx8-f3kQp1Vw7LmN2bRt9YcHs4JdE6uG0aOi5")
    assert Settings().mode == "production"
    # Development needs none: a master secret is generated on first start.
    monkeypatch.setenv("MODELPLANE_MODE", "development")
    monkeypatch.delenv("MODELPLANE_SECRET_KEY")
    assert Settings().secret_key is None
