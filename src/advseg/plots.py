"""Figures for the report: size vs attack success, score vs eps, loss per step, transfer, examples.

Plots run headless in the workflow, hence the Agg backend; each figure is closed after
saving so a long report job does not accumulate open figures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from advseg.jobs import read_npz  # noqa: E402
from advseg.summary import WORST, AttackRun, atomic_output, format_params, metric_columns  # noqa: E402

DPI = 120
EXAMPLE_KEYS = ("image", "truth", "clean_pred", "adv_image", "adv_pred", "class_names", "eps", "model")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")
# Class c is drawn in colour channel c (red, green, blue); further classes get other hues.
CLASS_COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], float)
METRIC_LABELS = {"dice": "Dice (per class over slices with the class)", "dice_study": "study Dice (per slice)"}


def plot_param_correlation(replicates: pd.DataFrame, correlations: pd.DataFrame, metric: str, eps: float,
                           path: Path) -> None:
    _save(correlation_figure(replicates, correlations, metric, eps), path)


def correlation_figure(replicates: pd.DataFrame, correlations: pd.DataFrame, metric: str, eps: float) -> plt.Figure:
    """Attack success at ``eps`` against model size (left) and clean score (right), one point per model.

    Each series is one attack x loss x variant; its legend gives Pearson r and Spearman rho
    with their bootstrap intervals over models.
    """
    clean, _, diff = metric_columns(metric)
    at_eps = replicates[np.isclose(replicates["eps"].astype(float), float(eps), rtol=1e-9, atol=1e-12)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, x_name, x_column in ((axes[0], "params", "params"), (axes[1], "clean", f"{clean}_mean")):
        stats = correlations[correlations["x"] == x_name]
        for i, row in enumerate(stats.itertuples()):
            group = at_eps[(at_eps["attack"] == row.attack) & (at_eps["attack_loss"] == row.attack_loss)
                           & (at_eps["variant"] == row.variant)]
            x = group[x_column].to_numpy(float) / (1e6 if x_name == "params" else 1.0)
            y = group[f"{diff}_mean"].to_numpy(float)
            points = ax.scatter(x, y, marker=MARKERS[i % len(MARKERS)], s=45, label=correlation_label(row))
            for xi, yi, name in zip(x, y, group["model"]):
                ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=points.get_facecolor()[0])
        ax.margins(x=0.12, y=0.1)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylabel(f"attack success: (clean − adv) / clean, {metric}")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    axes[0].set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes[0].xaxis.set_major_formatter(plain)
    axes[0].xaxis.set_minor_formatter(plain)
    axes[0].set_xlabel("trainable parameters (millions, log scale)")
    axes[1].set_xlabel(f"clean score ({metric})")
    fig.suptitle(f"Attack success at eps = {eps:g} vs model size and clean score (one point per model, "
                 "mean over replicates; 95% bootstrap CIs over models)", fontsize=10)
    return fig


def correlation_label(row) -> str:
    """'pgd/bce (standard): r=0.12 [-0.50, 0.70], ρ=... n=6' for one row of the correlation table."""
    def interval(value, low, high):
        return "n/a" if pd.isna(value) else f"{value:.2f} [{low:.2f}, {high:.2f}]"

    return (f"{row.attack}/{row.attack_loss} ({row.variant}): "
            f"r={interval(row.pearson_r, row.pearson_ci_low, row.pearson_ci_high)}, "
            f"ρ={interval(row.spearman_rho, row.spearman_ci_low, row.spearman_ci_high)}, n={int(row.n_models)}")


def plot_dice_vs_eps(replicates: pd.DataFrame, metric: str, path: Path) -> None:
    _save(dice_vs_eps_figure(replicates, metric), path)


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
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in axes.ravel()[len(models):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"attacked {METRIC_LABELS[metric]}", fontsize=8)
    fig.suptitle("Score under attack vs eps (mean over replicates, 95% bootstrap CI over slices)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_loss_curve(runs: list[AttackRun], path: Path) -> None:
    _save(loss_curve_figure(runs), path)


def loss_curve_figure(runs: list[AttackRun]) -> plt.Figure:
    """Mean attack loss per step of the iterative attacks on one model (the smallest, first replicate).

    One panel per attack x loss x variant, one line per eps: a loss that does not rise is a
    sign the attack is not working.
    """
    iterative = [r for r in runs if len(r.loss_history) > 0]
    if not iterative:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.text(0.5, 0.5, "no iterative attack ran: no per-step loss to show", ha="center", va="center")
        ax.set_axis_off()
        return fig
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
    _save(transfer_figure(transfer, metric), path)


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
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.text(0.5, 0.5, "no transfer results", ha="center", va="center")
        ax.set_axis_off()
        return fig
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
    return {label: _load_example(npz) for label, npz in examples.items()}


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
    _save(fig, path, tight=False)


def mask_overlay(masks: np.ndarray) -> np.ndarray:
    """(C, H, W) binary masks as one (H, W, 3) RGB image; class c lights colour channel c."""
    masks = np.asarray(masks, dtype=float)
    colours = CLASS_COLOURS[np.arange(masks.shape[0]) % len(CLASS_COLOURS)]
    return np.clip(np.einsum("chw,ck->hwk", masks, colours), 0.0, 1.0)


def _load_example(path: Path) -> dict:
    data = read_npz(path, EXAMPLE_KEYS, "'advseg attack'")
    data["class_names"] = [str(name) for name in data["class_names"]]
    data["model"] = str(data["model"])
    return data


def _save(fig: plt.Figure, path: Path, tight: bool = True) -> None:
    """Write the figure whole or not at all, and close it. ``tight=False`` for a figure laid out
    already: a tight bounding box draws the figure twice."""
    try:
        with atomic_output(Path(path)) as temporary:
            fig.savefig(temporary, dpi=DPI, bbox_inches="tight" if tight else None,
                        format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
