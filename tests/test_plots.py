"""Tests that the report figures are written as real, sensibly sized images."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from advseg import plots

CLASSES = ("grey_matter", "white_matter", "other_brain")
MODELS = (("Unet-resnet18", 14_328_883), ("FPN-resnet34", 23_155_001), ("Unet-resnet50", 32_521_299))
LOSSES = ("bce", "dice")
EPSILONS = (0.01, 0.03)


def results_table() -> pd.DataFrame:
    """The columns the plots read, with diff growing in params so correlations are defined."""
    rows = []
    for model, params in MODELS:
        for loss in LOSSES:
            for eps in EPSILONS:
                diff = params / 1e8 + eps * 2 + (0.1 if loss == "dice" else 0.0)
                rows.append({"model": model, "params": params, "attack": "fgsm", "attack_loss": loss,
                             "eps": eps, "clean_dice": 0.8, "adv_dice": 0.8 * (1 - diff), "diff": diff})
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


def test_param_correlation_plot_is_written(tmp_path):
    out = tmp_path / "figures" / "params_vs_diff.png"
    plots.plot_param_correlation(results_table(), 0.03, out)
    assert_image(out)
    assert plt.get_fignums() == []


def test_param_correlation_plot_survives_too_few_models(tmp_path):
    table = results_table()
    out = tmp_path / "two_models.png"
    plots.plot_param_correlation(table[table["model"] != "FPN-resnet34"], 0.01, out)
    assert_image(out)


def test_param_correlation_rejects_unknown_eps(tmp_path):
    with pytest.raises(ValueError, match="report.correlation_eps"):
        plots.plot_param_correlation(results_table(), 0.5, tmp_path / "x.png")


def test_dice_vs_eps_plot_is_written(tmp_path):
    out = tmp_path / "dice_vs_eps.png"
    plots.plot_dice_vs_eps(results_table(), out)
    assert_image(out)
    assert plt.get_fignums() == []


def test_example_grid_has_a_row_per_loss(tmp_path):
    examples = {loss: write_example(tmp_path / f"{loss}.npz") for loss in LOSSES}
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    plots.plot_example_grid({"bce": examples["bce"]}, one)
    plots.plot_example_grid(examples, two)
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
        plots.plot_example_grid({"bce": broken}, tmp_path / "grid.png")
    assert str(broken) in str(error.value)
    missing = tmp_path / "absent.npz"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        plots.plot_example_grid({"bce": missing}, tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()
