"""A tiny hand-made population data folder in the layout of data=wvs_populations: 4 countries (C1: Andorra,
Brazil; C2: Kenya; C3: Japan) x 2 subgroups (women 30-49, men 50+) x 4 questions (Q1: 2, Q2: 1, Q3: 1), with
n, n_eff and the country's overall shares, split into the paper's subsets by data_type."""

from __future__ import annotations

import json
from pathlib import Path

from simlab.data.populations import Population, PopulationWording

C1, C2, C3 = ["Andorra", "Brazil"], ["Kenya"], ["Japan"]
Q1, Q2, Q3 = ["164", "165"], ["166"], ["167"]
GROUPS = [{"sex": "female", "age": "30-49"}, {"sex": "male", "age": "50+"}]
TOPICS = {"164": "God", "165": "family", "166": "work", "167": "friends"}
OPTIONS = ["(A)Very important", "(B)Rather important", "(C)Not very important", "(D)Not at all important"]
# data_type of each (country group, question group), as the paper's C x Q design
SPLITS = [("train", C1, Q1), ("valid", C1, Q2), ("test_1", C1, Q3), ("test_2", C2, Q1), ("test_3", C2, Q2),
          ("test_4", C2, Q3), ("test_5", C3, Q1), ("test_6", C3, Q2), ("test_7", C3, Q3)]
FILES = {"train": "populations_train.json", "valid": "populations_valid.json"}  # the rest: populations_test.json


def _percents(weights) -> dict[str, float]:
    total = sum(weights)
    return {chr(65 + j): 100.0 * w / total for j, w in enumerate(weights)}


def population_rows() -> list[dict]:
    """Every row of the folder, in the builder's format (population object, n, n_eff, country_shares)."""
    rows, wording = [], PopulationWording()
    for data_type, countries, questions in SPLITS:
        for q in questions:
            k = 3 + int(q) % 2  # 3 or 4 options
            for c, country in enumerate(countries):
                overall = _percents([(int(q) + c + j) % 4 + 1 for j in range(k)])
                for g, group in enumerate(GROUPS):
                    population = Population.from_mapping({"country": country, **group})
                    rows.append({
                        "id": q, "instruction": wording.instruction(population),
                        "input": f"How important is {TOPICS[q]} in your life? \nHere are the options: \n",
                        "options": OPTIONS[:k], "options_dist": _percents([(int(q) + c + g + 2 * j) % 5 + 1
                                                                            for j in range(k)]),
                        "data_type": data_type, "population": population.as_dict(),
                        "n": 120 + 10 * g, "n_eff": 80.5 + g, "country_shares": overall,
                    })
    return rows


def write_population_data(root: Path) -> Path:
    """The folder ``root`` with wvs7_populations/populations_{train,valid,test}.json; returns ``root``."""
    folder = root / "wvs7_populations"
    folder.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, list[dict]] = {}
    for row in population_rows():
        by_file.setdefault(FILES.get(row["data_type"], "populations_test.json"), []).append(row)
    for name, rows in by_file.items():
        (folder / name).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return root
