"""Population rows' prompts: the instruction rendered from the configured wording, and the attribute-[ctrl].

A subgroup row's instruction is rendered from its population by ``data.population_wording``
(:class:`~simlab.data.populations.PopulationWording`), so the template in the config decides the prompt; the
instruction in the file only names the row's country. A whole-country row keeps its instruction byte for byte:
country runs keep their prompts and their numbers.

Attribute-[ctrl] (``data.attribute_control``) names a random *other* subgroup (the same attribute names, other
values, drawn from the subgroups present in the data) while the target stays the real subgroup's, seeded per row
like the country [ctrl] (:func:`~simlab.data.transforms.row_rng`): FT - FT[attribute ctrl] measures whether the
model uses the attributes at all. The country [ctrl] on a subgroup row names another country and keeps the
subgroup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from simlab.data.populations import Attributes, Population, PopulationWording
from simlab.data.rows import RowError, SurveyRow
from simlab.data.transforms import other_country, replace_country, row_rng

WORDING_TARGET = "simlab.data.populations.PopulationWording"


def as_wording(wording: PopulationWording | Mapping[str, Any] | None) -> PopulationWording:
    """``data.population_wording`` as a PopulationWording: the object Hydra built, or its config as a mapping (a
    run's resolved config, read back by a re-analysis); None: the paper's wording. Nothing in it is executed."""
    if wording is None:
        return PopulationWording()
    if not isinstance(wording, PopulationWording):
        if not isinstance(wording, Mapping):
            raise ValueError(f"data.population_wording must be a mapping, got {type(wording).__name__}")
        target = wording.get("_target_", WORDING_TARGET)
        if target != WORDING_TARGET:
            raise ValueError(f"data.population_wording._target_ must be {WORDING_TARGET}, got {target!r}")
        known = {f.name for f in fields(PopulationWording)}
        given = {k: _plain(v) for k, v in wording.items() if not str(k).startswith("_")}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"data.population_wording: unknown field(s) {unknown}; known: {sorted(known)}")
        wording = PopulationWording(**given)
    try:
        wording.template.format(population="someone", country="Kenya")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"data.population_wording.template {wording.template!r} may only use the placeholders "
                         f"{{population}} and {{country}} ({type(err).__name__}: {err})") from err
    return wording


def _plain(value: Any) -> Any:
    """Nested mappings (a Hydra DictConfig) as plain dicts, so the wording compares and prints as plain data."""
    return {str(k): _plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value


def render_instruction(row: SurveyRow, wording: PopulationWording) -> SurveyRow:
    """A subgroup row with its instruction rendered from ``wording`` for the population its prompt names (the
    [ctrl] country and attributes when set); a whole-country row unchanged."""
    if not row.attributes:
        return row
    attributes = row.prompt_attributes if row.prompt_attributes is not None else row.attributes
    try:
        instruction = wording.instruction(Population(row.prompt_country or row.country, attributes))
    except ValueError as err:
        raise RowError(row.source, row.index, "population", str(err)) from err
    return replace(row, instruction=instruction)


def subgroups(rows: Iterable[SurveyRow]) -> list[Attributes]:
    """The subgroups present in ``rows`` (their attributes, whole countries left out): the attribute-[ctrl] pool."""
    return sorted({row.attributes for row in rows if row.attributes})


def replace_attributes(row: SurveyRow, groups: Sequence[Attributes], seed: int,
                       wording: PopulationWording) -> SurveyRow:
    """The row whose prompt names another subgroup from ``groups``, one with the same attribute names (never its
    own), drawn by the row's own generator; the target unchanged."""
    names = [name for name, _ in row.attributes]
    others = sorted({g for g in groups if [name for name, _ in g] == names and g != row.attributes})
    if not others:
        what = f"another subgroup with the attributes {names}" if names else "a subgroup row (this is a whole country)"
        raise ValueError(f"{row.source}: row {row.index} ({row.population_key}): data.attribute_control needs "
                         f"{what} in the data")
    drawn = row_rng(seed, row, "attribute_ctrl").choice(others)
    return render_instruction(replace(row, prompt_attributes=drawn), wording)


def controlled(row: SurveyRow, *, seed: int, wording: PopulationWording, country_pattern: str,
               countries: Sequence[str] | None = None, groups: Sequence[Attributes] | None = None) -> SurveyRow:
    """The row as the [ctrl] settings show it: ``groups`` given, the attribute-[ctrl]; ``countries`` given, the
    country [ctrl] (on a whole-country row exactly :func:`~simlab.data.transforms.replace_country`)."""
    if groups is not None:
        row = replace_attributes(row, groups, seed, wording)
    if countries is not None:
        if not row.attributes:
            return replace_country(row, countries, seed, country_pattern)
        row = render_instruction(replace(row, prompt_country=other_country(row, countries, seed)), wording)
    return row


def prompt_population(row: SurveyRow) -> Population | None:
    """The subgroup a [ctrl] prompt names instead of the row's own; None when it names the row's own, and for a
    whole-country row (its [ctrl] country is ``prompt_country``, as before populations existed)."""
    if not row.attributes or (row.prompt_country is None and row.prompt_attributes is None):
        return None
    attributes = row.prompt_attributes if row.prompt_attributes is not None else row.attributes
    return Population(row.prompt_country or row.country, attributes)
