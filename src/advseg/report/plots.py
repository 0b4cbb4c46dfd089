"""Figures for the report: size vs attack success, score vs eps, loss per step, transfer, examples.

Plots run headless in the workflow, hence the Agg backend; each figure is closed after
saving so a long report job does not accumulate open figures.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from scipy import stats  # noqa: E402

from advseg.jobs import atomic_path  # noqa: E402
from advseg.records import read_example  # noqa: E402
from advseg.report.markdown import format_params  # noqa: E402
from advseg.report.runs import WORST, AttackRun  # noqa: E402
from advseg.report.units import metric_columns  # noqa: E402

DPI = 120
LINESTYLES = ("-", "--", ":", "-.")
# Class c is drawn in colour channel c (red, green, blue); further classes get other hues.
CLASS_COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], float)
METRIC_LABELS = {"dice": "Dice (per class over slices with the class)", "dice_study": "study Dice (per slice)"}


def plot_size(points: pd.DataFrame, table: pd.DataFrame, metric: str, eps: float, path: Path) -> None:
    save(size_figure(points, table, metric, eps), path, tight=False)


def size_figure(points: pd.DataFrame, table: pd.DataFrame, metric: str, eps: float) -> plt.Figure:
    """Attack success at ``eps`` against log model size: one panel per attack x loss (x variant).

    Each model is a numbered point (the key below names it once), coloured by its clean score;
    models left out for a low clean score are hollow. The line is the least-squares fit over
    the kept models with its 95% confidence band; the title gives Spearman rho with its
    interval, the adjusted p, n and the smallest |rho| detectable at this n.
    """
    if table.empty:
        return empty_figure("no model was attacked at the correlation eps")
    numbers = {model: i + 1 for i, model in enumerate(points.sort_values(["params", "model"])["model"].unique())}
    several_variants = table["variant"].nunique() > 1
    columns = min(3, len(table))
    rows = int(np.ceil(len(table) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 4.0 * rows + 1.2 + 0.18 * len(numbers) / 3),
                             squeeze=False, sharey=True)
    kept_clean = points.loc[points["kept"], "clean"] if points["kept"].any() else points["clean"]
    norm = plt.Normalize(float(kept_clean.min()), float(max(kept_clean.max(), kept_clean.min() + 1e-9)))
    shown = None
    for ax, row in zip(axes.ravel(), table.itertuples()):
        panel = points[(points["attack"] == row.attack) & (points["attack_loss"] == row.attack_loss)
                       & (points["variant"] == row.variant)]
        kept, left_out = panel[panel["kept"]], panel[~panel["kept"]]
        shown = ax.scatter(kept["params"] / 1e6, kept["success"], c=kept["clean"], cmap="viridis", norm=norm, s=40,
                           edgecolors="black", linewidths=0.4, zorder=3)
        ax.scatter(left_out["params"] / 1e6, left_out["success"], facecolors="none", edgecolors="grey", s=40,
                   zorder=3, label="left out (clean score below the floor)" if len(left_out) else None)
        for _, point in panel.iterrows():
            ax.annotate(str(numbers[point["model"]]), (point["params"] / 1e6, point["success"]),
                        textcoords="offset points", xytext=(3, 3), fontsize=7)
        _fit_band(ax, kept["log10_params"].to_numpy(float), kept["success"].to_numpy(float))
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("trainable parameters (millions, log scale)", fontsize=8)
        label = f"{row.attack}/{row.attack_loss}" + (f" ({row.variant})" if several_variants else "")
        ax.set_title(f"{label}\nρ = {_interval(row.spearman, row.spearman_ci_low, row.spearman_ci_high)}, "
                     f"p adj. = {_p(row.spearman_p_adjusted)}, n = {int(row.n_models)}\n"
                     f"detectable |ρ| (80% power) = {_p(row.detectable_rho)}", fontsize=8)
        if len(left_out):
            ax.legend(fontsize=6, loc="best")
    for ax in axes.ravel()[len(table):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"attack success (clean − adv) / clean, {metric}", fontsize=8)
    if shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label=f"clean score ({metric})")
    key = "   ".join(f"{n} {model} ({format_params(points.loc[points['model'] == model, 'params'].iloc[0])})"
                     for model, n in numbers.items())
    fig.text(0.02, 0.01, "\n".join(textwrap.wrap(key, 170)), fontsize=7, va="bottom")
    fig.suptitle(f"Attack success at eps = {eps:g} vs model size (one point per model, mean over replicates; "
                 "line: least-squares fit with 95% band)", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.86, top=1 - 0.9 / fig.get_figheight(),
                        bottom=(0.9 + 0.14 * len(numbers) / 3) / fig.get_figheight(), hspace=0.55, wspace=0.12)
    return fig


def _fit_band(ax, x: np.ndarray, y: np.ndarray) -> None:
    """Least-squares line of y on x (log10 params) with its 95% confidence band, drawn in params."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0:
        return
    slope, intercept = np.polyfit(x, y, 1)
    grid = np.linspace(x.min(), x.max(), 50)
    fitted = intercept + slope * grid
    residual = y - (intercept + slope * x)
    spread = np.sqrt(residual @ residual / (x.size - 2))
    half = stats.t.ppf(0.975, x.size - 2) * spread * np.sqrt(1 / x.size + (grid - x.mean()) ** 2
                                                              / ((x - x.mean()) ** 2).sum())
    ax.plot(10 ** grid / 1e6, fitted, color="black", linewidth=1)
    ax.fill_between(10 ** grid / 1e6, fitted - half, fitted + half, color="grey", alpha=0.25, linewidth=0)


def _interval(value, low, high) -> str:
    if pd.isna(value):
        return "n/a"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]" if not pd.isna(low) else f"{value:.2f}"


def _p(value) -> str:
    return "n/a" if pd.isna(value) else f"{value:.2g}"


def empty_figure(text: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()
    return fig


def plot_dice_vs_eps(replicates: pd.DataFrame, metric: str, path: Path) -> None:
    save(dice_vs_eps_figure(replicates, metric), path)


def dice_vs_eps_figure(replicates: pd.DataFrame, metric: str) -> plt.Figure:
    """Attacked score (mean over replicates, 95% CI band) as eps grows; eps 0 is the clean score.

    One panel per model; one line per attack x loss (x variant when several ran); the
    per-slice worst case over every attack is the thick black line.
    """
    clean, adv, _ = metric_columns(metric)
    models = replicates.sort_values(["params", "model"])["model"].unique()
    columns = min(3, len(models))
    rows = int(np.ceil(len(models) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4 * rows), squeeze=False, sharey=True)
    several_variants = replicates["variant"].nunique() > 1
    colours = plt.get_cmap("tab10")
    series = (replicates[replicates["attack"] != WORST][["attack", "attack_loss", "variant"]]
              .drop_duplicates().itertuples(index=False))
    styles = {tuple(s): i for i, s in enumerate(series)}
    for ax, model in zip(axes.ravel(), models):
        runs = replicates[replicates["model"] == model]
        for (attack, loss, variant), curve in runs.groupby(["attack", "attack_loss", "variant"], sort=False):
            curve = curve.sort_values("eps")
            eps = np.concatenate([[0.0], curve["eps"].to_numpy(float)])
            score = np.concatenate([[curve[f"{clean}_mean"].iloc[0]], curve[f"{adv}_mean"].to_numpy(float)])
            low = np.concatenate([[score[0]], curve[f"{adv}_ci_low"].to_numpy(float)])
            high = np.concatenate([[score[0]], curve[f"{adv}_ci_high"].to_numpy(float)])
            label = f"{attack}/{loss}" + (f" ({variant})" if several_variants else "")
            if attack == WORST:
                colour, style, width, label = "black", "-", 2.5, "worst case" + (f" ({variant})" if several_variants
                                                                               else "")
            else:
                i = styles[(attack, loss, variant)]
                colour, style, width = colours(i % 10), LINESTYLES[(i // 10) % len(LINESTYLES)], 1.3
            ax.plot(eps, score, color=colour, linestyle=style, linewidth=width, marker="o", markersize=3,
                    label=label)
            ax.fill_between(eps, low, high, color=colour, alpha=0.15, linewidth=0)
        ax.set_title(f"{model} ({format_params(runs['params'].iloc[0])})", fontsize=9)
        ax.set_xlabel("eps (L∞; 0 = clean)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in axes.ravel()[len(models):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"attacked {METRIC_LABELS[metric]}", fontsize=8)
    plotted = replicates[[f"{clean}_mean", f"{adv}_mean", f"{adv}_ci_high"]].to_numpy(float)
    axes[0, 0].set_ylim(0, min(1.0, float(np.nanmax(plotted, initial=0.0))) * 1.05 + 0.01)  # every clean point shows
    fig.suptitle("Score under attack vs eps (mean over replicates; band: 95% hierarchical bootstrap over units)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_loss_curve(runs: list[AttackRun], path: Path) -> None:
    save(loss_curve_figure(runs), path)


def loss_curve_figure(runs: list[AttackRun]) -> plt.Figure:
    """Mean attack loss per step of the iterative attacks on one model (the smallest, first replicate).

    One panel per attack x loss x variant, one line per eps: a loss that does not rise is a
    sign the attack is not working.
    """
    iterative = [r for r in runs if len(r.loss_history) > 0]
    if not iterative:
        return empty_figure("no iterative attack ran: no per-step loss to show")
    first = min(iterative, key=lambda r: (r.info["params"], r.info["model"], r.info["seed"], r.info["fold"]))
    chosen = [r for r in iterative if (r.info["model"], r.info["seed"], r.info["fold"])
              == (first.info["model"], first.info["seed"], first.info["fold"])]
    panels: dict[tuple, list[AttackRun]] = {}
    for run in sorted(chosen, key=lambda r: r.info["eps"]):
        panels.setdefault((run.info["attack"], run.info["attack_loss"], run.info["variant"]), []).append(run)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    colours = plt.get_cmap("viridis")
    for ax, ((attack, loss, variant), members) in zip(axes[0], sorted(panels.items())):
        for i, run in enumerate(members):
            steps = np.arange(1, len(run.loss_history) + 1)
            ax.plot(steps, run.loss_history, marker="o", markersize=3, label=f"eps {run.info['eps']:g}",
                    color=colours(i / max(1, len(members) - 1)))
        ax.set_title(f"{attack}/{loss} ({variant})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("mean attack loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Attack loss per step: {first.info['model']} (seed {first.info['seed']}, fold {first.info['fold']})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_transfer(transfer: pd.DataFrame, metric: str, path: Path) -> None:
    save(transfer_figure(transfer, metric), path)


def transfer_matrices(transfer: pd.DataFrame, metric: str) -> dict[tuple, pd.DataFrame]:
    """Per attack x loss x variant: source x target attacked score, mean over replicates."""
    _, adv, _ = metric_columns(metric)
    matrices = {}
    for key, group in transfer.groupby(["attack", "attack_loss", "variant"], sort=True):
        matrix = group.pivot_table(index="source_model", columns="target_model", values=adv, aggfunc="mean")
        models = sorted(set(matrix.index) | set(matrix.columns))
        matrices[key] = matrix.reindex(index=models, columns=models)
    return matrices


def transfer_figure(transfer: pd.DataFrame, metric: str) -> plt.Figure:
    """Heat-maps of attacked score, rows = source of the perturbation, columns = attacked model."""
    matrices = transfer_matrices(transfer, metric)
    if not matrices:
        return empty_figure("no transfer results")
    size = max(len(m.columns) for m in matrices.values())
    fig, axes = plt.subplots(1, len(matrices), figsize=((1.2 * size + 2.5) * len(matrices), 1.0 * size + 2.5),
                             squeeze=False)
    eps = float(transfer["eps"].iloc[0])
    for ax, ((attack, loss, variant), matrix) in zip(axes[0], matrices.items()):
        shown = ax.imshow(matrix.to_numpy(float), cmap="viridis", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(matrix.to_numpy(float)):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.5 else "black")
        ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=7)
        ax.set_xlabel("attacked model (target)")
        ax.set_ylabel("perturbation from (source)")
        ax.set_title(f"{attack}/{loss} ({variant}), eps {eps:g}", fontsize=9)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03, label=f"attacked {metric}")
    fig.suptitle("Transfer: attacked score of each target under each source's perturbation "
                 "(diagonal: white-box)", fontsize=10)
    fig.tight_layout()
    return fig


def load_examples(examples: dict[str, Path]) -> dict[str, dict]:
    """The example .npz files of 'advseg attack' (label -> file), read before any output is written."""
    if not examples:
        raise ValueError("an example grid needs at least one example .npz")
    return {label: read_example(npz) for label, npz in examples.items()}


def plot_example_grid(loaded: dict[str, dict], path: Path) -> None:
    """One slice under each attack (labelled method/attack loss; :func:`load_examples`): image, truth,
    clean and adversarial masks, perturbation."""
    fig, axes = plt.subplots(len(loaded), 5, figsize=(13, 2.9 * len(loaded)), squeeze=False)
    for row, (attack, ex) in zip(axes, loaded.items()):
        eps = float(ex["eps"]) or 1e-12
        delta = ex["adv_image"] - ex["image"]
        row[0].imshow(ex["image"], cmap="gray", vmin=0, vmax=1)
        row[1].imshow(mask_overlay(ex["truth"]))
        row[2].imshow(mask_overlay(ex["clean_pred"]))
        shown = row[3].imshow(delta, cmap="RdBu_r", vmin=-eps, vmax=eps)
        fig.colorbar(shown, ax=row[3], fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
        row[4].imshow(mask_overlay(ex["adv_pred"]))
        titles = ("image", "ground truth", "clean prediction",
                  f"perturbation (scaled to ±eps={float(ex['eps']):g})", "adversarial prediction")
        for ax, title in zip(row, titles):
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{ex['model']}\n{attack}", fontsize=9)
    names = next(iter(loaded.values()))["class_names"]
    handles = [Patch(color=CLASS_COLOURS[c % len(CLASS_COLOURS)], label=name) for c, name in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("One slice under each attack", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    save(fig, path, tight=False)


def mask_overlay(masks: np.ndarray) -> np.ndarray:
    """(C, H, W) binary masks as one (H, W, 3) RGB image; class c lights colour channel c."""
    masks = np.asarray(masks, dtype=float)
    colours = CLASS_COLOURS[np.arange(masks.shape[0]) % len(CLASS_COLOURS)]
    return np.clip(np.einsum("chw,ck->hwk", masks, colours), 0.0, 1.0)


def save(fig: plt.Figure, path: Path, tight: bool = True) -> None:
    """Write the figure whole or not at all, and close it. ``tight=False`` for a figure laid out
    already: a tight bounding box draws the figure twice."""
    try:
        with atomic_path(path) as temporary:
            fig.savefig(temporary, dpi=DPI, bbox_inches="tight" if tight else None,
                        format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
