"""Tests that the report figures plot the right numbers and are written as real images."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from report_data import settings

from advseg.report import plots, size
from advseg.report.runs import AttackRun

CLASSES = ("grey_matter", "white_matter", "other_brain")
MODELS = (("Unet-resnet18", 14_328_883), ("FPN-resnet34", 23_155_001), ("Unet-resnet50", 32_521_299))
LOSSES = ("bce", "dice")
EPSILONS = (0.01, 0.03)


def fake_diff(params: int, loss: str, eps: float) -> float:
    return params / 1e8 + eps * 2 + (0.1 if loss == "dice" else 0.0) + (params % 7) * 0.01


def replicate_table() -> pd.DataFrame:
    """The replicate-table columns the plots read; diff grows with params, eps and the loss."""
    rows = []
    for model, params in MODELS:
        clean = 0.8 - params / 1e9
        for loss in LOSSES:
            for eps in EPSILONS:
                diff = fake_diff(params, loss, eps)
                adv = clean * (1 - diff)
                rows.append({"model": model, "params": params, "attack": "fgsm", "attack_loss": loss,
                             "variant": "standard", "eps": eps, "clean_dice_study_mean": clean,
                             "adv_dice_study_mean": adv, "diff_dice_study_mean": diff,
                             "adv_dice_study_ci_low": adv - 0.02, "adv_dice_study_ci_high": adv + 0.03})
        for eps in EPSILONS:
            diff = max(fake_diff(params, loss, eps) for loss in LOSSES) + 0.01
            adv = clean * (1 - diff)
            rows.append({"model": model, "params": params, "attack": "worst", "attack_loss": "all",
                         "variant": "standard", "eps": eps, "clean_dice_study_mean": clean,
                         "adv_dice_study_mean": adv, "diff_dice_study_mean": diff,
                         "adv_dice_study_ci_low": adv - 0.01, "adv_dice_study_ci_high": adv + 0.01})
    return pd.DataFrame(rows)


def write_example(path: Path, eps: float = 0.03, size: int = 32, drop: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    image = rng.random((size, size)).astype(np.float32)
    truth = np.zeros((len(CLASSES), size, size), np.uint8)
    for c in range(len(CLASSES)):
        truth[c, c * 8:(c + 1) * 8 + 4, 4:28] = 1
    arrays = {"image": image, "truth": truth, "clean_pred": truth.copy(),
              "adv_image": np.clip(image + eps * rng.choice([-1.0, 1.0], image.shape), 0, 1),
              "adv_pred": np.roll(truth, 5, axis=2), "class_names": np.array(CLASSES),
              "eps": np.float64(eps), "model": np.array("Unet-resnet18")}
    if drop:
        del arrays[drop]
    np.savez(path, **arrays)
    return path


def assert_image(path: Path, min_side: int = 300) -> np.ndarray:
    assert path.is_file()
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert min(pixels.shape[:2]) >= min_side
    assert pixels[..., :3].std() > 0.01, "image looks blank"
    return pixels


def test_size_figure_numbers_each_model_once_per_panel_with_its_statistics(tmp_path):
    table = replicate_table()
    report = settings(metric="dice_study", min_units=3, correlation_eps=0.03)
    points = size.model_points(table, "dice_study", 0.03, report.min_clean_score)
    rows = size.size_table(table, report)
    fig = plots.size_figure(points, rows, "dice_study", 0.03)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(panels) == len(rows) == 3
    first = next(ax for ax in panels if ax.get_title().startswith("fgsm/bce"))
    params = np.array([p for _, p in MODELS], float)
    diffs = np.array([fake_diff(p, "bce", 0.03) for p in params])
    np.testing.assert_allclose(first.collections[0].get_offsets(), np.column_stack([params / 1e6, diffs]))
    np.testing.assert_allclose(first.collections[0].get_array(), 0.8 - params / 1e9)   # coloured by clean score
    assert [t.get_text() for t in first.texts] == ["1", "2", "3"]                      # numbered, once each
    rho = stats.spearmanr(params, diffs).statistic
    assert f"ρ = {rho:.2f} [" in first.get_title() and "n = 3" in first.get_title()
    assert len(first.get_lines()) == 1                                                 # the fitted line
    key = " ".join(t.get_text() for t in fig.texts)
    assert all(key.count(model) == 1 for model, _ in MODELS)                           # the key names each once
    plt.close(fig)
    out = tmp_path / "figures" / "param_size_correlation.png"
    plots.plot_size(points, rows, "dice_study", 0.03, out)
    assert_image(out)
    assert plt.get_fignums() == []


def test_size_figure_draws_left_out_models_hollow():
    table = replicate_table()
    report = settings(metric="dice_study", min_units=2, min_clean_score=0.772, correlation_eps=0.01)
    points = size.model_points(table, "dice_study", 0.01, report.min_clean_score)   # the largest model is below it
    rows = size.size_table(table, report)
    assert set(rows["excluded"]) == {"Unet-resnet50"}
    fig = plots.size_figure(points, rows, "dice_study", 0.01)
    panel = fig.axes[0]
    assert len(panel.collections[0].get_offsets()) == 2 and len(panel.collections[1].get_offsets()) == 1
    assert panel.get_legend().get_texts()[0].get_text().startswith("left out")
    plt.close(fig)


def test_dice_vs_eps_draws_clean_then_attacked_scores_with_bands(tmp_path):
    table = replicate_table()
    fig = plots.dice_vs_eps_figure(table, "dice_study")
    first = fig.axes[0]  # smallest model first
    assert first.get_title().startswith("Unet-resnet18")
    lines = {line.get_label(): line for line in first.get_lines()}
    assert set(lines) == {"fgsm/bce", "fgsm/dice", "worst case"}
    params = MODELS[0][1]
    clean = 0.8 - params / 1e9
    np.testing.assert_allclose(lines["fgsm/dice"].get_xdata(), [0.0, 0.01, 0.03])
    np.testing.assert_allclose(lines["fgsm/dice"].get_ydata(),
                               [clean] + [clean * (1 - fake_diff(params, "dice", e)) for e in EPSILONS])
    assert lines["worst case"].get_color() == "black"
    assert first.get_ylim()[0] == 0 and first.get_ylim()[1] > table["clean_dice_study_mean"].max()   # clean shows
    assert all(lines["worst case"].get_ydata()[1:] < lines["fgsm/dice"].get_ydata()[1:])
    bands = first.collections
    assert len(bands) == 3
    band = bands[1].get_paths()[0].vertices  # fgsm/dice: band from ci_low to ci_high
    adv = clean * (1 - fake_diff(params, "dice", 0.03))
    assert band[:, 1].min() == pytest.approx(min(clean, adv - 0.02))
    assert band[:, 1].max() == pytest.approx(clean)
    assert np.isclose(band[:, 1], adv + 0.03).any()
    plt.close(fig)
    out = tmp_path / "dice_vs_eps.png"
    plots.plot_dice_vs_eps(table, "dice_study", out)
    assert_image(out)
    assert plt.get_fignums() == []


def test_loss_curve_shows_the_smallest_model_per_step():
    def run(model, params, attack, eps, history):
        return AttackRun({"model": model, "params": params, "seed": 1, "fold": 0, "attack": attack,
                          "attack_loss": "bce", "variant": "standard", "eps": eps}, {}, "x", history)

    runs = [run("Big", 9_000_000, "pgd", 0.01, [5.0, 6.0]), run("Small", 1_000_000, "pgd", 0.03, [1.0, 3.0, 4.0]),
            run("Small", 1_000_000, "pgd", 0.01, [1.0, 2.0, 2.5]), run("Small", 1_000_000, "fgsm", 0.01, [])]
    fig = plots.loss_curve_figure(runs)
    (ax,) = fig.axes
    assert "Small" in fig._suptitle.get_text()
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"eps 0.01", "eps 0.03"}
    np.testing.assert_allclose(lines["eps 0.03"].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(lines["eps 0.03"].get_ydata(), [1.0, 3.0, 4.0])
    plt.close(fig)
    empty = plots.loss_curve_figure(runs[-1:])
    assert "no iterative attack" in empty.axes[0].texts[0].get_text()
    plt.close(empty)


def test_transfer_heat_map_puts_sources_in_rows(tmp_path):
    rows = [("A", "A", 0.1), ("A", "B", 0.5), ("B", "A", 0.6), ("B", "B", 0.2), ("A", "B", 0.7)]
    transfer = pd.DataFrame([{"source_model": s, "target_model": t, "attack": "pgd", "attack_loss": "bce",
                              "variant": "standard", "eps": 0.03, "adv_dice": v} for s, t, v in rows])
    fig = plots.transfer_figure(transfer, "dice")
    image = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(image, [[0.1, 0.6], [0.6, 0.2]])  # A -> B is the mean of 0.5 and 0.7
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["A", "B"]
    plt.close(fig)
    out = tmp_path / "transfer.png"
    plots.plot_transfer(transfer, "dice", out)
    assert_image(out, 200)
    plots.plot_transfer(transfer.iloc[:0], "dice", tmp_path / "none.png")
    assert (tmp_path / "none.png").is_file()
    assert plt.get_fignums() == []


def test_example_grid_has_a_row_per_loss(tmp_path):
    examples = {loss: write_example(tmp_path / f"{loss}.npz") for loss in LOSSES}
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    plots.plot_example_grid(plots.load_examples({"bce": examples["bce"]}), one)
    plots.plot_example_grid(plots.load_examples(examples), two)
    single, double = assert_image(one, 200), assert_image(two, 300)
    assert double.shape[0] > single.shape[0] * 1.5
    assert double.shape[1] > double.shape[0]
    assert plt.get_fignums() == []


def test_mask_overlay_puts_class_c_in_channel_c():
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[0, 0, 0] = masks[1, 1, 1] = masks[2, 2, 2] = 1
    rgb = plots.mask_overlay(masks)
    assert rgb.shape == (4, 4, 3)
    assert rgb[0, 0].tolist() == [1, 0, 0]
    assert rgb[1, 1].tolist() == [0, 1, 0]
    assert rgb[2, 2].tolist() == [0, 0, 1]
    assert rgb[3, 3].tolist() == [0, 0, 0]


def test_example_missing_key_names_the_file(tmp_path):
    broken = write_example(tmp_path / "broken.npz", drop="adv_pred")
    with pytest.raises(ValueError, match="adv_pred") as error:
        plots.plot_example_grid(plots.load_examples({"bce": broken}), tmp_path / "grid.png")
    assert str(broken) in str(error.value)
    missing = tmp_path / "absent.npz"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        plots.plot_example_grid(plots.load_examples({"bce": missing}), tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()
