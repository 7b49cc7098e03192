"""The report's first page (`summary.rst`, the Snakemake report's description): the verdict per combo with its
interval, power and caveats, then which experts moved, before any table or the workflow graph. A reader who
opens the report and reads nothing else reads what the run can and cannot say."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from resm_core.data.schema import DIMS


def _text(value: Any) -> str:
    """Plain text inside reStructuredText (and the Jinja the Snakemake report renders it with): no markup."""
    text = " ".join(str(value).split())
    text = re.sub(r"([\\`*|_])", r"\\\1", text)
    return text.replace("{", "(").replace("}", ")")


def _name(value: Any) -> str:
    return f"``{' '.join(str(value).split())}``"


def _precondition(text: str) -> str:
    """A precondition in short: which arms did not move which dimension, with the gain's lower bound."""
    if text == "met" or not text.startswith("not met"):
        return _text(text)
    failed = re.findall(r"(\S+) did not move (\w+) by [\d.]+ \(gain ([+-][\d.]+), lower bound ([+-][\d.]+)\)", text)
    if not failed:
        return _text(text)
    each = "; ".join(f"{_name(arm)} on {dim} (gain {gain}, lower bound {low})" for arm, dim, gain, low in failed)
    return f"not met, these did not move their dimension enough: {each}"


def _winner(row: pd.Series) -> str:
    """The verdict in a word: the merge, the mixture, equivalent or inconclusive (the arms are named below)."""
    verdict = str(row["verdict"])
    return {row["arm_a"]: "the merge", row["arm_b"]: "the mixture"}.get(verdict, verdict)


def _interval(row: pd.Series) -> str:
    return f"{row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


def _table(header: list[str], rows: list[list[str]], widths: str) -> list[str]:
    out = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        out.append(f"   * - {row[0]}")
        out += [f"     - {cell}" for cell in row[1:]]
    return out + [""]


def summary_rst(compared: pd.DataFrame, power: str, moved: dict[str, bool], title: str = "") -> str:
    head = compared[(compared["comparison"] == "merge_vs_mix") & (compared["metric"] == "balance")]
    title = title or "Mix the data, or merge the models?"
    lines = [_text(title), "=" * len(_text(title)), ""]
    if head.empty:
        lines += [_text(power), ""]
    else:
        lines += ["Verdict", "-------", ""]
        lines += [
            "Per combo, the merge and the mixture chosen on validation, compared on test items (balance: the "
            "harmonic mean of the combo's dimensions, each normalised by its chance level; merge minus mixture, "
            "paired 95% interval, Holm-adjusted p).",
            "",
        ]
        rows = [
            [
                _name(r["combo"]),
                f"**{_text(_winner(r))}**",
                _interval(r),
                f"{r['p_adjusted']:.3g}",
                f"{r['mdd_80']:.3f}",
            ]
            for _, r in head.iterrows()
        ]
        header = ["combo", "verdict", "merge - mixture", "Holm p", "mdd_80"]
        lines += _table(header, rows, "34 16 30 10 10")
        for _, r in head.iterrows():
            lines += [
                f"- {_name(r['combo'])}: the merge {_name(r['arm_a'])} ({r['a_score']:.3f}) against the mixture "
                f"{_name(r['arm_b'])} ({r['b_score']:.3f}). Precondition: {_precondition(r['precondition'])}."
                + (f" Caveats: {_text(r['caveats'])}." if r["caveats"] else "")
            ]
        lines.append("")
        lines += ["Per dimension (test items, merge minus mixture):", ""]
        detail = compared[(compared["comparison"] == "merge_vs_mix") & compared["metric"].isin(DIMS)]
        dim_rows = [
            [_name(r["combo"]), _text(r["metric"]), f"{r['a_score']:.3f}", f"{r['b_score']:.3f}", _interval(r)]
            for _, r in detail.iterrows()
        ]
        lines += _table(["combo", "dimension", "merge", "mixture", "difference"], dim_rows, "20 20 15 15 30")
        lines += ["Power", "-----", "", _text(power), ""]
    lines += ["Experts", "-------", ""]
    experts = compared[(compared["comparison"] == "expert_vs_base") & (compared["split"] == "val")]
    if experts.empty:
        lines += ["No expert was compared with the base (the grid has no base arm).", ""]
    else:
        lines += ["Each expert against the base on its own dimension (validation items): the precondition.", ""]
        rows = [
            [
                _text(r["combo"]),
                "moved" if moved.get(r["combo"]) else "**did not move**",
                _interval(r),
                _text(r["precondition"]),
            ]
            for _, r in experts.iterrows()
        ]
        lines += _table(["dimension", "expert", "difference over the base", "why"], rows, "15 15 25 45")
        still = [d for d, ok in moved.items() if not ok]
        if still:
            lines += [
                f"Experts that did not move ({', '.join(still)}): a merge or mixture that uses them answers a "
                "different question than the one asked; the verdicts above say so in their precondition.",
                "",
            ]
    lines += [
        "Where to look",
        "-------------",
        "",
        "**Grid**: every arm's scores (grid.csv), the validation selection (selection.csv), every paired "
        "comparison (comparisons.csv). **Plots**: the differences with their intervals (forest.png), the "
        "arms' dimension scores with intervals (pareto.png), per-dimension profiles, conflicts and RESM's ranks.",
        "",
    ]
    return "{% raw %}\n" + "\n".join(lines) + "{% endraw %}\n"
