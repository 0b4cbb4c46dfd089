"""Figures for the report: size vs attack success, Dice vs eps, and example slices.

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

from advseg.summary import correlation  # noqa: E402

DPI = 120
EXAMPLE_KEYS = ("image", "truth", "clean_pred", "adv_image", "adv_pred", "class_names", "eps", "model")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")
# Class c is drawn in colour channel c (red, green, blue); further classes get other hues.
CLASS_COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], float)


def plot_param_correlation(df: pd.DataFrame, eps: float, path: Path) -> None:
    """Attack success at ``eps`` against model size, one marker style per attack loss."""
    stats = correlation(df, eps).set_index("attack_loss")
    at_eps = df[np.isclose(df["eps"].astype(float), float(eps), rtol=1e-9, atol=1e-12)]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, (loss, group) in enumerate(at_eps.groupby("attack_loss", sort=True)):
        r = stats.loc[loss]
        label = (f"{loss}: Pearson r={r.pearson_r:.2f} (p={r.pearson_p:.2g}), "
                 f"Spearman ρ={r.spearman_rho:.2f} (p={r.spearman_p:.2g}), n={int(r.n_models)}")
        x = group["params"].to_numpy(float) / 1e6
        points = ax.scatter(x, group["diff"], marker=MARKERS[i % len(MARKERS)], s=45, label=label)
        for xi, yi, name in zip(x, group["diff"], group["model"]):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=points.get_facecolor()[0])
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.1)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("trainable parameters (millions, log scale)")
    ax.set_ylabel("attack success: (clean − adv) / clean Dice")
    ax.set_title(f"Model size vs FGSM attack success at eps = {eps:g}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    _save(fig, path)


def plot_dice_vs_eps(df: pd.DataFrame, path: Path) -> None:
    """Adversarial Dice as eps grows; eps = 0 is the clean Dice. Colour = model, line = loss."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colours = plt.get_cmap("tab10")
    models = df.sort_values(["params", "model"])["model"].unique()
    losses = sorted(df["attack_loss"].unique())
    for m, model in enumerate(models):
        for k, loss in enumerate(losses):
            runs = df[(df["model"] == model) & (df["attack_loss"] == loss)].sort_values("eps")
            if runs.empty:
                continue
            eps = np.concatenate([[0.0], runs["eps"].to_numpy(float)])
            dice = np.concatenate([[runs["clean_dice"].iloc[0]], runs["adv_dice"].to_numpy(float)])
            ax.plot(eps, dice, color=colours(m % 10), linestyle=LINESTYLES[k % len(LINESTYLES)],
                    marker="o", markersize=3, label=f"{model} ({loss})")
    ax.set_xlabel("eps (L∞ perturbation size; 0 = clean)")
    ax.set_ylabel("mean Dice")
    ax.set_ylim(bottom=0)
    ax.set_title("Dice under FGSM attack vs eps (colour: model, line style: attack loss)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(models) * len(losses) > 8 else 1, loc="best")
    _save(fig, path)


def plot_example_grid(examples: dict[str, Path], path: Path) -> None:
    """One attacked slice per attack loss: image, truth, clean and adversarial masks, perturbation."""
    if not examples:
        raise ValueError("plot_example_grid needs at least one example .npz")
    loaded = {loss: _load_example(npz) for loss, npz in examples.items()}
    fig, axes = plt.subplots(len(loaded), 5, figsize=(13, 2.9 * len(loaded)), squeeze=False)
    for row, (loss, ex) in zip(axes, loaded.items()):
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
        row[0].set_ylabel(f"{ex['model']}\nloss: {loss}", fontsize=9)
    names = next(iter(loaded.values()))["class_names"]
    handles = [Patch(color=CLASS_COLOURS[c % len(CLASS_COLOURS)], label=name) for c, name in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("FGSM examples: one slice per attack loss", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    _save(fig, path)


def mask_overlay(masks: np.ndarray) -> np.ndarray:
    """(C, H, W) binary masks as one (H, W, 3) RGB image; class c lights colour channel c."""
    masks = np.asarray(masks, dtype=float)
    colours = CLASS_COLOURS[np.arange(masks.shape[0]) % len(CLASS_COLOURS)]
    return np.clip(np.einsum("chw,ck->hwk", masks, colours), 0.0, 1.0)


def _load_example(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable example .npz ({error})") from error
    missing = [key for key in EXAMPLE_KEYS if key not in data]
    if missing:
        raise ValueError(f"{path}: example lacks key(s) {', '.join(missing)}")
    data["class_names"] = [str(name) for name in data["class_names"]]
    data["model"] = str(data["model"])
    return data


def _save(fig: plt.Figure, path: Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
