"""The report's figures: the 3H profile per combo, the helpfulness-harmlessness Pareto front, the task-vector
conflict heatmap per layer, and RESM's kept rank per layer."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from resm_core.data.schema import DIMS  # noqa: E402
from resm_core.grid import Arm  # noqa: E402

COLORS = {"base": "#777777", "expert": "#1f77b4", "mixture": "#2ca02c", "merge": "#d62728"}


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def forest(comparisons: pd.DataFrame, out: Path) -> None:
    """Paired differences on balance with their 95% intervals: each combo's chosen merge vs its chosen
    mixture (bold), and every merge method vs that mixture."""
    rows = comparisons[
        comparisons["comparison"].isin(["merge_vs_mix", "method_vs_mix"]) & (comparisons["metric"] == "balance")
    ]
    fig, ax = plt.subplots(figsize=(7, 0.32 * max(len(rows), 3) + 1.2))
    labels = []
    for y, (_, r) in enumerate(rows.iloc[::-1].iterrows()):
        head = r["comparison"] == "merge_vs_mix"
        ax.errorbar(
            r["difference"],
            y,
            xerr=[[r["difference"] - r["ci_low"]], [r["ci_high"] - r["difference"]]],
            fmt="o",
            color="#d62728" if head else "#555555",
            lw=2 if head else 1,
            capsize=2,
        )
        arm = Arm.parse(r["arm_a"])
        method = arm.family if arm.kind == "merge" else arm.path
        labels.append(f"{r['combo']}: {'chosen ' if head else ''}{method} - mix")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("balance difference, merge - mixture (test items, paired 95% interval)")
    _save(fig, out)


def profile(table: pd.DataFrame, out: Path) -> None:
    combos = sorted(c for c in table["combo"].unique() if "+" in c)
    fig, axes = plt.subplots(1, max(len(combos), 1), figsize=(4.2 * max(len(combos), 1), 3.6), squeeze=False)
    for ax, combo in zip(axes[0], combos):
        sub = table[(table["combo"] == combo) | (table["kind"].isin(["base", "expert"]))]
        for _, row in sub.iterrows():
            ax.plot(
                range(3),
                [row[d] for d in DIMS],
                marker="o",
                alpha=0.8,
                color=COLORS[row["kind"]],
                lw=2 if row["kind"] in ("merge", "mixture") else 1,
            )
        ax.set_xticks(range(3), [d[:5] for d in DIMS])
        ax.set_ylim(0, 1)
        ax.set_title(combo, fontsize=9)
    handles = [plt.Line2D([], [], color=c, marker="o", label=k) for k, c in COLORS.items()]
    axes[0][0].legend(handles=handles, fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("score")
    _save(fig, out)


def pareto(table: pd.DataFrame, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 4.2))
    pts = table.dropna(subset=["helpfulness", "harmlessness"])
    for kind, sub in pts.groupby("kind"):
        ax.scatter(sub["helpfulness"], sub["harmlessness"], label=kind, color=COLORS[kind], alpha=0.8)
    order = pts.sort_values("helpfulness", ascending=False)
    front, best = [], -np.inf
    for _, row in order.iterrows():
        if row["harmlessness"] > best:
            front.append(row)
            best = row["harmlessness"]
    if front:
        f = pd.DataFrame(front).sort_values("helpfulness")
        ax.step(f["helpfulness"], f["harmlessness"], where="post", color="black", lw=1, label="Pareto front")
        for _, row in f.iterrows():
            ax.annotate(row["arm"], (row["helpfulness"], row["harmlessness"]), fontsize=6)
    ax.set_xlabel("helpfulness")
    ax.set_ylabel("harmlessness")
    ax.legend(fontsize=7)
    _save(fig, out)


def conflict_heatmap(layers: pd.DataFrame, out: Path) -> None:
    """Rows: task pairs; columns: layers; colour: sign-conflict rate."""
    layers = layers[layers["layer"].str.startswith("layer.")]
    layers = layers.assign(pair=layers["task_a"] + " / " + layers["task_b"])
    pivot = layers.pivot_table(index="pair", columns="layer", values="sign_conflict_rate")
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * pivot.shape[1] + 2), 0.5 * pivot.shape[0] + 1.5))
    im = ax.imshow(pivot.values, aspect="auto", cmap="magma", vmin=0, vmax=max(0.5, float(np.nanmax(pivot.values))))
    ax.set_yticks(range(pivot.shape[0]), pivot.index, fontsize=7)
    ax.set_xticks(range(pivot.shape[1]), [c.split(".")[1] for c in pivot.columns], fontsize=6)
    ax.set_xlabel("layer")
    fig.colorbar(im, ax=ax, label="sign-conflict rate")
    _save(fig, out)


def resm_ranks(diagnostics: dict[str, pd.DataFrame], out: Path) -> None:
    """Total rank RESM kept per layer (summed over the layer's matrices and tasks), one line per merge."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, diag in diagnostics.items():
        d = diag.dropna(subset=["rank_per_task"])
        if d.empty:
            continue
        layer = d["tensor"].str.extract(r"layers\.(\d+)\.")[0].astype(float)
        total = d["rank_per_task"].astype(str).map(lambda s: sum(int(x) for x in s.split(";")))
        per_layer = pd.DataFrame({"layer": layer, "rank": total}).dropna().groupby("layer")["rank"].sum()
        ax.plot(per_layer.index, per_layer.values, marker=".", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("kept rank (all matrices, all tasks)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    _save(fig, out)
