"""What a simulation writes: a tidy CSV, a provenance sidecar, a markdown table per question and one chart
per question. Every output names the model and adapter and carries the caution, so a chart copied into a
slide deck still says what it is."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from simlab.common.files import atomic_writer, write_json, write_text
from simlab.common.spreadsheet import spreadsheet_cell
from simlab.simulate.interval_chart import Slot, plot_intervals
from simlab.simulate.trust import share_cell, trust_lines

CSV_NAME, META_NAME, MD_NAME = "simulation.csv", "simulation.meta.json", "simulation.md"
# recorded only for a simulation by population
POPULATION_META = ("populations", "attributes", "population_wording", "observed_populations")
TRUST_META = ("intervals", "effective_respondents")  # the intervals' fit (or why none) and the k of each country


def country_order(frame, question_id: str) -> list[str]:
    """Countries of one question by the share of its first option, highest first (ties by name)."""
    sub = frame[(frame["question_id"] == question_id) & (frame["letter"] == "A")]
    return [c for _, c in sorted(zip(-sub["share"].to_numpy(), sub["country"]), key=lambda t: (t[0], t[1]))]


def wide_table(frame, question_id: str, values: str = "share"):
    """countries x options (columns 'A: label') for one question, countries in :func:`country_order`; an observed
    country (``source`` observed) is labelled "<country> (observed)". ``values``: share, or lower / upper."""
    sub = frame[frame["question_id"] == question_id]
    table = (sub.assign(column=sub["letter"] + ": " + sub["option"])
             .pivot(index="country", columns="column", values=values))
    columns = list(dict.fromkeys(sub["letter"] + ": " + sub["option"]))
    table = table.loc[country_order(frame, question_id), columns]
    if "source" in sub:
        observed = set(sub.loc[sub["source"] == "observed", "country"])
        table.index = [f"{c} (observed)" if c in observed else c for c in table.index]
    return table


def provenance_line(attrs: dict) -> str:
    adapter = attrs.get("adapter") or "none (the bare model)"
    model = attrs["model"] if attrs["model"] == attrs["model_source"] else f"{attrs['model']} ({attrs['model_source']})"
    return f"model {model}, adapter {adapter}, prompt style {attrs['prompt_style']}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:40] or "question"


def image_name(position: int, question_id: str) -> str:
    return f"simulation_{position + 1:02d}_{slug(question_id)}.png"


def write_simulation(frame, out_dir: str | Path) -> list[Path]:
    """Write simulation.csv, simulation.meta.json, simulation.md and one PNG per question; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    attrs = frame.attrs
    question_ids = list(attrs["questions"])
    images = {qid: image_name(i, qid) for i, qid in enumerate(question_ids)}

    csv_path = out / CSV_NAME
    with atomic_writer(csv_path, newline="") as handle:
        spreadsheet_safe(frame).to_csv(handle, index=False, float_format="%.10g")
    meta_path = out / META_NAME
    meta = {key: attrs.get(key) for key in ("model", "model_source", "adapter", "prompt_style", "input", "countries")}
    meta.update({key: attrs[key] for key in POPULATION_META if key in attrs})  # a simulation by population
    if attrs.get("observed"):  # simulate.observed: which cells are surveyed, not simulated
        meta["observed"] = attrs["observed"]
    if attrs.get("adapter_mismatch"):  # settings asked against the adapter's own (model.allow_mismatch=true)
        meta["adapter_mismatch"] = attrs["adapter_mismatch"]
    meta.update({key: attrs[key] for key in TRUST_META if key in attrs})  # a Simulator's (simlab.simulate.trust)
    meta.update(questions=attrs["questions"], files={"csv": CSV_NAME, "markdown": MD_NAME, "images": images},
                caution=attrs["caution"])
    write_json(meta_path, meta)

    md_path = out / MD_NAME
    write_text(md_path, markdown(frame, images))
    paths = [csv_path, meta_path, md_path]
    for qid in question_ids:
        paths.append(plot_question(frame, qid, out / images[qid]))
    return paths


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(frame, images: dict[str, str] | None = None) -> str:
    """One table per question (countries x options, shares in percent), headed by provenance and the caution."""
    if "population" in frame.columns:
        return population_markdown(frame, images)
    attrs = frame.attrs
    lines = ["# Simulated answer distributions", "", f"> **Caution.** {attrs['caution']}", "",
             f"Produced by {provenance_line(attrs)}.", ""]
    if attrs.get("input"):
        lines += [f"Questions from `{attrs['input']}`; shares are the model's next-token probabilities of the option "
                  "letters, renormalised over the options. Countries are ordered by the share of option A.", ""]
    if attrs.get("observed"):
        lines += [f"Countries marked (observed) show the surveyed shares from `{attrs['observed']['file']}`, not "
                  "the model's; every observed country is also in the prior of the others.", ""]
    bounded = "lower" in frame.columns  # the adapter's prediction intervals: "34% [28–41%]"
    lines += trust_lines(frame) if bounded else []
    for qid, question in attrs["questions"].items():
        table = wide_table(frame, qid)
        lines += [f"## {_md_cell(qid)}: {_md_cell(question['text'])}", ""]
        lines.append("| country | " + " | ".join(_md_cell(c) for c in table.columns) + " |")
        lines.append("|---|" + "---:|" * len(table.columns))
        low, high = (wide_table(frame, qid, v) for v in ("lower", "upper")) if bounded else (None, None)
        for country, row in table.iterrows():
            cells = ([share_cell(*v) for v in zip(row, low.loc[country], high.loc[country])] if bounded
                     else [f"{100 * v:.1f}%" for v in row])
            lines.append(f"| {_md_cell(country)} | " + " | ".join(cells) + " |")
        lines.append("")
        if images and qid in images:
            lines += [f"![{_md_cell(qid)}]({images[qid]})", ""]
    lines += [f"*{attrs['caution']}*", ""]
    return "\n".join(lines)


def _colors(count: int) -> list:
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["turbo"](i / (count - 1)) for i in range(count)]


def plot_question(frame, question_id: str, path: str | Path) -> Path:
    """A stacked horizontal bar per country (options left to right), countries by the share of option A."""
    if "population" in frame.columns:
        return plot_populations(frame, question_id, path)
    if "lower" in frame.columns:  # with the adapter's prediction intervals: dots and whiskers
        table, low, high = (wide_table(frame, question_id, v) for v in ("share", "lower", "upper"))
        slots = [Slot(c, table.loc[c].tolist(), low.loc[c].tolist(), high.loc[c].tolist()) for c in table.index]
        return _plot_bounded(frame, question_id, slots, "country (by share of option A)", path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attrs = frame.attrs
    question = attrs["questions"][question_id]
    table = wide_table(frame, question_id)
    countries = list(table.index)[::-1]  # barh draws bottom-up: the highest share of A ends on top
    values = table.loc[countries].to_numpy()
    colors = _colors(values.shape[1])
    title = "\n".join(textwrap.wrap(f"{question_id}: {question['text']}", 80))
    footer = "\n".join(textwrap.wrap(f"Simulated by {provenance_line(attrs)}. {attrs['caution']}", 120))
    height = 1.9 + 0.34 * len(countries) + 0.22 * title.count("\n") + 0.16 * footer.count("\n") + 0.2 * values.shape[1]
    fig, ax = plt.subplots(figsize=(10, height), layout="constrained")
    left = [0.0] * len(countries)
    for k, (label, color) in enumerate(zip(table.columns, colors)):
        shares = values[:, k]
        bars = ax.barh(countries, shares, left=left, color=color, edgecolor="white", linewidth=0.6,
                       label="\n".join(textwrap.wrap(label, 34)))
        r, g, b = color[:3]
        ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"
        for bar, share in zip(bars, shares):
            if share >= 0.06:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2, f"{100 * share:.0f}%",
                        ha="center", va="center", fontsize=8, color=ink)
        left = [a + s for a, s in zip(left, shares)]
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(countries) - 0.4)  # no default 5% margins: they leave gaps with many countries
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel("simulated share of respondents")
    ax.set_ylabel("country (by share of option A)")
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    fig.legend(loc="outside right upper", title="answer option", fontsize=9, title_fontsize=9, frameon=False)
    fig.supxlabel(footer, x=0.01, ha="left", fontsize=7, color="0.3")  # laid out by constrained layout
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_bounded(frame, question_id: str, slots: list, ylabel: str, path: str | Path) -> Path:
    """:func:`~simlab.simulate.interval_chart.plot_intervals` headed and footed as the bar charts are."""
    attrs, level = frame.attrs, 100 * frame.attrs["intervals"]["level"]
    question = attrs["questions"][question_id]
    title = "\n".join(textwrap.wrap(f"{question_id}: {question['text']}", 80))
    footer = "\n".join(textwrap.wrap(f"Simulated by {provenance_line(attrs)}. {attrs['caution']}", 120))
    observed = "; hollow: observed" if (frame["source"] == "observed").any() else ""
    xlabel = f"simulated share (dots) with its {level:g}% prediction interval (whiskers){observed}; rows: {ylabel}"
    return plot_intervals(slots, option_columns(question["options"]), _colors(len(question["options"])), title,
                          footer, xlabel, path)


def spreadsheet_safe(frame):
    """The frame with every text cell that a spreadsheet would run as a formula escaped
    (:func:`simlab.common.spreadsheet.spreadsheet_cell`); numbers are left as they are."""
    from pandas.api.types import is_numeric_dtype

    safe = frame.copy()
    for column in safe.columns:
        if not is_numeric_dtype(safe[column]):
            safe[column] = [spreadsheet_cell(v) for v in safe[column]]
    return safe


# ---------------------------------------------------------------------------------------------- by population
WHOLE_COUNTRY = "whole country"


def population_bars(frame, question_id: str) -> list[tuple[str, str, list[float], bool]]:
    """(country, label, shares, observed) per population of one question, in the frame's order (by country, its
    populations side by side); an observed one (source observed: surveyed shares) is labelled "(observed)"."""
    sub = frame[frame["question_id"] == question_id]
    bars = []
    for key in dict.fromkeys(sub["population"]):
        rows = sub[sub["population"] == key]
        country, label = rows["country"].iloc[0], key.partition(" | ")[2] or WHOLE_COUNTRY
        observed = bool((rows["source"] == "observed").all())
        bars.append((country, f"{label} (observed)" if observed else label, rows["share"].tolist(), observed))
    return bars


def population_bounds(frame, question_id: str) -> list[tuple[list | None, list | None]]:
    """(lower, upper) per population of one question in :func:`population_bars`' order; (None, None) each
    without intervals."""
    sub = frame[frame["question_id"] == question_id]
    keys = list(dict.fromkeys(sub["population"]))
    if "lower" not in frame.columns:
        return [(None, None)] * len(keys)
    return [(sub.loc[sub["population"] == k, "lower"].tolist(), sub.loc[sub["population"] == k, "upper"].tolist())
            for k in keys]


def option_columns(options: list[str]) -> list[str]:
    """'A: label' per option, as the country tables head their columns."""
    return [f"{chr(ord('A') + k)}: {option}" for k, option in enumerate(options)]


def population_markdown(frame, images: dict[str, str] | None = None) -> str:
    """One table per question: per country its populations side by side (a row each, options as columns), the
    observed ones marked, headed by provenance and the caution."""
    attrs = frame.attrs
    lines = ["# Simulated answer distributions", "", f"> **Caution.** {attrs['caution']}", "",
             f"Produced by {provenance_line(attrs)}.", ""]
    if attrs.get("input"):
        lines += [f"Questions from `{attrs['input']}`; shares are the model's next-token probabilities of the option "
                  "letters, renormalised over the options.", ""]
    lines += ["Populations are grouped by country in the order asked; a row marked *(observed)* shows surveyed "
              "shares (simulate.observed), not the model's.", ""]
    if (attrs.get("observed_populations") or {}).get("breakdown"):
        lines += [f"Countries' overall results: {attrs['observed_populations']['breakdown']}.", ""]
    lines += trust_lines(frame) if "lower" in frame.columns else []
    for qid, question in attrs["questions"].items():
        options = option_columns(question["options"])
        lines += [f"## {_md_cell(qid)}: {_md_cell(question['text'])}", ""]
        lines.append("| country | population | " + " | ".join(_md_cell(c) for c in options) + " |")
        lines.append("|---|---|" + "---:|" * len(options))
        bounds = population_bounds(frame, qid)
        for (country, label, shares, observed), (low, high) in zip(population_bars(frame, qid), bounds):
            label = f"*{_md_cell(label)}*" if observed else _md_cell(label)
            cells = ([share_cell(*v) for v in zip(shares, low, high)] if low is not None
                     else [f"{100 * v:.1f}%" for v in shares])
            lines.append(f"| {_md_cell(country)} | {label} | " + " | ".join(cells) + " |")
        lines.append("")
        if images and qid in images:
            lines += [f"![{_md_cell(qid)}]({images[qid]})", ""]
    lines += [f"*{attrs['caution']}*", ""]
    return "\n".join(lines)


def plot_populations(frame, question_id: str, path: str | Path) -> Path:
    """Stacked horizontal bars grouped by country (its name heads the group), one bar per population; observed
    shares hatched and labelled (observed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attrs = frame.attrs
    question = attrs["questions"][question_id]
    bars = population_bars(frame, question_id)
    slots: list[tuple[str, list[float] | None, bool]] = []  # top to bottom: a country's name, then its bars
    bounded: list[Slot] = []  # the same with the prediction intervals' bounds
    previous = None
    for (country, label, shares, observed), (low, high) in zip(bars, population_bounds(frame, question_id)):
        if country != previous:
            slots.append((country, None, False))
            bounded.append(Slot(country))
            previous = country
        slots.append((label, shares, observed))
        bounded.append(Slot(label, shares, low, high))
    if "lower" in frame.columns:  # with the adapter's prediction intervals: dots and whiskers
        return _plot_bounded(frame, question_id, bounded, "populations by country", path)
    labels = option_columns(question["options"])
    colors = _colors(len(labels))
    title = "\n".join(textwrap.wrap(f"{question_id}: {question['text']}", 80))
    footer = "\n".join(textwrap.wrap(f"Simulated by {provenance_line(attrs)}. {attrs['caution']}", 120))
    height = 1.9 + 0.3 * len(slots) + 0.22 * title.count("\n") + 0.16 * footer.count("\n") + 0.2 * len(labels)
    fig, ax = plt.subplots(figsize=(10, height), layout="constrained")
    y = [len(slots) - 1 - i for i in range(len(slots))]
    legend = True  # the first bar names the options
    for position, (_, shares, observed) in zip(y, slots):
        if shares is None:
            continue
        left = 0.0
        for k, (share, color) in enumerate(zip(shares, colors)):
            ax.barh(position, share, left=left, color=color, edgecolor="white", linewidth=0.6,
                    hatch="//" if observed else None, label=labels[k] if legend else None)
            r, g, b = color[:3]
            if share >= 0.06:
                ax.text(left + share / 2, position, f"{100 * share:.0f}%", ha="center", va="center", fontsize=8,
                        color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white")
            left += share
        legend = False
    ax.set_yticks(y, [name for name, _, _ in slots])
    for tick, (_, shares, _) in zip(ax.get_yticklabels(), slots):
        if shares is None:
            tick.set_fontweight("bold")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(slots) - 0.4)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel("simulated share of respondents" + (" (hatched: observed)" if any(s[2] for s in slots) else ""))
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, ["\n".join(textwrap.wrap(n, 34)) for n in names], loc="outside right upper",
               title="answer option", fontsize=9, title_fontsize=9, frameon=False)
    fig.supxlabel(footer, x=0.01, ha="left", fontsize=7, color="0.3")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
