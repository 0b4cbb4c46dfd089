"""Tests of the comparison tables built from fake model cards and attack JSONs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from advseg import summary

CLASSES = ("grey_matter", "white_matter", "other_brain")
# (arch, encoder, params): small to large, so the sort order is known.
MODELS = (("Unet", "resnet18", 14_328_883), ("FPN", "resnet34", 23_155_001), ("Unet", "resnet50", 32_521_299))
LOSSES = ("bce", "dice")
EPSILONS = (0.01, 0.03)


def fake_diff(params: int, loss: str, eps: float) -> float:
    """Grows with params, eps and (for 'dice') the loss, so every ordering is predictable."""
    return round(params / 1e8 + eps * 2 + (0.1 if loss == "dice" else 0.0), 6)


def write_card(root: Path, arch: str, encoder: str, params: int) -> Path:
    path = root / "checkpoints" / arch / encoder / "model_card.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"arch": arch, "encoder": encoder, "model": f"{arch}-{encoder}",
                                "params": params, "class_names": list(CLASSES), "clean_dice": 0.8}))
    return path


def attack_record(arch: str, encoder: str, params: int, loss: str, eps: float) -> dict:
    clean, diff = 0.8, fake_diff(params, loss, eps)
    return {"arch": arch, "encoder": encoder, "model": f"{arch}-{encoder}", "attack": "fgsm",
            "attack_loss": loss, "eps": eps, "clean_dice": clean, "adv_dice": clean * (1 - diff),
            "diff": diff, "clean_iou": 0.7, "adv_iou": 0.5, "diff_iou": 2 / 7,
            "clean_dice_per_class": {c: clean for c in CLASSES},
            "adv_dice_per_class": {c: clean * (1 - diff) for c in CLASSES},
            "diff_per_class": {c: diff for c in CLASSES},
            "n_images": 16, "linf": eps, "l2": eps * 64}


def write_attack(root: Path, record: dict) -> Path:
    path = (root / "attacks" / record["arch"] / record["encoder"] / record["attack_loss"]
            / f"eps_{record['eps']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def write_results(root: Path, models=MODELS) -> tuple[list[Path], list[Path]]:
    cards = [write_card(root, arch, encoder, params) for arch, encoder, params in models]
    attacks = [write_attack(root, attack_record(arch, encoder, params, loss, eps))
               for arch, encoder, params in reversed(models) for loss in LOSSES for eps in EPSILONS]
    return attacks, cards


@pytest.fixture
def records(tmp_path) -> pd.DataFrame:
    return summary.load_records(*write_results(tmp_path))


def test_load_records_joins_params_and_flattens_classes(records):
    assert len(records) == len(MODELS) * len(LOSSES) * len(EPSILONS)
    row = records[(records["model"] == "FPN-resnet34") & (records["attack_loss"] == "dice")
                  & (records["eps"] == 0.03)].iloc[0]
    assert row["params"] == 23_155_001
    assert row["diff_white_matter"] == pytest.approx(fake_diff(23_155_001, "dice", 0.03))
    assert row["clean_dice_grey_matter"] == pytest.approx(0.8)


def test_summary_csv_has_one_sorted_row_per_model_loss_eps(records, tmp_path):
    out = tmp_path / "tables" / "attack_summary.csv"
    summary.write_summary_csv(records, out)
    table = pd.read_csv(out)
    assert len(table) == len(MODELS) * len(LOSSES) * len(EPSILONS)
    for column in summary.SUMMARY_COLUMNS + tuple(f"{p}_{c}" for p in ("clean_dice", "adv_dice", "diff")
                                                   for c in CLASSES):
        assert column in table.columns
    expected = [(f"{arch}-{encoder}", loss, eps) for arch, encoder, _ in MODELS
                for loss in LOSSES for eps in EPSILONS]
    assert list(zip(table["model"], table["attack_loss"], table["eps"])) == expected


def test_markdown_compares_losses_with_numbers_and_winner(records, tmp_path):
    out = tmp_path / "loss_comparison.md"
    text = summary.write_loss_comparison_markdown(records, out)
    assert out.read_text(encoding="utf-8") == text
    assert "(clean − adv) / clean" in text
    for column in ("adv Dice (bce)", "diff (bce)", "adv Dice (dice)", "diff (dice)", "clean Dice"):
        assert column in text
    rows = [line for line in text.splitlines() if line.startswith("| Unet") or line.startswith("| FPN")]
    assert len(rows) == len(MODELS) * len(EPSILONS)
    first = [cell.strip() for cell in rows[0].strip("|").split("|")]
    diff_bce, diff_dice = fake_diff(14_328_883, "bce", 0.01), fake_diff(14_328_883, "dice", 0.01)
    assert first == ["Unet-resnet18", "14.3M", "0.01", "0.800", f"{0.8 * (1 - diff_bce):.3f}",
                     f"{diff_bce:.3f}", f"{0.8 * (1 - diff_dice):.3f}", f"{diff_dice:.3f}", "dice"]


def test_correlation_matches_scipy(records):
    result = summary.correlation(records, 0.03).set_index("attack_loss")
    at = records[(records["eps"] == 0.03) & (records["attack_loss"] == "bce")]
    pearson = stats.pearsonr(at["params"], at["diff"])
    spearman = stats.spearmanr(at["params"], at["diff"])
    assert result.loc["bce", "n_models"] == len(MODELS)
    assert result.loc["bce", "pearson_r"] == pytest.approx(pearson.statistic)
    assert result.loc["bce", "pearson_p"] == pytest.approx(pearson.pvalue)
    assert result.loc["bce", "spearman_rho"] == pytest.approx(1.0)
    assert result.loc["bce", "spearman_p"] == pytest.approx(spearman.pvalue)


def test_correlation_is_nan_for_too_few_models_or_constant_diff(tmp_path, records):
    few = summary.load_records(*write_results(tmp_path / "few", MODELS[:2]))
    assert summary.correlation(few, 0.01)["pearson_r"].isna().all()
    flat = records.assign(diff=0.5)
    result = summary.correlation(flat, 0.01)
    assert result[["pearson_r", "pearson_p", "spearman_rho", "spearman_p"]].isna().all().all()
    assert math.isnan(summary.correlation(records.assign(params=1), 0.01)["spearman_rho"].iloc[0])


def test_correlation_names_config_key_for_unknown_eps(records):
    with pytest.raises(ValueError, match="report.correlation_eps"):
        summary.correlation(records, 0.5)


def test_missing_key_names_file_and_key(tmp_path):
    attacks, cards = write_results(tmp_path)
    record = json.loads(attacks[0].read_text())
    del record["adv_dice"]
    attacks[0].write_text(json.dumps(record))
    with pytest.raises(ValueError, match="adv_dice") as error:
        summary.load_records(attacks, cards)
    assert str(attacks[0]) in str(error.value)


def test_bad_or_unmatched_files_name_the_file(tmp_path):
    attacks, cards = write_results(tmp_path)
    cards[0].write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(cards[0]))):
        summary.load_records(attacks, cards)
    with pytest.raises(ValueError, match="no model card"):
        summary.load_records(attacks, cards[1:])
    missing = tmp_path / "absent.json"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        summary.load_records([missing], cards[1:])


def test_format_params():
    assert summary.format_params(14_328_883) == "14.3M"
    assert summary.format_params(np.int64(2_540_000)) == "2.5M"
