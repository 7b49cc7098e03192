"""The report's figures: the paired differences (balance and each dimension), the 3H profile per combo, every
pair of dimensions with intervals and the front, the task-vector conflict heatmap per layer, and RESM's kept
rank per layer. Each is saved with a canvas grown to its labels."""

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
    # bbox_inches="tight" grows the canvas to every label, tick and title: nothing is clipped
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)


SHORT_DIMS = {"helpfulness": "help", "honesty": "honest", "harmlessness": "harmless"}


def short_combo(combo: str) -> str:
    """harmlessness+helpfulness as harmless+help: plot labels that fit beside their axes."""
    return "+".join(SHORT_DIMS.get(d, d) for d in combo.split("+"))


def short_name(arm: str) -> str:
    """An arm as a plot label: `resm harmless+help` for merge/resm/harmlessness+helpfulness/..., `mix uniform ...`."""
    parsed = Arm.parse(arm)
    combo = short_combo(parsed.combo) if parsed.combo and "+" in parsed.combo else ""
    if parsed.kind == "merge":
        return f"{parsed.family} {combo}".strip()
    if parsed.kind == "mixture":
        return f"mix {parsed.family} {combo}".strip()
    return arm


def _forest_panel(ax, rows: pd.DataFrame, title: str, label) -> None:
    labels = []
    for y, (_, r) in enumerate(rows.iloc[::-1].iterrows()):
        head = r["comparison"] == "merge_vs_mix"
        color = "#d62728" if head else "#555555"
        ax.hlines(y, r["ci_low"], r["ci_high"], color=color, lw=2 if head else 1)  # the interval as it is
        ax.plot(r["difference"], y, "o", color=color)
        labels.append(label(r))
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("merge - mixture\n(test items, paired 95% interval)", fontsize=8)


def forest(comparisons: pd.DataFrame, out: Path) -> None:
    """Paired differences with their 95% intervals. Left, balance: each combo's chosen merge vs its chosen
    mixture (red) and every merge method vs that mixture; right, the chosen pair on each dimension."""
    mvm = comparisons["comparison"].isin(["merge_vs_mix", "method_vs_mix"])
    balance = comparisons[mvm & (comparisons["metric"] == "balance")]
    dims = comparisons[(comparisons["comparison"] == "merge_vs_mix") & comparisons["metric"].isin(DIMS)]
    height = 0.3 * max(len(balance), len(dims), 3) + 1.4
    fig, axes = plt.subplots(1, 2, figsize=(11, height), squeeze=False, layout="constrained")

    def method(r) -> str:
        arm = Arm.parse(r["arm_a"])
        chosen = "chosen " if r["comparison"] == "merge_vs_mix" else ""
        return f"{short_combo(r['combo'])}: {chosen}{arm.family if arm.kind == 'merge' else arm.path}"

    _forest_panel(axes[0][0], balance, "balance", method)
    _forest_panel(
        axes[0][1],
        dims,
        "each dimension (chosen merge vs chosen mixture)",
        lambda r: f"{short_combo(r['combo'])}: {r['metric']}",
    )
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


def _front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The non-dominated points (higher is better on both), by x."""
    front, best = [], -np.inf
    for _, row in points.sort_values([x, y], ascending=False).iterrows():
        if row[y] > best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front).sort_values(x) if front else points.iloc[:0]


def pareto(table: pd.DataFrame, out: Path) -> None:
    """Every arm on each pair of dimensions, with its 95% interval on both, and the non-dominated front
    labelled; one panel per pair the grid scored (first run of each arm)."""
    arms = table.drop_duplicates("arm")
    pairs = [(a, b) for i, a in enumerate(DIMS) for b in DIMS[i + 1 :] if arms[[a, b]].notna().all(axis=1).any()]
    fig, axes = plt.subplots(
        1, max(len(pairs), 1), figsize=(5.2 * max(len(pairs), 1), 4.8), squeeze=False, layout="constrained"
    )
    for ax, (x, y) in zip(axes[0], pairs):
        pts = arms.dropna(subset=[x, y])
        for kind, sub in pts.groupby("kind"):
            xs, ys = sub[x].to_numpy(float), sub[y].to_numpy(float)
            # intervals drawn as lines, not error bars: a percentile bootstrap interval of a nonlinear score
            # (balance, a stratified score) need not contain its point estimate, and is shown as it is
            ax.hlines(ys, sub[f"{x}_ci_low"], sub[f"{x}_ci_high"], color=COLORS[kind], alpha=0.6, lw=0.7)
            ax.vlines(xs, sub[f"{y}_ci_low"], sub[f"{y}_ci_high"], color=COLORS[kind], alpha=0.6, lw=0.7)
            ax.scatter(xs, ys, color=COLORS[kind], alpha=0.8, label=kind, zorder=3)
        front = _front(pts, x, y)
        if not front.empty:
            ax.step(front[x], front[y], where="post", color="black", lw=1, label="front (point scores)")
            for k, (_, row) in enumerate(front.iterrows()):  # labels alternate above and below their point
                ax.annotate(
                    short_name(row["arm"]),
                    (row[x], row[y]),
                    fontsize=7,
                    xytext=(3, 3 if k % 2 == 0 else -10),
                    textcoords="offset points",
                )
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:  # beside the panels, never over a point
        fig.legend(handles, labels, fontsize=8, loc="outside right upper")
    _save(fig, out)


def fronts(points: pd.DataFrame, anchors: pd.DataFrame, volumes: pd.DataFrame, out: Path) -> None:
    """One combo's frontier on each pair of its dimensions: every point's test scores with their 95%
    intervals, each family's validation front joined in lattice order, the base and the experts; the
    hypervolume comparison in the title."""
    dims = [c[len("w_") :] for c in points.columns if c.startswith("w_")]
    dims = [d for d in dims if points[f"w_{d}"].notna().any()]
    pairs = [(a, b) for i, a in enumerate(dims) for b in dims[i + 1 :]]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.0 * len(pairs) + 3.0, 5.4), squeeze=False, layout="constrained")
    tracers = list(dict.fromkeys(points["tracer"]))
    palette = plt.get_cmap("tab10")
    color = {t: COLORS["mixture"] if t == "mixture" else palette(3 + k) for k, t in enumerate(tracers)}
    for ax, (x, y) in zip(axes[0], pairs):
        for tracer in tracers:
            sub = points[points["tracer"] == tracer]
            xs, ys = sub[f"test_{x}"].to_numpy(float), sub[f"test_{y}"].to_numpy(float)
            ax.hlines(ys, sub[f"test_{x}_ci_low"], sub[f"test_{x}_ci_high"], color=color[tracer], alpha=0.4, lw=0.7)
            ax.vlines(xs, sub[f"test_{y}_ci_low"], sub[f"test_{y}_ci_high"], color=color[tracer], alpha=0.4, lw=0.7)
            ax.scatter(xs, ys, color=color[tracer], alpha=0.85, zorder=3, label=f"{tracer} (test)")
            front = sub[sub["val_front"]].sort_values(f"w_{x}")  # the validation front, in weight order
            ax.scatter(
                front[f"test_{x}"],
                front[f"test_{y}"],
                s=140,
                facecolors="none",
                edgecolors=color[tracer],
                zorder=3,
                label=f"{tracer}: on its validation front",
            )
            ax.plot(
                front[f"test_{x}"],
                front[f"test_{y}"],
                color=color[tracer],
                lw=1.4,
                label=f"{tracer}: its validation front, in weight order",
            )
            for _, row in sub.iterrows():
                ax.annotate(
                    f"{row[f'w_{x}']:g}",
                    (row[f"test_{x}"], row[f"test_{y}"]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        for _, row in anchors.iterrows():
            marker = "s" if row["kind"] == "base" else "^"
            ax.scatter(row[f"test_{x}"], row[f"test_{y}"], marker=marker, color=COLORS[row["kind"]], s=50, zorder=4)
            ax.annotate(
                row["arm"],
                (row[f"test_{x}"], row[f"test_{y}"]),
                fontsize=7,
                xytext=(4, -10),
                textcoords="offset points",
            )
        ax.set_xlabel(f"{x} (test)")
        ax.set_ylabel(f"{y} (test)")
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_box_aspect(1)
    reference = volumes["reference"].iloc[0] if len(volumes) else "-"
    lines = [f"hypervolume above the {reference}, merges minus mixtures (test items, paired 95% interval):"]
    lines += [
        f"  {r.merges}: {r.merge_hv:.3f} - {r.mixture_hv:.3f} = {r.difference:+.3f} "
        f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]: {r.verdict}"
        for r in volumes.itertuples()
    ]
    lines.append("labels: the point's weight on the x-axis dimension; lines: 95% intervals")
    fig.suptitle(points["combo"].iloc[0], fontsize=10, x=0.02, ha="left")
    fig.text(0.0, -0.02, "\n".join(lines), fontsize=7, va="top", family="monospace")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside right upper")
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
