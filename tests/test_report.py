"""The results layer on attack results written as the attack job writes them: units, not slices."""

from __future__ import annotations

import json
import math
import re
from argparse import Namespace

import numpy as np
import pandas as pd
import pytest

from report_data import random_study, scores, settings, write_attack, write_card
from test_plots import write_example

from advseg import correlations, records, statistics
from advseg.commands import aggregate
from advseg.report import claims, comparisons, runs, sanity, size, tables, units

NAN = np.nan


def pipeline(attacks, cards, report=None):
    """load -> unit table -> summary, replicates, comparisons: what the aggregate step computes."""
    report = report or settings()
    loaded = runs.load_runs(attacks, cards)
    every = loaded + runs.worst_case_runs(loaded)
    table = units.unit_table(every)
    summary = tables.summary_table(every, table, report)
    return Namespace(runs=loaded, units=table, summary=summary, replicates=tables.replicate_table(table, summary, report),
                     losses=comparisons.loss_comparisons(table, report), settings=report)


# --- every number is a mean over units ---------------------------------------------------------

def test_scores_are_means_over_units_by_hand(tmp_path):
    # unit 0: two slices; unit 1: one slice with an organ, one without (it does not count)
    clean = scores(np.array([[0.8, NAN], [0.6, 0.4], [1.0, 0.8], [NAN, NAN]]))
    adv = scores(np.array([[0.4, NAN], [0.3, 0.2], [0.5, 0.4], [NAN, NAN]]))
    card = write_card(tmp_path, "Unet-resnet18", 1_000_000, 1)
    path = write_attack(tmp_path, "Unet-resnet18", 1, "fgsm", "bce", 0.01, clean, adv, [0, 0, 1, 1])
    result = pipeline([path], [card], settings(min_units=2))
    (row,) = result.summary.to_dict(orient="records")
    # dice per unit: unit 0 = mean(stomach (0.8 + 0.6)/2, bowel 0.4) = 0.55; unit 1 = mean(1.0, 0.8) = 0.9
    assert row["clean_dice"] == pytest.approx((0.55 + 0.9) / 2)
    assert row["adv_dice"] == pytest.approx((0.275 + 0.45) / 2)
    assert row["diff"] == pytest.approx(0.5)
    assert row["clean_dice_stomach"] == pytest.approx((0.7 + 1.0) / 2)
    study_unit_0 = np.mean([np.mean([0.8, 1.0]), np.mean([0.6, 0.4])])
    assert row["clean_dice_study"] == pytest.approx((study_unit_0 + 0.9) / 2)
    assert row["n_units"] == 2 and row["n_images"] == 3 and row["n_slices"] == 4
    assert result.units["unit"].tolist() == [0, 1]


def test_duplicating_slices_within_units_changes_no_interval_or_p(tmp_path):
    """The same information, three copies of every slice: unit-level inference does not move, while
    resampling slices (the method this replaced) would have narrowed every interval."""
    models = {"Unet-resnet18": 14_000_000, "FPN-resnet34": 23_000_000}
    report = settings(min_units=4)
    once = pipeline(*random_study(tmp_path / "once", models, n_units=12, slices_per_unit=6), report)
    thrice = pipeline(*random_study(tmp_path / "thrice", models, n_units=12, slices_per_unit=6, repeat=3), report)
    for column in ("adv_dice", "adv_dice_ci_low", "adv_dice_ci_high", "diff_ci_low", "diff_ci_high",
                   "adv_dice_study_ci_low", "adv_dice_study_ci_high"):
        np.testing.assert_allclose(once.summary[column], thrice.summary[column], rtol=1e-9, err_msg=column)
    for column in ("effect", "ci_low", "ci_high", "p", "p_adjusted"):
        np.testing.assert_allclose(once.losses[column], thrice.losses[column], rtol=1e-9, err_msg=column)
    assert (once.losses["verdict"] == thrice.losses["verdict"]).all()
    # the replaced method: a percentile bootstrap over slices of the mean slice score
    widths = []
    for result in (once, thrice):
        run = next(r for r in result.runs if r.info["attack_loss"] == "bce" and r.info["eps"] == 0.05)
        per_slice = np.nanmean(run.slices["adv_dice"], axis=1)
        rows = np.random.default_rng(0).integers(0, per_slice.size, (2000, per_slice.size))
        low, high = statistics.percentile_interval(per_slice[rows].mean(1), 0.95)
        widths.append(high - low)
    assert widths[1] / widths[0] == pytest.approx(1 / math.sqrt(3), abs=0.08)


def test_two_units_give_no_interval_and_no_verdict(tmp_path):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000}, n_units=2, slices_per_unit=8)
    result = pipeline(attacks, cards)
    assert result.summary["n_units"].eq(2).all()
    assert result.summary["adv_dice_ci_low"].isna().all() and result.summary["diff_ci_high"].isna().all()
    assert (result.losses["verdict"] == "too few independent units (n = 2)").all()
    assert (result.losses["stronger"] == "").all()
    text = comparisons.attack_losses_markdown(result.losses, result.settings, "case")
    assert "too few independent units (n = 2)" in text and "too few units for a verdict in 2" in text


# --- paired comparisons of attack losses -------------------------------------------------------

def test_loss_comparison_pairs_units_and_averages_seeds_first(tmp_path):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000, "FPN-resnet34": 23_000_000}, n_units=7,
                                  seeds=(1, 2), epsilons=(0.05,))
    result = pipeline(attacks, cards)
    row = result.losses[result.losses["model"] == "FPN-resnet34"].iloc[0]
    assert row["n_units"] == 7 and row["n_replicates"] == 2   # 7 units, not 14 pseudo-replicates
    cell = result.units[(result.units["model"] == "FPN-resnet34") & (result.units["attack"] == "fgsm")]
    wide = cell.pivot_table(index=["unit", "seed"], columns="attack_loss", values="adv_dice")
    by_hand = (wide["bce"] - wide["dicefocal"]).groupby(level="unit").mean().to_numpy()
    expected = statistics.sign_flip_test(by_hand, 0.05, 1000)
    assert (row["effect"], row["ci_low"], row["ci_high"], row["p"]) == pytest.approx(
        (expected.effect, expected.ci_low, expected.ci_high, expected.p))
    assert row["effect"] == pytest.approx(row["adv_a"] - row["adv_b"])
    np.testing.assert_allclose(result.losses["p_adjusted"], statistics.adjust(result.losses["p"], "holm"))


def test_verdict_needs_the_adjusted_p_and_the_interval(tmp_path):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000}, n_units=10, epsilons=(0.01, 0.05),
                                  bce_effect=0.1)
    result = pipeline(attacks, cards)
    assert (result.losses["verdict"] == "dicefocal stronger").all()   # BCE lowers Dice less: weaker
    assert (result.losses["ci_low"] > 0).all() and (result.losses["p_adjusted"] < 0.05).all()
    # 10 units: the smallest p is 2/1024; Holm over the 2 rows doubles it, far below 0.05 ...
    few = pipeline(*random_study(tmp_path / "few", {"Unet-resnet18": 14_000_000}, n_units=6, bce_effect=0.1))
    # ... but with 6 units the smallest p is 2/64 = 0.031: Holm over 2 rows makes it 0.0625, no verdict
    np.testing.assert_allclose(few.losses["p"], 2 / 64)
    np.testing.assert_allclose(few.losses["p_adjusted"], 2 * 2 / 64)
    assert (few.losses["verdict"] == comparisons.NO_DIFFERENCE).all()
    unadjusted = pipeline(*random_study(tmp_path / "few", {"Unet-resnet18": 14_000_000}, n_units=6, bce_effect=0.1),
                          settings(multiplicity="none"))
    assert (unadjusted.losses["verdict"] == "dicefocal stronger").all()
    text = comparisons.attack_losses_markdown(few.losses, few.settings, "case")
    assert "bce stronger than dicefocal in 0 of 2 rows after adjustment; dicefocal stronger in 0" in text


def test_families_can_be_one_model(tmp_path):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000, "FPN-resnet34": 23_000_000}, n_units=6)
    result = pipeline(attacks, cards, settings(family="model"))
    for _, group in result.losses.groupby("model"):
        np.testing.assert_allclose(group["p_adjusted"], statistics.adjust(group["p"], "holm"))


# --- worst case, replicates ----------------------------------------------------------------------

def test_worst_case_mixes_runs_slice_by_slice(tmp_path):
    card = write_card(tmp_path, "Unet-resnet18", 1_000_000, 1)
    clean = scores(np.array([[0.8, NAN], [0.6, 0.4], [NAN, NAN], [1.0, 0.8]]))
    first = scores(np.array([[0.1, NAN], [0.6, 0.4], [NAN, NAN], [0.9, 0.9]]), study=[0.8, 0.2, 1.0, 0.1])
    second = scores(np.array([[0.5, NAN], [0.2, 0.2], [NAN, NAN], [0.5, 0.5]]), study=[0.3, 0.4, 0.0, 0.6])
    paths = [write_attack(tmp_path, "Unet-resnet18", 1, "fgsm", "bce", 0.01, clean, first, [0, 1, 2, 3]),
             write_attack(tmp_path, "Unet-resnet18", 1, "pgd", "bce", 0.01, clean, second, [0, 1, 2, 3])]
    loaded = runs.load_runs(paths, [card])
    (worst,) = runs.worst_case_runs(loaded)
    np.testing.assert_allclose(worst.slices["adv_dice"], [[0.1, NAN], [0.2, 0.2], [NAN, NAN], [0.5, 0.5]])
    np.testing.assert_allclose(worst.slices["adv_dice_study"], [0.3, 0.2, 0.0, 0.1])
    assert worst.info["worst_of"] == "fgsm/bce;pgd/bce"
    summary = pipeline(paths, [card], settings(min_units=2)).summary
    row = summary[summary["attack"] == "worst"].iloc[0]
    assert row["adv_dice"] == pytest.approx(np.mean([0.1, 0.2, 0.5]))        # one slice per unit: unit means
    assert row["adv_dice_study"] == pytest.approx(np.mean([0.3, 0.2, 0.1]))  # unit 2 has no organ
    assert summary["attack"].tolist()[-1] == "worst"


def test_replicate_table_pools_units_of_every_fold_and_averages_seeds(tmp_path):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000}, n_units=4, seeds=(1, 2), folds=(0, 1),
                                  epsilons=(0.05,))
    result = pipeline(attacks, cards, settings(min_units=4))
    rows = result.replicates[result.replicates["attack"] == "fgsm"]
    assert (rows["n_units"] == 8).all() and (rows["n_replicates"] == 4).all()
    assert rows.iloc[0]["seeds"] == "1;2" and rows.iloc[0]["folds"] == "0;1"
    cell = result.units[(result.units["attack"] == "fgsm") & (result.units["attack_loss"] == rows.iloc[0]["attack_loss"])]
    assert rows.iloc[0]["adv_dice_mean"] == pytest.approx(cell.groupby(["fold", "unit"])["adv_dice"].mean().mean())
    per_replicate = result.summary[(result.summary["attack"] == "fgsm")
                                   & (result.summary["attack_loss"] == rows.iloc[0]["attack_loss"])]
    assert rows.iloc[0]["adv_dice_sd"] == pytest.approx(per_replicate["adv_dice"].std(ddof=1))
    assert rows.iloc[0]["adv_dice_ci_low"] < rows.iloc[0]["adv_dice_mean"] < rows.iloc[0]["adv_dice_ci_high"]


# --- the size question ---------------------------------------------------------------------------

def size_points(params_and_success, clean=0.7):
    rows = [{"model": f"M{i}", "params": p, "attack": "fgsm", "attack_loss": "bce", "variant": "standard",
             "eps": 0.02, "diff_mean": s, "clean_dice_mean": clean if not isinstance(clean, list) else clean[i]}
            for i, (p, s) in enumerate(params_and_success)]
    return pd.DataFrame(rows)


def test_four_ordered_models_give_an_exact_p_and_no_verdict():
    table = size.size_table(size_points([(1e6, 0.1), (2e6, 0.2), (4e6, 0.3), (8e6, 0.5)]), settings())
    (row,) = table.itertuples()
    assert row.spearman == pytest.approx(1.0) and row.spearman_p == pytest.approx(1 / 12)
    assert row.verdict == "too few models (n = 4)"


def test_size_rows_leave_out_untrained_models_and_say_what_could_be_detected():
    success = [(10 ** (6 + i / 4), 0.3 + 0.01 * ((i * 7) % 5)) for i in range(12)]
    clean = [0.7] * 11 + [0.1]
    table = size.size_table(size_points(success, clean), settings(negligible_correlation=0.3))
    (row,) = table.to_dict(orient="records")
    assert row["n_models"] == 11 and row["excluded"] == "M11"
    assert row["detectable_rho"] == pytest.approx(correlations.detectable_correlation(11, 0.05))
    assert row["verdict"].startswith("inconclusive (only |ρ| ≥")
    strong = size.size_table(size_points([(10 ** (6 + i / 4), 0.1 + 0.05 * i) for i in range(12)]), settings())
    assert strong.iloc[0]["verdict"] == size.MORE
    with pytest.raises(ValueError, match="report.correlation_eps = 0.5"):
        size.size_table(size_points(success), settings(correlation_eps=0.5))


# --- the claims page -----------------------------------------------------------------------------

def test_claims_page_states_units_and_names_the_ablation_that_flips_a_verdict(tmp_path):
    models = {f"Unet-m{i}": 2 ** i * 1_000_000 for i in range(3)}
    attacks, cards = random_study(tmp_path, models, n_units=10, epsilons=(0.02, 0.05),
                                  variants=("standard", "study-study-channels"), bce_effect=0.1)
    result = pipeline(attacks, cards)
    judgements = claims.judge_all(result.units, result.replicates, result.settings)
    page = claims.claims_markdown(judgements, result.settings, result.units, "case")
    assert "**Independent units:** case; n = 10" in page
    vulnerable = judgements[(0, "standard")][0]
    assert vulnerable.verdict.startswith("holds") and all(r["effect"] > 0 for r in vulnerable.rows)
    bce_standard, flips = judgements[(2, "standard")]
    assert bce_standard.verdict.startswith("contradicted: dicefocal stronger")
    assert any("attack.loss_argument_order=study" in flip and "holds" in flip for flip in flips)
    assert judgements[(2, "study")][0].verdict.startswith("holds: bce stronger")
    assert judgements[(1, "standard")][0].verdict.startswith("cannot tell: too few models (n = 3)")
    assert "| BCE beats the training loss |" in page


def test_claims_of_the_template_say_its_slabs_are_one_brain(tmp_path):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000}, n_units=2)
    result = pipeline(attacks, cards, settings(correlation_eps=0.01))
    judgements = claims.judge_all(result.units, result.replicates, result.settings)
    unit = "slab of the one MNI152 template brain"
    page = claims.claims_markdown(judgements, result.settings, result.units, unit)
    assert f"{unit}; n = 2" in page and "one template brain, not independent subjects" in page
    assert "so no test here can reach 0.05" in page
    assert "cannot tell: too few independent units (n = 2)" in page


# --- transfer and sanity -------------------------------------------------------------------------

def test_transfer_table_reads_rows_and_adds_white_box_rows(tmp_path):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000, "FPN-resnet34": 23_000_000}, n_units=3,
                                  epsilons=(0.05,))
    summary = pipeline(attacks, cards).summary
    rows = [{"source_model": "Unet-resnet18", "target_model": "FPN-resnet34", "fold": 0, "seed": 1, "attack": "fgsm",
             "attack_loss": "bce", "variant": "standard", "eps": 0.05, "clean_dice": 0.7, "adv_dice": 0.6,
             "diff": 0.1 / 0.7, "clean_dice_study": 0.8, "adv_dice_study": 0.4, "diff_dice_study": 0.5}]
    path = tmp_path / "transfer.json"
    path.write_text(json.dumps(rows))
    table = tables.transfer_table([path], summary, None)
    assert list(table.columns) == list(tables.TRANSFER_COLUMNS)
    cross = table[~table["white_box"]].iloc[0]
    assert cross["diff"] == pytest.approx(0.1 / 0.7) and cross["diff_dice_study"] == pytest.approx(0.5)
    assert sorted(table[table["white_box"]]["target_model"]) == ["FPN-resnet34", "Unet-resnet18"]
    with pytest.raises(ValueError, match="report.transfer_eps"):
        tables.transfer_table([path], summary, 0.01)
    path.write_text(json.dumps([{"source_model": "x"}]))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*row 0 lacks"):
        tables.transfer_table([path], summary, None)


def test_sanity_checks_flag_by_hand():
    replicates = pd.DataFrame([("M", "fgsm", "bce", "standard", 0.1, 0.8, 0.5), ("M", "fgsm", "bce", "standard", 0.3, 0.8, 0.6),
                               ("M", "pgd", "bce", "standard", 0.1, 0.8, 0.6), ("M", "pgd", "bce", "standard", 0.3, 0.8, 0.05)],
                              columns=["model", "attack", "attack_loss", "variant", "eps", "clean_dice_mean", "adv_dice_mean"])
    transfer = pd.DataFrame([
        {"source_model": "M", "target_model": "M", "white_box": True, "attack": "pgd", "attack_loss": "bce",
         "variant": "standard", "eps": 0.3, "adv_dice": 0.05},
        {"source_model": "N", "target_model": "M", "white_box": False, "attack": "pgd", "attack_loss": "bce",
         "variant": "standard", "eps": 0.3, "adv_dice": 0.02}])
    run = runs.AttackRun({"model": "M", "attack": "pgd", "attack_loss": "bce", "variant": "standard", "eps": 0.3,
                          "seed": 1, "fold": 0}, {}, "x", [2.0, 1.5])
    checks = sanity.sanity_checks(replicates, [run], transfer, "dice").set_index(["check", "attack", "eps"], drop=False)
    iterative = checks.loc[("iterative ≥ single-step", "pgd", 0.1)]
    assert (iterative["status"], iterative["value"], iterative["reference"]) == ("flag", pytest.approx(0.2),
                                                                                 pytest.approx(0.3))
    monotone = checks[checks["check"] == "monotone in eps"].set_index("attack")
    assert monotone.loc["fgsm", "status"] == "flag" and "from eps 0.1 to 0.3" in monotone.loc["fgsm", "note"]
    near = checks[checks["check"] == "largest eps near 0"].set_index("attack")
    assert near.loc["fgsm", "status"] == "flag" and near.loc["pgd", "status"] == "pass"
    (transfer_row,) = checks[checks["check"] == "white-box ≥ transfer"].itertuples()
    assert transfer_row.status == "flag" and transfer_row.value == pytest.approx(0.02)
    (loss_row,) = checks[checks["check"] == "loss increases"].itertuples()
    assert loss_row.status == "flag"
    assert "1 pass, 1 flagged." in sanity.sanity_markdown(checks.reset_index(drop=True), "dice")


# --- bad input names the file --------------------------------------------------------------------

def test_bad_or_unmatched_files_name_the_file(tmp_path):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000, "FPN-resnet34": 23_000_000}, n_units=3,
                                  epsilons=(0.05,))
    with pytest.raises(ValueError, match="no model card for FPN-resnet34 seed 1 fold 0"):
        runs.load_runs(attacks, [c for c in cards if "FPN" not in str(c)])
    with pytest.raises(ValueError, match="duplicates"):
        runs.load_runs(attacks + attacks[:1], cards)
    record = json.loads(attacks[0].read_text())
    del record["attack_loss"]
    attacks[0].write_text(json.dumps(record))
    with pytest.raises(ValueError, match=re.escape(str(attacks[0])) + ".*attack_loss"):
        runs.load_runs(attacks, cards)
    records.slices_path(attacks[1]).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(records.slices_path(attacks[1])))):
        runs.load_runs(attacks[1:], cards)
    cards[0].write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(cards[0]))):
        runs.load_runs(attacks[2:], cards)


def test_units_must_agree_within_a_fold_and_name_one_dataset(tmp_path):
    card = write_card(tmp_path, "Unet-resnet18", 1_000_000, 1)
    clean = scores(np.full((4, 2), 0.8))
    first = write_attack(tmp_path, "Unet-resnet18", 1, "fgsm", "bce", 0.01, clean, clean, [0, 0, 1, 1])
    other = write_attack(tmp_path, "Unet-resnet18", 1, "fgsm", "dicefocal", 0.01, clean, clean, [0, 1, 1, 1])
    with pytest.raises(ValueError, match="units differ from .* of the same fold 0"):
        runs.load_runs([first, other], [card])
    other = write_attack(tmp_path, "Unet-resnet18", 1, "fgsm", "dicefocal", 0.01, clean, clean, [0, 0, 1, 1],
                         unit="volume")
    with pytest.raises(ValueError, match="unit 'volume', but .* has 'case'"):
        runs.load_runs([first, other], [card])


# --- the command -----------------------------------------------------------------------------------

def test_aggregate_command_writes_every_output(tmp_path, monkeypatch):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000, "FPN-resnet34": 23_000_000,
                                             "Unet-resnet50": 32_000_000}, n_units=6, epsilons=(0.01, 0.03),
                                  methods=("fgsm", "pgd"))
    logged = {}

    def fake_log(tracking, params, metrics, artifacts):
        logged.update(params=params, metrics=metrics, artifacts=artifacts)
        return "run-123"

    monkeypatch.setattr(aggregate, "log_aggregate_run", fake_log)
    examples = [write_example(path.with_name(path.name.replace(".json", ".example.npz")))
                for path in attacks if path.name == "eps_0.03.json" and "fgsm" in path.parts]
    out = tmp_path / "out"
    outputs = {flag.lstrip("-").replace("-", "_"): out / flag.lstrip("-") for flag, _ in aggregate.OUTPUTS}
    report = {key: value for key, value in vars(settings(metric="dice_study", correlation_eps=0.03,
                                                         transfer_eps=0.03)).items() if key != "training_loss"}
    args = Namespace(tracking=tmp_path / "tracking.json", attacks=attacks, cards=cards, transfers=[], certificates=[],
                     examples=examples, settings=json.dumps(report), training_loss="dicefocal", **outputs)
    aggregate.run(args)
    for name, path in outputs.items():
        if name != "examples_dir":
            assert path.stat().st_size > 0, name
    assert sorted(p.name for p in (out / "examples-dir").iterdir()) == ["FPN-resnet34.png", "Unet-resnet18.png",
                                                                       "Unet-resnet50.png"]
    page = (out / "claims-md").read_text()
    assert "**Independent units:** case; n = 6" in page and "## 3. BCE beats the training loss" in page
    assert "Scores are `dice_study`" in (out / "losses-md").read_text()
    assert logged["params"]["unit"] == "case" and logged["params"]["n_units"] == 6
    assert logged["params"]["multiplicity"] == "holm" and logged["params"]["correlation_eps"] == 0.03
    assert json.loads((out / "run-record").read_text())["mlflow_run_id"] == "run-123"
    assert sorted(p.name for p in out.iterdir()) == sorted(path.name for path in outputs.values())  # no temporaries
    args.settings = json.dumps({**report, "n_bootstrap": 10})
    with pytest.raises(ValueError, match="report.n_bootstrap"):
        aggregate.run(args)
    args.settings = json.dumps({**report, "multiplicity": "bonferoni"})
    with pytest.raises(ValueError, match="report.multiplicity"):
        aggregate.run(args)


def test_examples_are_grouped_by_model_and_labelled_by_their_attack_result(tmp_path):
    attacks, cards = random_study(tmp_path, {"Unet-resnet18": 14_000_000}, n_units=3, epsilons=(0.01,),
                                  methods=("fgsm", "pgd"))
    loaded = runs.load_runs(attacks, cards)
    examples = [path.with_name("eps_0.01.example.npz") for path in attacks]
    grouped = runs.examples_by_model(loaded, examples)
    assert sorted(grouped["Unet-resnet18"]) == ["fgsm/bce", "fgsm/dicefocal", "pgd/bce", "pgd/dicefocal"]
    stray = tmp_path / "eps_0.01.example.npz"
    with pytest.raises(ValueError, match=re.escape(f"{stray}: no attack result beside it")):
        runs.examples_by_model(loaded, [stray])


def test_markdown_cells_keep_their_pipes_inside():
    from advseg.report import markdown

    assert markdown.row(["|ρ| ≥ 0.5", "x"]) == "| \\|ρ\\| ≥ 0.5 | x |"
    assert markdown.interval(0.1, -math.inf, math.inf) == "+0.100 [−∞, +∞]"
    assert markdown.format_params(14_328_883) == "14.3M"
