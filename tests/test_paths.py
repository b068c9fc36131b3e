"""data_root: explicit argument, then $SIMLAB_DATA, then the copy shipped in the package; a missing root, or a file
given as the root, says how to fix it."""

from __future__ import annotations

from pathlib import Path

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


def test_default_is_the_shipped_copy(monkeypatch):
    monkeypatch.delenv("SIMLAB_DATA", raising=False)
    assert data_root() == paths.PACKAGED_DATA.resolve()
    assert data_root(None) == data_root("") == paths.PACKAGED_DATA.resolve()
    assert paths.PACKAGED_DATA == Path(paths.__file__).resolve().parent / "data" / "survey"  # inside the package
    assert (paths.PACKAGED_DATA / "wvs7" / "sft_wvs_train.json.xz").is_file()


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
    monkeypatch.delenv("SIMLAB_DATA", raising=False)
    monkeypatch.setattr(paths, "PACKAGED_DATA", tmp_path / "gone")
    with pytest.raises(FileNotFoundError) as info:
        data_root()
    _assert_helpful(info.value, tmp_path / "gone")
    assert "shipped in the package" in str(info.value)


@pytest.mark.parametrize("how", ["data.root", "SIMLAB_DATA"])
def test_file_is_not_a_root(tmp_path, monkeypatch, how):
    """A data file given as the root says it is a file (not that it does not exist), in one line."""
    a_file = tmp_path / "data.json"
    a_file.write_text("[]", encoding="utf-8")
    if how == "data.root":
        monkeypatch.delenv("SIMLAB_DATA", raising=False)
        call = lambda: data_root(a_file)  # noqa: E731
    else:
        monkeypatch.setenv("SIMLAB_DATA", str(a_file))
        call = data_root
    with pytest.raises(NotADirectoryError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text
    assert f"{a_file} (from {'data.root' if how == 'data.root' else '$SIMLAB_DATA'}) is a file, not a folder" in text
    assert "does not exist" not in text
    assert "data.files" in text
