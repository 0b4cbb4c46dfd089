"""Figures of defenses: the clean-robust trade-off, and the certified Dice of randomized smoothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from advseg.report.plots import empty_figure, plt, save


def plot_tradeoff(table: pd.DataFrame, metric: str, eps: float, path: Path) -> None:
    save(tradeoff_figure(table, metric, eps), path)


def tradeoff_figure(table: pd.DataFrame, metric: str, eps: float) -> plt.Figure:
    """Clean score against worst-case attacked score at ``eps``, one point per model, coloured by
    defense; an arrow leads from each undefended twin to its defended model (up: robustness
    bought; left: clean score paid)."""
    rows = table[np.isclose(table["eps"].astype(float), float(eps), rtol=1e-9, atol=1e-12)] if not table.empty else table
    if rows.empty or (rows["defense"] == "none").all():
        return empty_figure("no defended model ran: nothing to trade off")
    fig, ax = plt.subplots(figsize=(7.5, 6))
    colours = plt.get_cmap("tab10")
    defenses = sorted(rows["defense"].unique(), key=lambda d: (d != "none", d))
    for i, defense in enumerate(defenses):
        points = rows[rows["defense"] == defense]
        ax.scatter(points["clean"], points["robust"], s=45, color="black" if defense == "none" else colours(i % 10),
                   label=defense, zorder=3)
    twins = rows[rows["defense"] == "none"].set_index("model")
    for row in rows[(rows["defense"] != "none") & (rows["twin"] != "none")].itertuples():
        if row.twin in twins.index:
            start = twins.loc[row.twin]
            ax.annotate("", (row.clean, row.robust), (start["clean"], start["robust"]),
                        arrowprops={"arrowstyle": "->", "color": "grey", "linewidth": 0.8})
    for row in rows.itertuples():
        ax.annotate(row.model, (row.clean, row.robust), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"clean score ({metric})")
    ax.set_ylabel(f"worst-case attacked score ({metric}), eps = {eps:g}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="defense")
    ax.set_title("What each defense buys under attack and costs on clean input", fontsize=10)
    fig.tight_layout()
    return fig


def plot_certified(table: pd.DataFrame, path: Path) -> None:
    save(certified_figure(table), path)


def certified_figure(table: pd.DataFrame) -> plt.Figure:
    """Certified Dice against the L2 radius, one line per smoothed model with its interval band;
    the share of abstained pixels dashed, on the right axis."""
    if table.empty:
        return empty_figure("no smoothed model was certified")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    right = ax.twinx()
    colours = plt.get_cmap("tab10")
    for i, (model, curve) in enumerate(table.groupby("model", sort=True)):
        curve = curve.sort_values("radius")
        ax.plot(curve["radius"], curve["certified_dice"], marker="o", markersize=3, color=colours(i % 10), label=model)
        ax.fill_between(curve["radius"], curve["ci_low"], curve["ci_high"], color=colours(i % 10), alpha=0.15,
                        linewidth=0)
        right.plot(curve["radius"], curve["abstain_rate"], linestyle="--", color=colours(i % 10), linewidth=0.8)
    ax.set_xlabel("certified L2 radius (image intensity units)")
    ax.set_ylabel("certified Dice")
    right.set_ylabel("abstained pixels (dashed)")
    ax.set_ylim(0, 1.02)
    right.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Randomized smoothing: Dice no perturbation within the radius can lower", fontsize=10)
    fig.tight_layout()
    return fig
