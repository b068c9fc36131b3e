"""Where simlab finds its data and caches, so no path is hard-coded elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout whose code runs (its commit goes into metrics.json)
DATA_ENV = "SIMLAB_DATA"
CACHE_ENV = "SIMLAB_CACHE"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the survey data root: explicit argument, else $SIMLAB_DATA, else ../shared/data beside the repo.

    A missing root is an error that says where the data was expected and how to point elsewhere.
    """
    if root is not None and str(root) != "":
        path, source = Path(root).expanduser(), "data.root"
    elif os.environ.get(DATA_ENV):
        path, source = Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    else:
        path, source = REPO_ROOT.parent / "shared" / "data", "the default (../shared/data beside the repo)"
    if not path.is_dir():
        raise FileNotFoundError(
            f"survey data root {path} (from {source}) does not exist. Put the shared data there, "
            f"or set {DATA_ENV}=/path/to/data or pass data.root=/path/to/data."
        )
    return path.resolve()


def cache_dir() -> Path:
    """Cache for converted model weights: $SIMLAB_CACHE, else ~/.cache/simlab."""
    path = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "simlab")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
