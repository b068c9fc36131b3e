"""simlab: specialize language models to simulate survey response distributions (Cao et al., NAACL 2025).

In a notebook (each name is imported on first use, so ``import simlab`` stays light)::

    import simlab
    metrics = simlab.evaluate(model="smollm2_135m", adapter="outputs/finetune/<run>/adapter", subsets=["C2-Q1"])
    rows = simlab.load_survey("C1-Q2")                      # one tidy row per country x question x option
    sim = simlab.Simulator.from_run("outputs/finetune/<run>")
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

# public name -> module that defines it
_LAZY = {
    "Simulator": "simlab.simulate",
    "evaluate": "simlab.tasks.api",
    "load_survey": "simlab.tasks.api",
}
__all__ = ["Simulator", "__version__", "evaluate", "load_survey"]


def _version() -> str:
    """This code's version: the installed distribution's when this file is the one it installed, else the
    pyproject.toml beside the package (a clone, an editable install), else the distribution's, else 'unknown'."""
    from importlib import metadata

    here = Path(__file__).resolve()
    try:
        dist = metadata.distribution("simlab")
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None and Path(dist.locate_file("simlab/__init__.py")).resolve() == here:
        return dist.version
    pyproject = here.parents[1] / "pyproject.toml"
    if pyproject.is_file():
        match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            return match.group(1)
    return dist.version if dist is not None else "unknown"


__version__ = _version()


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'simlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
