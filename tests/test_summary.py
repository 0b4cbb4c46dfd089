"""Tests of the report tables built from synthetic attack JSONs, per-slice files and model cards.

Every attacked score is the clean score times (1 - k) with k known per run (``attack_k``), so
diff = k under both protocols and each table entry can be computed by hand.
"""

from __future__ import annotations

import json
import math
import re
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from test_plots import write_example

from advseg import comparisons, sanity, statistics, summary
from advseg.commands import aggregate

CLASSES = ("stomach", "bowel")
# (arch, encoder, params): small to large, so the sort order is known.
MODELS = (("Unet", "resnet18", 1_000_000), ("FPN", "resnet34", 2_000_000), ("Unet", "resnet50", 3_000_000))
SEEDS = (1, 2)
METHODS = ("fgsm", "pgd")
LOSSES = ("bce", "dicefocal")
VARIANTS = {"standard": ("standard", "standard", "grey"), "study-study-channels": ("study", "study", "channels")}
EPSILONS = (0.01, 0.03)
# Four validation slices: slice 2 has no organ.
CLEAN_DICE = np.array([[0.8, np.nan], [0.6, 0.4], [np.nan, np.nan], [1.0, 0.8]])
CLEAN_STUDY = np.array([0.9, 0.5, 1.0, 0.7])
HAS_ORGAN = np.array([True, True, False, True])
CLEAN_HD95 = np.array([[2.0, np.nan], [4.0, 6.0], [np.nan, np.nan], [3.0, 2.0]])
# Hand computed: dice protocol = mean(mean(0.8, 0.6, 1.0), mean(0.4, 0.8)) = 0.7; study = (0.9 + 0.5 + 0.7) / 3.
CLEAN_DICE_SCORE = 0.7
CLEAN_STUDY_SCORE = 0.7
SLICE_SCORES = np.array([0.8, 0.5, np.nan, 0.9])  # per-slice mean Dice over present classes
LOSS_EFFECT = 0.05
QUIET_MODEL = "FPN-resnet34"  # no loss effect under the standard variant


def attack_k(params, seed, method, loss, variant, eps):
    model_name = next(f"{a}-{e}" for a, e, p in MODELS if p == params)
    loss_effect = 0.0 if (model_name == QUIET_MODEL and variant == "standard") else LOSS_EFFECT
    return (params / 1e7 + eps * 2 + (0.1 if method == "pgd" else 0.0) + (loss_effect if loss == "bce" else 0.0)
            + (0.02 if variant != "standard" else 0.0) + seed * 0.001)


def write_card(root: Path, arch: str, encoder: str, params: int, seed: int, fold: int = 0) -> Path:
    path = root / "checkpoints" / f"{arch}-{encoder}" / f"seed{seed}" / "model_card.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"arch": arch, "encoder": encoder, "model": f"{arch}-{encoder}", "params": params,
                                "fold": fold, "seed": seed, "class_names": list(CLASSES)}))
    return path


def slice_arrays(k: float, adv_dice=None, adv_study=None) -> dict:
    adv_dice = CLEAN_DICE * (1 - k) if adv_dice is None else adv_dice
    adv_study = CLEAN_STUDY * (1 - k) if adv_study is None else adv_study
    return {"class_names": np.array(CLASSES), "clean_dice": CLEAN_DICE, "adv_dice": adv_dice,
            "clean_iou": CLEAN_DICE * 0.9, "adv_iou": adv_dice * 0.9, "clean_hd95": CLEAN_HD95,
            "adv_hd95": CLEAN_HD95 * (1 + k), "clean_nsd": CLEAN_DICE, "adv_nsd": adv_dice,
            "clean_dice_study": CLEAN_STUDY, "adv_dice_study": adv_study, "has_organ": HAS_ORGAN}


def write_attack(root: Path, arch, encoder, params, seed, method, loss, variant, eps, fold=0, arrays=None,
                 history=None) -> Path:
    k = attack_k(params, seed, method, loss, variant, eps)
    step, order, input_ = VARIANTS[variant]
    record = {"arch": arch, "encoder": encoder, "model": f"{arch}-{encoder}", "params": params, "fold": fold,
              "seed": seed, "attack": method, "attack_loss": loss, "step": step, "loss_argument_order": order,
              "input": input_, "variant": variant, "eps": eps,
              "method_settings": {"steps": 3, "alpha": 0.25, "random_start": True, "restarts": 1},
              "clean_dice": CLEAN_DICE_SCORE, "adv_dice": CLEAN_DICE_SCORE * (1 - k), "diff": k,
              "clean_dice_study": CLEAN_STUDY_SCORE, "adv_dice_study": CLEAN_STUDY_SCORE * (1 - k),
              "n_images": 3, "n_images_study": 3, "linf": eps, "l2": eps * 10,
              "loss_history": history if history is not None else ([1.0, 1.5, 2.0] if method == "pgd" else [])}
    path = root / "attacks" / f"{arch}-{encoder}" / f"seed{seed}" / method / variant / loss / f"eps_{eps}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    np.savez(summary.slices_path(path), **(arrays or slice_arrays(k)))
    return path


def write_results(root: Path, models=MODELS, seeds=SEEDS, variants=tuple(VARIANTS)) -> tuple[list[Path], list[Path]]:
    cards = [write_card(root, a, e, p, s) for a, e, p in models for s in seeds]
    attacks = [write_attack(root, a, e, p, s, m, loss, v, eps) for a, e, p in reversed(models) for s in seeds
               for m in METHODS for loss in LOSSES for v in variants for eps in EPSILONS]
    return attacks, cards


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    attacks, cards = write_results(root)
    runs = summary.load_runs(attacks, cards)
    scored = summary.score_runs(runs + summary.worst_case_runs(runs), n_bootstrap=1000, seed=0)
    return Namespace(root=root, attacks=attacks, cards=cards, runs=runs, scored=scored,
                     table=summary.summary_table(scored), replicates=summary.replicate_table(scored))


def select(df, **where):
    mask = np.ones(len(df), bool)
    for column, value in where.items():
        mask &= (df[column] == value).to_numpy()
    return df[mask]


def test_load_runs_joins_cards_and_reads_slices(results):
    assert len(results.runs) == len(MODELS) * len(SEEDS) * len(METHODS) * len(LOSSES) * len(VARIANTS) * len(EPSILONS)
    run = next(r for r in results.runs if r.info["model"] == "FPN-resnet34" and r.info["variant"] != "standard")
    assert run.info["params"] == 2_000_000
    assert (run.info["step"], run.info["loss_argument_order"], run.info["input"]) == ("study", "study", "channels")
    np.testing.assert_array_equal(run.slices["has_organ"], HAS_ORGAN)
    assert list(run.slices["class_names"]) == list(CLASSES)


def test_summary_rows_recompute_both_protocols_by_hand(results):
    table = results.table
    assert len(table) == len(results.runs) + len(MODELS) * len(SEEDS) * len(VARIANTS) * len(EPSILONS)
    for column in summary.SUMMARY_COLUMNS + ("clean_dice_stomach", "adv_dice_bowel", "diff_stomach",
                                            "clean_hd95_bowel", "adv_nsd_stomach"):
        assert column in table.columns
    row = select(table, model="Unet-resnet50", seed=2, attack="pgd", attack_loss="bce", variant="standard",
                 eps=0.03).iloc[0]
    k = attack_k(3_000_000, 2, "pgd", "bce", "standard", 0.03)
    assert row["clean_dice"] == pytest.approx(0.7)
    assert row["adv_dice"] == pytest.approx(0.7 * (1 - k))
    assert row["diff"] == pytest.approx(k)
    assert row["clean_dice_study"] == pytest.approx(0.7)
    assert row["diff_dice_study"] == pytest.approx(k)
    assert row["adv_dice_stomach"] == pytest.approx(0.8 * (1 - k))
    assert row["diff_bowel"] == pytest.approx(k)
    assert row["clean_iou"] == pytest.approx(0.63)
    # HD95: stomach mean(2, 4, 3) = 3, bowel mean(6, 2) = 4 -> 3.5
    assert row["clean_hd95"] == pytest.approx(3.5)
    assert row["adv_hd95"] == pytest.approx(3.5 * (1 + k))
    assert (row["n_images"], row["n_slices"], row["seed"], row["fold"]) == (3, 4, 2, 0)


def test_intervals_are_percentiles_of_resampled_slices(results):
    row = select(results.table, model="Unet-resnet18", seed=1, attack="fgsm", attack_loss="dicefocal",
                 variant="standard", eps=0.01).iloc[0]
    k = attack_k(1_000_000, 1, "fgsm", "dicefocal", "standard", 0.01)
    rows = statistics.resample_rows(4, 1000, seed=(0, 0))
    adv, study = [], []
    for r in rows:
        per_class = [np.nan if np.isnan(CLEAN_DICE[r, c]).all() else np.nanmean(CLEAN_DICE[r, c] * (1 - k))
                     for c in range(2)]
        adv.append(np.nan if np.isnan(per_class).all() else np.nanmean(per_class))
        organ = r[HAS_ORGAN[r]]
        study.append(np.mean(CLEAN_STUDY[organ] * (1 - k)) if organ.size else np.nan)
    assert (row["adv_dice_ci_low"], row["adv_dice_ci_high"]) == pytest.approx(statistics.percentile_interval(adv))
    assert (row["adv_dice_study_ci_low"], row["adv_dice_study_ci_high"]) == pytest.approx(
        statistics.percentile_interval(study))
    # diff is k on every resample with slices of an organ
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((k, k))


def test_one_pass_distributions_equal_the_protocol_functions():
    rng = np.random.default_rng(1)
    arrays = slice_arrays(0.2, adv_dice=np.where(np.isnan(CLEAN_DICE), np.nan, rng.random(CLEAN_DICE.shape)),
                          adv_study=rng.random(4))
    weights = summary.row_weights(statistics.resample_rows(4, 300, seed=5), 4)
    np.testing.assert_array_equal(weights.sum(axis=1), 4)
    together = summary.interval_distributions(arrays, weights)
    for protocol, adv, diff in (("dice", "adv_dice", "diff"), ("dice_study", "adv_dice_study", "diff_dice_study")):
        np.testing.assert_allclose(together[adv], summary.protocol_statistic(arrays, "adv", protocol, weights=weights))
        np.testing.assert_allclose(together[diff], summary.protocol_diff(arrays, protocol, weights=weights))


def test_worst_case_rows_take_the_strongest_run_per_slice(results):
    worst = select(results.table, model="Unet-resnet18", seed=1, attack="worst", variant="standard", eps=0.03)
    assert len(worst) == 1
    k = attack_k(1_000_000, 1, "pgd", "bce", "standard", 0.03)  # the largest k of the group
    assert worst.iloc[0]["adv_dice"] == pytest.approx(0.7 * (1 - k))
    assert worst.iloc[0]["attack_loss"] == summary.WORST_LOSS
    assert worst.iloc[0]["worst_of"] == "fgsm/bce;fgsm/dicefocal;pgd/bce;pgd/dicefocal"
    # the worst rows come last within each model and replicate
    ordered = select(results.table, model="Unet-resnet18", seed=1)["attack"].tolist()
    assert ordered[-len(VARIANTS) * len(EPSILONS):] == ["worst"] * len(VARIANTS) * len(EPSILONS)


def test_worst_case_mixes_runs_slice_by_slice(tmp_path):
    a, e, p = MODELS[0]
    card = write_card(tmp_path, a, e, p, 1)
    # run fgsm/bce hurts slice 0 most, run pgd/bce slice 1 and 3; study scores cross the other way.
    first = slice_arrays(0, adv_dice=np.array([[0.1, np.nan], [0.6, 0.4], [np.nan, np.nan], [0.9, 0.9]]),
                         adv_study=np.array([0.8, 0.2, 1.0, 0.1]))
    second = slice_arrays(0, adv_dice=np.array([[0.5, np.nan], [0.2, 0.2], [np.nan, np.nan], [0.5, 0.5]]),
                          adv_study=np.array([0.3, 0.4, 0.0, 0.6]))
    paths = [write_attack(tmp_path, a, e, p, 1, "fgsm", "bce", "standard", 0.01, arrays=first),
             write_attack(tmp_path, a, e, p, 1, "pgd", "bce", "standard", 0.01, arrays=second)]
    runs = summary.load_runs(paths, [card])
    (worst,) = summary.worst_case_runs(runs)
    np.testing.assert_allclose(worst.slices["adv_dice"], [[0.1, np.nan], [0.2, 0.2], [np.nan, np.nan], [0.5, 0.5]])
    np.testing.assert_allclose(worst.slices["adv_dice_study"], [0.3, 0.2, 0.0, 0.1])
    row = summary.score_runs([worst], n_bootstrap=1000)[0].row
    assert row["adv_dice"] == pytest.approx(np.mean([np.mean([0.1, 0.2, 0.5]), np.mean([0.2, 0.5])]))
    assert row["adv_dice_study"] == pytest.approx(np.mean([0.3, 0.2, 0.1]))  # slice 2 has no organ


def test_replicate_table_gives_mean_and_sd_over_seeds(results):
    reps = results.replicates
    assert len(reps) == len(results.table) // len(SEEDS)
    row = select(reps, model="FPN-resnet34", attack="fgsm", attack_loss="bce",
                 variant="standard", eps=0.01).iloc[0]
    ks = [attack_k(2_000_000, s, "fgsm", "bce", "standard", 0.01) for s in SEEDS]
    assert (row["n_replicates"], row["seeds"], row["folds"]) == (2, "1;2", "0")
    assert row["diff_mean"] == pytest.approx(np.mean(ks))
    assert row["diff_sd"] == pytest.approx(np.std(ks, ddof=1))
    assert row["adv_dice_study_mean"] == pytest.approx(0.7 * (1 - np.mean(ks)))
    # both seeds share fold 0's resamples, so the interval of the mean is that of the mean k
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((np.mean(ks), np.mean(ks)))


def test_correlation_table_uses_per_model_means_and_scipy(results):
    corr = summary.correlation_table(results.replicates, "dice_study", 0.03, n_bootstrap=1000, seed=0)
    row = select(corr, attack="pgd", attack_loss="bce", variant="standard", x="params").iloc[0]
    params = np.array([p for _, _, p in MODELS], float)
    diffs = np.array([np.mean([attack_k(p, s, "pgd", "bce", "standard", 0.03) for s in SEEDS]) for p in params])
    assert row["n_models"] == 3
    assert row["y"] == "diff_dice_study"
    assert row["pearson_r"] == pytest.approx(stats.pearsonr(params, diffs).statistic)
    assert row["spearman_rho"] == pytest.approx(stats.spearmanr(params, diffs).statistic)
    # clean scores are equal for every model: that correlation is undefined
    clean = select(corr, attack="pgd", attack_loss="bce", variant="standard", x="clean").iloc[0]
    assert math.isnan(clean["pearson_r"]) and math.isnan(clean["spearman_ci_low"])
    assert set(corr["attack"]) == {"fgsm", "pgd", "worst"}


def test_correlation_names_config_key_for_unknown_eps(results):
    with pytest.raises(ValueError, match="report.correlation_eps"):
        summary.correlation_table(results.replicates, "dice", 0.5)
    with pytest.raises(ValueError, match="report.metric"):
        summary.correlation_table(results.replicates, "hausdorff", 0.03)


def test_loss_comparison_pools_replicates_and_gives_verdicts(results):
    table = comparisons.loss_comparisons(results.runs, "dice", n_bootstrap=1000, seed=0)
    assert len(table) == len(MODELS) * len(METHODS) * len(VARIANTS) * len(EPSILONS)
    row = select(table, model="Unet-resnet18", attack="fgsm", variant="standard", eps=0.01).iloc[0]
    # per slice, adv(bce) - adv(dicefocal) = -0.05 * slice score, over 2 seeds x 3 slices with an organ
    assert (row["loss_a"], row["loss_b"], row["n_replicates"], row["n_pairs"]) == ("bce", "dicefocal", 2, 6)
    assert row["mean_difference"] == pytest.approx(-LOSS_EFFECT * np.nanmean(SLICE_SCORES))
    assert row["ci_high"] < 0 and row["significant"]
    assert row["verdict"] == "bce stronger"
    d = np.tile(-LOSS_EFFECT * SLICE_SCORES[HAS_ORGAN], 2)
    assert row["wilcoxon_p"] == pytest.approx(stats.wilcoxon(d, zero_method="pratt").pvalue)
    quiet = select(table, model=QUIET_MODEL, attack="pgd", variant="standard", eps=0.03).iloc[0]
    assert quiet["mean_difference"] == pytest.approx(0, abs=1e-12)
    assert quiet["verdict"] == comparisons.NO_DIFFERENCE and not quiet["significant"]


def test_losses_markdown_and_ablation_by_hand(results):
    table = comparisons.loss_comparisons(results.runs, "dice", n_bootstrap=1000, seed=0)
    text = comparisons.attack_losses_markdown(table, "dice")
    assert "no significant difference" in text and "**bce stronger**" in text
    first = next(line for line in text.splitlines() if line.startswith("| Unet-resnet18"))
    cells = [c.strip() for c in first.strip("|").split("|")]
    k_bce = np.mean([attack_k(1_000_000, s, "fgsm", "bce", "standard", 0.01) for s in SEEDS])
    assert cells[:12] == ["Unet-resnet18", "1.0M", "fgsm", "standard", "0.01", "2", "6", "bce", "dicefocal",
                          "0.700", f"{0.7 * (1 - k_bce):.3f}",
                          f"{0.7 * (1 - k_bce + LOSS_EFFECT):.3f}"]
    ablation = comparisons.ablation_markdown(table, "dice")
    # standard: the quiet model's 2 methods x 2 eps rows show no difference -> 8 of 12 for bce
    assert ("- `standard`: bce significantly stronger than dicefocal in 8 of 12 rows; dicefocal significantly "
            "stronger in 0; no significant difference in 4.") in ablation
    assert "- `study-study-channels`: bce significantly stronger than dicefocal in 12 of 12 rows" in ablation
    assert "| Unet-resnet18 | fgsm | 0.01 | study | study | channels | bce | dicefocal |" in ablation
    one = comparisons.ablation_markdown(table[table["variant"] == "standard"], "dice")
    assert "Only one attack variant ran (standard)" in one


def test_transfer_table_adds_white_box_rows(results, tmp_path):
    rows = [{"source_model": "Unet-resnet18", "target_model": "FPN-resnet34", "fold": 0, "seed": 1, "attack": "fgsm",
             "attack_loss": "bce", "variant": "standard", "eps": 0.03, "clean_dice": 0.7, "adv_dice": 0.6,
             "diff": 0.0, "clean_dice_study": 0.8, "adv_dice_study": 0.4}]
    path = tmp_path / "transfer" / "FPN-resnet34.json"
    path.parent.mkdir()
    path.write_text(json.dumps(rows))
    table = summary.transfer_table([path], results.table, None)
    assert list(table.columns) == list(summary.TRANSFER_COLUMNS)
    cross = select(table, white_box=False).iloc[0]
    assert cross["diff"] == pytest.approx(0.1 / 0.7)  # recomputed, not read
    assert cross["diff_dice_study"] == pytest.approx(0.5)
    white = select(table, white_box=True)
    assert sorted(white["target_model"]) == sorted(f"{a}-{e}" for a, e, _ in MODELS)
    own = select(white, target_model="FPN-resnet34").iloc[0]
    assert own["adv_dice"] == pytest.approx(0.7 * (1 - attack_k(2_000_000, 1, "fgsm", "bce", "standard", 0.03)))
    with pytest.raises(ValueError, match="report.transfer_eps"):
        summary.transfer_table([path], results.table, 0.01)
    path.write_text(json.dumps([{"source_model": "x"}]))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*row 0 lacks"):
        summary.transfer_table([path], results.table, None)


def scores_frame(rows):
    """A replicate table with only what the sanity checks read."""
    columns = ["model", "attack", "attack_loss", "variant", "eps", "clean_dice_mean", "adv_dice_mean"]
    return pd.DataFrame(rows, columns=columns)


def test_sanity_checks_flag_by_hand():
    replicates = scores_frame([
        ("M", "fgsm", "bce", "standard", 0.1, 0.8, 0.5), ("M", "fgsm", "bce", "standard", 0.3, 0.8, 0.6),
        ("M", "pgd", "bce", "standard", 0.1, 0.8, 0.6), ("M", "pgd", "bce", "standard", 0.3, 0.8, 0.05)])
    transfer = pd.DataFrame([
        {"source_model": "M", "target_model": "M", "white_box": True, "attack": "pgd", "attack_loss": "bce",
         "variant": "standard", "eps": 0.3, "adv_dice": 0.05},
        {"source_model": "N", "target_model": "M", "white_box": False, "attack": "pgd", "attack_loss": "bce",
         "variant": "standard", "eps": 0.3, "adv_dice": 0.02}])
    run = summary.AttackRun({"model": "M", "attack": "pgd", "attack_loss": "bce", "variant": "standard", "eps": 0.3,
                             "seed": 1, "fold": 0}, {}, "x", [2.0, 1.5])
    checks = sanity.sanity_checks(replicates, [run], transfer, "dice").set_index(["check", "attack", "eps"],
                                                                                  drop=False)
    iterative = checks.loc[("iterative ≥ single-step", "pgd", 0.1)]
    assert (iterative["status"], iterative["value"], iterative["reference"]) == ("flag", pytest.approx(0.2),
                                                                                 pytest.approx(0.3))
    assert checks.loc[("iterative ≥ single-step", "pgd", 0.3)]["status"] == "pass"
    monotone = checks[checks["check"] == "monotone in eps"].set_index("attack")
    assert monotone.loc["fgsm", "status"] == "flag" and monotone.loc["fgsm", "value"] == pytest.approx(0.1)
    assert "from eps 0.1 to 0.3" in monotone.loc["fgsm", "note"]
    assert monotone.loc["pgd", "status"] == "pass"
    near = checks[checks["check"] == "largest eps near 0"].set_index("attack")
    assert near.loc["fgsm", "status"] == "flag" and "gradient masking" in near.loc["fgsm", "note"]
    assert near.loc["pgd", "status"] == "pass"
    (transfer_row,) = checks[checks["check"] == "white-box ≥ transfer"].itertuples()
    assert transfer_row.status == "flag" and transfer_row.value == pytest.approx(0.02)
    (loss_row,) = checks[checks["check"] == "loss increases"].itertuples()
    assert loss_row.status == "flag"
    text = sanity.sanity_markdown(checks.reset_index(drop=True), "dice")
    assert "## iterative ≥ single-step" in text and "1 pass, 1 flagged." in text


def test_missing_key_names_file_and_key(tmp_path):
    attacks, cards = write_results(tmp_path, MODELS[:1], SEEDS[:1], ("standard",))
    record = json.loads(attacks[0].read_text())
    del record["attack_loss"]
    attacks[0].write_text(json.dumps(record))
    with pytest.raises(ValueError, match="attack_loss") as error:
        summary.load_runs(attacks, cards)
    assert str(attacks[0]) in str(error.value)


def test_bad_or_unmatched_files_name_the_file(tmp_path):
    attacks, cards = write_results(tmp_path, MODELS[:2], SEEDS[:1], ("standard",))
    with pytest.raises(ValueError, match="no model card for FPN-resnet34 seed 1 fold 0"):
        summary.load_runs(attacks, cards[:1])
    with pytest.raises(ValueError, match="duplicates"):
        summary.load_runs(attacks + attacks[:1], cards)
    summary.slices_path(attacks[1]).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(summary.slices_path(attacks[1])))):
        summary.load_runs(attacks, cards)
    arrays = slice_arrays(0.1)
    arrays["adv_dice"] = arrays["adv_dice"][:3]
    np.savez(summary.slices_path(attacks[1]), **arrays)
    with pytest.raises(ValueError, match=r"adv_dice has shape \(3, 2\)"):
        summary.load_runs(attacks, cards)
    cards[0].write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(cards[0]))):
        summary.load_runs(attacks, cards)


def test_slice_count_must_agree_within_a_fold(tmp_path):
    attacks, cards = write_results(tmp_path, MODELS[:1], SEEDS[:1], ("standard",))
    arrays = {key: (value[:3] if key != "class_names" else value) for key, value in slice_arrays(0.1).items()}
    np.savez(summary.slices_path(attacks[-1]), **arrays)
    with pytest.raises(ValueError, match="3 slices, but .* fold 0 has 4"):
        summary.load_runs(attacks, cards)


def test_format_params():
    assert summary.format_params(14_328_883) == "14.3M"
    assert summary.format_params(np.int64(2_540_000)) == "2.5M"


def test_aggregate_command_writes_every_output(results, tmp_path, monkeypatch):
    logged = {}

    def fake_log(tracking, params, metrics, artifacts):
        logged.update(params=params, metrics=metrics, artifacts=artifacts)
        return "run-123"

    monkeypatch.setattr(aggregate, "log_aggregate_run", fake_log)
    transfer = tmp_path / "transfer.json"
    transfer.write_text(json.dumps([{"source_model": "Unet-resnet18", "target_model": "FPN-resnet34", "fold": 0,
                                     "seed": s, "attack": "pgd", "attack_loss": "bce", "variant": "standard",
                                     "eps": 0.03, "clean_dice": 0.7, "adv_dice": 0.65, "clean_dice_study": 0.7,
                                     "adv_dice_study": 0.65} for s in SEEDS]))
    examples = [write_example(path.with_name(path.name.replace(".json", ".example.npz")))
                for path in results.attacks if path.parent.parent.name == "standard" and "seed1" in path.parts
                and path.name == "eps_0.03.json" and ("Unet-resnet18" in path.parts or "bce" in path.parts)]
    out = tmp_path / "out"
    names = {"summary_csv": "attack_summary.csv", "replicates_csv": "attack_summary_replicates.csv",
             "losses_md": "attack_losses.md", "losses_csv": "attack_losses.csv", "ablation_md": "ablation.md",
             "correlation_csv": "correlation.csv", "transfer_csv": "transfer.csv", "sanity_md": "sanity.md",
             "sanity_csv": "sanity.csv", "correlation_plot": "param_size_correlation.png",
             "dice_plot": "dice_vs_eps.png", "loss_plot": "loss_curve.png", "transfer_plot": "transfer.png",
             "run_record": "aggregate_run.json"}
    args = Namespace(tracking=tmp_path / "tracking.json", attacks=results.attacks, cards=results.cards,
                     transfers=[transfer], examples=examples, metric="dice_study", correlation_eps=None,
                     transfer_eps=0.03, n_bootstrap=1000, seed=0, examples_dir=out / "examples",
                     **{key: out / name for key, name in names.items()})
    aggregate.run(args)
    for name in names.values():
        assert (out / name).stat().st_size > 0, name
    grids = sorted(path.name for path in (out / "examples").iterdir())
    assert grids == [f"{model}.png" for model in ("FPN-resnet34", "Unet-resnet18", "Unet-resnet50")]
    assert sorted(path.name for path in logged["artifacts"]["plots/examples"]) == grids
    table = pd.read_csv(out / "attack_summary.csv")
    expected = results.table.assign(worst_of=results.table["worst_of"].replace("", np.nan))
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, check_exact=False, rtol=1e-5, atol=1e-6)
    assert json.loads((out / "aggregate_run.json").read_text())["mlflow_run_id"] == "run-123"
    assert logged["params"]["correlation_eps"] == 0.03 and logged["params"]["n_replicates"] == 2
    assert "Scores are `dice_study`" in (out / "attack_losses.md").read_text()
    sanity_table = pd.read_csv(out / "sanity.csv")
    assert set(sanity_table["check"]) == set(sanity.CHECKS)
    assert sorted(p.name for p in out.iterdir()) == sorted([*names.values(), "examples"])  # no temporary files
    args.n_bootstrap = 10
    with pytest.raises(ValueError, match="report.n_bootstrap"):
        aggregate.run(args)


def test_examples_are_grouped_by_model_and_labelled_by_their_attack_result(results, tmp_path):
    beside = [path for path in results.attacks if "Unet-resnet18" in path.parts and "seed1" in path.parts
              and path.parent.parent.name == "standard" and path.name == "eps_0.01.json"]
    examples = [path.with_name("eps_0.01.example.npz") for path in beside]
    grouped = summary.examples_by_model(results.runs, examples)
    assert list(grouped) == ["Unet-resnet18"]
    assert grouped["Unet-resnet18"] == {f"{path.parent.parent.parent.name}/{path.parent.name}": example
                                        for path, example in zip(beside, examples)}
    assert sorted(grouped["Unet-resnet18"]) == ["fgsm/bce", "fgsm/dicefocal", "pgd/bce", "pgd/dicefocal"]
    stray = tmp_path / "eps_0.01.example.npz"
    with pytest.raises(ValueError, match=re.escape(f"{stray}: no attack result beside it")):
        summary.examples_by_model(results.runs, [stray])
