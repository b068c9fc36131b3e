"""Populations: a country, or a subgroup of one (sex, age band, education...), and how a prompt describes it.

A country-level row is a population with no attributes: its key is the country's name and its prompt is the
paper's ("How would someone from Kenya answer..."), so everything built for countries keeps its numbers. A
subgroup row names its attributes in a fixed order (:data:`ATTRIBUTE_ORDER`), so one subgroup has one key in
every file, and its prompt describes it in the paper's wording ("How would a woman aged 30 to 49 from Kenya
answer the following question:").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The attributes a population may carry, in the order keys and prompts name them. Values are short labels
# (``female``, ``30-49``); the wording below turns them into words.
ATTRIBUTE_ORDER = ("sex", "age", "education", "income", "settlement", "region")

Attributes = tuple[tuple[str, str], ...]  # ((name, value), ...) in ATTRIBUTE_ORDER


def ordered_attributes(attributes: Mapping[str, str] | Attributes) -> Attributes:
    """``attributes`` as ((name, value), ...) in :data:`ATTRIBUTE_ORDER`; an unknown name or a non-string or empty
    value is a ValueError naming it."""
    items = dict(attributes.items() if isinstance(attributes, Mapping) else attributes)
    unknown = sorted(set(items) - set(ATTRIBUTE_ORDER))
    if unknown:
        raise ValueError(f"unknown population attribute(s) {unknown}; known: {list(ATTRIBUTE_ORDER)}")
    for name, value in items.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"population attribute {name!r} must be a non-empty string, got {value!r}")
    return tuple((name, items[name]) for name in ATTRIBUTE_ORDER if name in items)


def group_label(attributes: Attributes) -> str:
    """The subgroup without its country ("sex=female, age=30-49"); "" for a whole country."""
    return ", ".join(f"{name}={value}" for name, value in attributes)


def population_key(country: str, attributes: Attributes = ()) -> str:
    """The population's identity in files and tables: the country alone for a whole country (as before
    populations existed), else "Kenya | sex=female, age=30-49"."""
    return f"{country} | {group_label(attributes)}" if attributes else country


@dataclass(frozen=True)
class Population:
    """A country, or a subgroup of one."""

    country: str
    attributes: Attributes = ()

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Population:
        """From a row's ``population`` object ({"country": "Kenya", "sex": "female", "age": "30-49"})."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"a population must be an object with a 'country', got {type(mapping).__name__}")
        country = mapping.get("country")
        if not isinstance(country, str) or not country.strip():
            raise ValueError(f"a population needs a non-empty 'country' string, got {country!r}")
        return cls(country, ordered_attributes({k: v for k, v in mapping.items() if k != "country"}))

    @property
    def key(self) -> str:
        return population_key(self.country, self.attributes)

    @property
    def group(self) -> str:
        return group_label(self.attributes)

    def as_dict(self) -> dict[str, str]:
        return {"country": self.country, **dict(self.attributes)}


def _default_subjects() -> dict[str, dict[str, str]]:
    return {"sex": {"female": "a woman", "male": "a man"}}


def _default_qualifiers() -> dict[str, dict[str, str]]:
    return {
        "age": {"16-29": "aged 16 to 29", "30-49": "aged 30 to 49", "50+": "aged 50 or older"},
        "education": {"lower": "with at most lower secondary education",
                      "middle": "with upper secondary or post-secondary education",
                      "higher": "with tertiary education"},
        "income": {"low": "with a low income", "medium": "with a medium income", "high": "with a high income"},
        "settlement": {"urban": "living in a town or city", "rural": "living in the countryside"},
    }


@dataclass(frozen=True)
class PopulationWording:
    """How a prompt names a population: ``template`` with {population} and {country}.

    The subject is the sex's phrase ("a woman"), else ``someone``; every other attribute adds its qualifier
    ("aged 30 to 49") in :data:`ATTRIBUTE_ORDER`. A whole country reads "someone from Kenya": the paper's
    instruction exactly. An age band the wording does not list (a custom band such as ``18-24``) reads
    "aged 18 to 24" / "aged 65 or older"; any other unknown value is an error naming it (a prompt never shows a
    raw code).
    """

    template: str = "How would {population} from {country} answer the following question:\n\n"
    someone: str = "someone"
    subjects: dict[str, dict[str, str]] = field(default_factory=_default_subjects)
    qualifiers: dict[str, dict[str, str]] = field(default_factory=_default_qualifiers)

    def describe(self, attributes: Attributes) -> str:
        """The population without its country: "a woman aged 30 to 49"; "someone" for a whole country."""
        subject, words = self.someone, []
        for name, value in attributes:
            if name in self.subjects:
                subject = self._phrase(self.subjects[name], name, value)
            else:
                words.append(self._phrase(self.qualifiers.get(name, {}), name, value))
        return " ".join([subject, *words])

    def instruction(self, population: Population) -> str:
        return self.template.format(population=self.describe(population.attributes), country=population.country)

    @staticmethod
    def _phrase(phrases: Mapping[str, str], name: str, value: str) -> str:
        if value in phrases:
            return phrases[value]
        if name == "age":
            low, dash, high = value.partition("-")
            if dash and low.isdigit() and high.isdigit():
                return f"aged {low} to {high}"
            if value.endswith("+") and value[:-1].isdigit():
                return f"aged {value[:-1]} or older"
        raise ValueError(f"no wording for population attribute {name}={value!r}; add it to "
                         f"data.population_wording ({'subjects' if name == 'sex' else 'qualifiers'}.{name})")


# The values each attribute takes when a country is split into its subgroups (``simulate.groups=sex,age``): the
# labels the population files use (age in the builder's default bands). ``region`` has no fixed values.
GROUP_VALUES: dict[str, tuple[str, ...]] = {
    "sex": ("female", "male"),
    "age": ("16-29", "30-49", "50+"),
    "education": ("lower", "middle", "higher"),
    "income": ("low", "medium", "high"),
    "settlement": ("urban", "rural"),
}
