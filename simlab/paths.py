"""Where simlab finds its data and caches, so no path is hard-coded elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent  # the simlab package
REPO_ROOT = PACKAGE_ROOT.parent  # the checkout (for an installed wheel: the folder holding the package)
# the country-level survey files shipped inside the package, xz-compressed (docs/DATA.md; scripts/pack_data.py)
PACKAGED_DATA = PACKAGE_ROOT / "data" / "survey"
DATA_ENV = "SIMLAB_DATA"
CACHE_ENV = "SIMLAB_CACHE"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the survey data root: explicit argument (``data.root``), else $SIMLAB_DATA, else the copy shipped
    in the package (simlab/data/survey), so a clone or an installed wheel runs with no data set up.

    Files under the root are read plain or xz/gzip-compressed (:mod:`simlab.data.files`). A root that is missing,
    or is a file rather than a folder, is a one-line error naming it, where it came from and how to point elsewhere.
    """
    if root is not None and str(root) != "":
        path, source = Path(root).expanduser(), "data.root"
    elif os.environ.get(DATA_ENV):
        path, source = Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    else:
        path, source = PACKAGED_DATA, "the copy shipped in the package; reinstall simlab to restore it"
    if path.is_file():
        raise NotADirectoryError(
            f"survey data root {path} (from {source}) is a file, not a folder: point {DATA_ENV} or data.root at the "
            f"folder that holds the files named in data.files (e.g. wvs7/sft_wvs_train.json), and list single "
            f"files in data.files"
        )
    if not path.is_dir():
        raise FileNotFoundError(
            f"survey data root {path} (from {source}) does not exist: set {DATA_ENV}=/path/to/data or pass "
            f"data.root=/path/to/data, or unset both to use the copy shipped in the package"
        )
    return path.resolve()


def cache_dir() -> Path:
    """Cache for converted model weights: $SIMLAB_CACHE, else ~/.cache/simlab."""
    path = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "simlab")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
