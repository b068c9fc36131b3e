"""The populations a simulation asks about: whole countries, or subgroups of them (a country plus attributes such
as sex and age band), given one by one (``simulate.populations``) or by splitting countries into their subgroups
(``simulate.groups=[sex,age]``). Every problem names the setting, the entry and the attribute."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from simlab.data.population_prompts import as_wording
from simlab.data.populations import (
    ATTRIBUTE_ORDER,
    GROUP_VALUES,
    Population,
    PopulationWording,
    ordered_attributes,
)
from simlab.simulate.countries import country_hint
from simlab.simulate.questions import SimulationInputError


def simulator_wording(given, loaded) -> tuple[PopulationWording | None, str]:
    """A simulator's wording and where it comes from: ``given``, else the one its adapter was trained with
    (simulator.json's ``prompt.population_wording``), else None (the default for subgroups)."""
    recorded = loaded.bundle.population_wording if loaded.bundle is not None else None
    if given is not None or recorded is not None:
        return as_wording(given if given is not None else recorded), "given" if given is not None else "adapter"
    return None, ("default (the adapter's simulator.json records no population wording: trained on whole countries)"
                  if loaded.adapter else "default")


def group_table(overrides: Mapping[str, Sequence[str]] | None = None) -> dict[str, tuple[str, ...]]:
    """The values each attribute is split into: :data:`simlab.data.populations.GROUP_VALUES`, with
    ``overrides`` (``simulate.group_values``, e.g. other age bands) replacing whole attributes."""
    table = dict(GROUP_VALUES)
    for name, values in (overrides or {}).items():
        if name not in ATTRIBUTE_ORDER:
            raise SimulationInputError("simulate.group_values", None, None, str(name),
                                       f"unknown attribute; known: {', '.join(ATTRIBUTE_ORDER)}")
        if isinstance(values, str) or not isinstance(values, Sequence) or not values \
                or not all(isinstance(v, str) and v.strip() for v in values) or len(set(values)) != len(values):
            raise SimulationInputError("simulate.group_values", None, None, str(name),
                                       f"must be a list of distinct non-empty labels, got {values!r}")
        table[name] = tuple(v.strip() for v in values)
    return table


def group_names(groups: str | Sequence[str] | None, table: Mapping[str, Sequence[str]],
                where: str = "groups") -> list[str]:
    """The attributes to split countries by, in :data:`ATTRIBUTE_ORDER` ("sex,age" or [sex, age]); an unknown
    or repeated name, or none at all, is an error naming the setting."""
    if groups is None:
        return []
    names = [g.strip() for g in groups.split(",")] if isinstance(groups, str) else [str(g).strip() for g in groups]
    if not names or not all(names):
        raise SimulationInputError(where, None, None, None, f"names no attribute ({groups!r}): give e.g. [sex,age], "
                                   "or leave it null for whole countries")
    for name in names:
        if name not in table:
            raise SimulationInputError(where, None, None, None, f"unknown group {name!r}; known: {', '.join(table)}")
        if names.count(name) > 1:
            raise SimulationInputError(where, None, None, None, f"group {name!r} is listed twice")
    return [name for name in ATTRIBUTE_ORDER if name in names]


def subgroups(country: str, names: Sequence[str], table: Mapping[str, Sequence[str]]) -> list[Population]:
    """Every combination of the named attributes' values for one country (the first attribute varies slowest)."""
    return [Population(country, tuple(zip(names, values)))
            for values in itertools.product(*(table[name] for name in names))]


def population_of(entry: Any, known: Sequence[str], where: str, position: int) -> Population:
    """One population from a country name, a mapping ({country: Kenya, sex: female}) or a :class:`Population`;
    the country checked against ``known``, the attribute names against :data:`ATTRIBUTE_ORDER`."""
    def fail(field_name: str | None, message: str) -> SimulationInputError:
        return SimulationInputError(where, position, None, field_name, message)

    if isinstance(entry, Population):
        population = entry
    elif isinstance(entry, str):
        population = Population(entry.strip())
    elif isinstance(entry, Mapping):
        unknown = [k for k in entry if k != "country" and k not in ATTRIBUTE_ORDER]
        if unknown:
            raise fail(str(unknown[0]), f"unknown population attribute; known: country, {', '.join(ATTRIBUTE_ORDER)}")
        try:
            population = Population.from_mapping(entry)
        except ValueError as err:
            raise fail(None, str(err)) from None
    else:
        raise fail(None, f"must be a country name or a mapping with a country and attributes, got {entry!r}")
    if population.country not in known:
        raise fail("country", f"unknown country {population.country!r}; {country_hint(population.country, known)}")
    try:
        return Population(population.country, ordered_attributes(population.attributes))
    except ValueError as err:
        raise fail(None, str(err)) from None


def resolve_populations(countries: Sequence[Any] | None, populations: Sequence[Any] | None,
                        groups: str | Sequence[str] | None, known: Sequence[str], wording: PopulationWording,
                        group_values: Mapping[str, Sequence[str]] | None = None,
                        prefix: str = "") -> list[Population] | None:
    """The populations to simulate, or None when none was asked (countries only: the country outputs of before).

    ``countries``' whole countries are split into their subgroups when ``groups`` names attributes (every known
    country when ``countries`` is None and no ``populations`` are listed); ``populations`` are taken as listed.
    Each population's prompt wording is checked here, so a value the wording cannot say fails before scoring."""
    asked_populations = populations is not None or groups is not None
    if not asked_populations and (countries is None or all(isinstance(c, str) for c in countries)):
        return None
    where = {name: f"{prefix}{name}" for name in ("countries", "populations", "groups")}
    table = group_table(group_values)
    names = group_names(groups, table, where["groups"])
    for setting, value in (("countries", countries), ("populations", populations)):
        if value is not None and (isinstance(value, (str, Mapping)) or not isinstance(value, Sequence)):
            raise SimulationInputError(where[setting], None, None, None, f"must be a list, got {value!r}")
        if value is not None and len(value) == 0:
            raise SimulationInputError(where[setting], None, None, None, "is empty: list some, or leave it null")
    if countries is None and populations is None:
        countries = list(known)
    if names and countries is None:  # the listed populations are taken as they are: the split would be lost
        raise SimulationInputError(where["groups"], None, None, None,
                                   f"splits the countries of {where['countries']}, which names none (only "
                                   f"{where['populations']}): list the countries to split")
    chosen: list[tuple[Population, str]] = []  # with the setting it came from
    for position, entry in enumerate(countries or []):
        population = population_of(entry, known, where["countries"], position)
        split = subgroups(population.country, names, table) if names and not population.attributes else [population]
        chosen += [(p, where["countries"]) for p in split]
    chosen += [(population_of(entry, known, where["populations"], i), where["populations"])
               for i, entry in enumerate(populations or [])]
    seen: set[str] = set()
    for population, setting in chosen:
        if population.key in seen:
            raise SimulationInputError(setting, None, None, None, f"population {population.key!r} is asked twice")
        seen.add(population.key)
        try:
            wording.describe(population.attributes)
        except ValueError as err:
            raise SimulationInputError(setting, None, None, None, f"{population.key}: {err}") from None
    return [population for population, _ in chosen]


def uses_overall_result(prior) -> bool:
    """Whether ``prior`` is a breakdown prior (``prior.settings["use"] == "breakdown"``: it reads a subgroup row's
    ``country_target``, its country's overall shares); any other prior never looks at them."""
    return prior is not None and (getattr(prior, "settings", None) or {}).get("use") == "breakdown"


def population_frame(questions: Sequence, asked: Sequence[Population], shares: Mapping[tuple[str, str], Sequence],
                     observed: Sequence = (), breakdown_prior: bool = False):
    """The tidy DataFrame of a simulation by population: per question, per country (in the order asked) its
    populations side by side, one row per option: question_id, population (its key), country, one column per
    attribute asked ("" where a population is not split by it), letter, option, share, source.

    ``shares``: the simulated cells, by (question id, population key). A population given in ``observed`` shows
    its surveyed shares, ``source`` "observed" (as a country does), and a country whose subgroups are simulated
    gets its observed overall result as a row of its own, beside them. ``attrs["observed_populations"]`` says what
    each observed cell was used for."""
    import pandas as pd

    names = [n for n in ATTRIBUTE_ORDER if any(n in dict(p.attributes) for p in asked)]
    surveyed = {(r.question_id, r.population_key): r.target for r in observed}
    countries: dict[str, list[Population]] = {}
    for population in asked:
        countries.setdefault(population.country, []).append(population)
    records, shown = [], []
    for question in questions:
        for country, members in countries.items():
            split = any(p.attributes for p in members)
            whole = Population(country)
            rows = ([whole] if split and whole not in members and (question.id, country) in surveyed else []) + members
            for population in rows:
                cell = (question.id, population.key)
                source = "observed" if cell in surveyed else "simulated"
                values = surveyed[cell] if source == "observed" else shares[cell]
                shown += [f"{question.id}: {population.key}"] if source == "observed" else []
                labels = dict(population.attributes)
                for letter, option, share in zip(question.letters, question.options, values):
                    records.append([question.id, population.key, country, *(labels.get(n, "") for n in names),
                                    letter, option, share, source])
    columns = ["question_id", "population", "country", *names, "letter", "option", "share", "source"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame.attrs["populations"] = [p.as_dict() for p in asked]
    frame.attrs["attributes"] = names
    if observed:
        frame.attrs["observed_populations"] = observed_uses(asked, observed, shown, breakdown_prior)
    return frame


def observed_uses(asked: Sequence[Population], observed: Sequence, shown: list[str], breakdown_prior: bool) -> dict:
    """What each observed cell of a population simulation was used for (simulation.meta.json), nothing left
    unsaid: shown instead of a simulation, a breakdown input, or not used (a subgroup not asked)."""
    split = {p.country for p in asked if p.attributes}
    simulated = {p.key for p in asked}
    record: dict[str, Any] = {"shown": shown, "breakdown_inputs": [], "not_used": []}
    for row in observed:
        cell = f"{row.question_id}: {row.population_key}"
        if row.attributes and row.population_key not in simulated:
            record["not_used"].append(cell)
        elif not row.attributes and row.country in split:
            record["breakdown_inputs"].append(cell)
    record["note"] = (
        "an observed population is shown with its surveyed shares (source=observed), not simulated; an observed "
        "whole country is, as without populations, the prior for the other countries when the simulator's prior is "
        "the observed cells; an observed subgroup is never a prior; 'not_used': subgroups not asked")
    if record["breakdown_inputs"]:
        record["breakdown"] = (
            "used: the simulator's breakdown prior reads each subgroup's country overall result (country_target)"
            if breakdown_prior else
            "not used: the simulator has no breakdown prior (prior=breakdown), so each country's overall result is "
            "shown beside its subgroups but does not inform their simulation")
    return record


def check_breakdown_inputs(questions: Sequence, asked: Sequence[Population], observed: Sequence,
                           prefix: str = "") -> None:
    """A breakdown prior moves each subgroup's country overall result: every population asked must be a subgroup
    whose country's overall result on every question is among the observed cells (a one-line error otherwise)."""
    why = ("the simulator's prior is a breakdown prior (prior=breakdown): it moves each subgroup's country "
           "overall result")
    whole = [p.key for p in asked if not p.attributes]
    if whole:
        raise SimulationInputError(f"{prefix}populations", None, None, None,
                                   f"{why}, so it simulates subgroups, not whole countries ({', '.join(whole)})")
    overall = {(r.question_id, r.country) for r in observed if not r.attributes}
    missing = list(dict.fromkeys(f"{q.id}: {p.country}" for q in questions for p in asked
                                 if (q.id, p.country) not in overall))
    if missing:
        raise SimulationInputError(f"{prefix}observed", None, None, None,
                                   f"{why}; give it as a row without attributes for {', '.join(missing)}")
