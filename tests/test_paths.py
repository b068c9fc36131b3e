"""data_root: explicit argument, then $SIMLAB_DATA, then the default; a missing root says how to fix it."""

from __future__ import annotations

import pytest

import simlab.paths as paths
from simlab.paths import DATA_ENV, data_root


def test_explicit_argument(tmp_path, monkeypatch):
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv("SIMLAB_DATA", str(env))
    assert data_root(explicit) == explicit.resolve()
    assert data_root(str(explicit)) == explicit.resolve()


def test_env_variable(tmp_path, monkeypatch):
    assert DATA_ENV == "SIMLAB_DATA"
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv("SIMLAB_DATA", str(env))
    assert data_root() == env.resolve()
    assert data_root(None) == env.resolve()
    assert data_root("") == env.resolve()  # an empty data.root means "not set"


def test_default_beside_repo(tmp_path, monkeypatch):
    repo = tmp_path / "main"
    repo.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.delenv("SIMLAB_DATA", raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    assert data_root() == (tmp_path / "shared" / "data").resolve()


def _assert_helpful(err: FileNotFoundError, missing):
    text = str(err)
    assert str(missing) in text
    assert "SIMLAB_DATA" in text
    assert "data.root" in text


def test_missing_explicit_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMLAB_DATA", str(tmp_path))  # exists, but the explicit argument wins
    missing = tmp_path / "no-such-data"
    with pytest.raises(FileNotFoundError) as info:
        data_root(missing)
    _assert_helpful(info.value, missing)


def test_missing_env_root(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-env-data"
    monkeypatch.setenv("SIMLAB_DATA", str(missing))
    with pytest.raises(FileNotFoundError) as info:
        data_root()
    _assert_helpful(info.value, missing)


def test_missing_default_root(tmp_path, monkeypatch):
    repo = tmp_path / "main"
    repo.mkdir()
    monkeypatch.delenv("SIMLAB_DATA", raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    with pytest.raises(FileNotFoundError) as info:
        data_root()
    _assert_helpful(info.value, tmp_path / "shared" / "data")


def test_file_is_not_a_root(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMLAB_DATA", raising=False)
    a_file = tmp_path / "data.json"
    a_file.write_text("[]", encoding="utf-8")
    with pytest.raises(FileNotFoundError):
        data_root(a_file)
