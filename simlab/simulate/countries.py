"""The countries a simulation may name: the WVS-7 countries of the data, each name checked (with suggestions)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from simlab.data.files import read_data_json
from simlab.paths import data_root
from simlab.simulate.questions import SimulationInputError

WVS_GROUPS = ("C1", "C2", "C3")
COUNTRIES_FILE = "wvs7/countries.json"


def wvs_countries(root: str | Path | None = None) -> list[str]:
    """Every WVS-7 country of the data (groups C1, C2, C3 in ``wvs7/countries.json``), sorted by name."""
    return sorted(name for name, groups in country_groups(root).items() if groups)


def country_groups(root: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """Each country of ``wvs7/countries.json`` with its WVS groups (C1, C2, C3; none for a Pew-only country): the
    test subsets its rows are in (a simulation's closest evaluated setting, :mod:`simlab.simulate.trust`)."""
    folder = data_root(root)
    try:
        table = read_data_json(COUNTRIES_FILE, folder)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; it lists the WVS countries a simulation can name") from err
    return {name: tuple(g for g in WVS_GROUPS if g in set(info.get("groups", ()))) for name, info in table.items()}


def check_countries(countries: Sequence[str], known: Sequence[str], where: str = "countries") -> list[str]:
    """The countries, each checked against the known names; an unknown one gets the closest names suggested."""
    if isinstance(countries, str):
        raise SimulationInputError(
            where, None, None, None, f"must be a list of country names, got the string {countries!r}")
    if len(countries) == 0:
        raise SimulationInputError(where, None, None, None, "is empty: name at least one country")
    checked: list[str] = []
    for position, country in enumerate(countries):
        name = str(country).strip()
        if name not in known:
            raise SimulationInputError(
                where, None, None, None, f"unknown country {name!r} (position {position}); {country_hint(name, known)}")
        if name in checked:
            raise SimulationInputError(where, None, None, None, f"country {name!r} is listed twice")
        checked.append(name)
    return checked


def country_hint(name: str, known: Sequence[str]) -> str:
    """For an unknown country: the closest known names ("did you mean 'Kenya'?"), else every known name."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    close += [k for k in known if k.lower() == name.lower() and k not in close]
    return f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(known)}"
