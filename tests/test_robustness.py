"""Defenses in the report: judged by the strongest attack that applies, against their undefended twin."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from report_data import scores, settings, write_attack, write_card

from advseg import records, statistics
from advseg.report import robustness, runs, sanity, tables, units

N_UNITS, SLICES = 8, 2
TWIN = "Unet-resnet18"
ENSEMBLE = "Ensemble-mean+ensemble"


def defended_study(root, rng_seed=0):
    """An undefended model and four defenses of it, attacked at one eps with every attack that applies.

    pgd_at: attacked scores 0.3 higher than the twin's, clean 0.05 lower; smoothing: EOT 0.1 stronger
    than one draw; quantization: plain gradients barely hurt, BPDA hurts as much as on the twin
    (gradient masking); ensemble: the undefended models' mean plus 0.1 under attack.
    """
    rng = np.random.default_rng(rng_seed)
    unit_of = np.repeat(np.arange(N_UNITS), SLICES)
    base = np.clip(rng.normal(0.8, 0.05, (len(unit_of), 2)), 0, 1)
    attacked = np.clip(base - 0.4 + rng.normal(0, 0.02, base.shape), 0, 1)

    def write(model, method, clean, adv, defense="none", twin=None, loss="bce"):
        return write_attack(root, model, 1, method, loss, 0.05, scores(clean), scores(adv), unit_of, defense=defense,
                            twin=twin)

    attacks = [write(TWIN, "pgd", base, attacked), write(TWIN, "fgsm", base, attacked + 0.05)]
    attacks += [write(f"{TWIN}+pgd_at", "pgd", base - 0.05, attacked + 0.3, "pgd_at", TWIN),
                write(f"{TWIN}+pgd_at", "transfer", base - 0.05, attacked + 0.35, "pgd_at", TWIN)]
    attacks += [write(f"{TWIN}+smoothing", "pgd", base, attacked + 0.2, "smoothing", TWIN),
                write(f"{TWIN}+smoothing", "pgd+eot", base, attacked + 0.1, "smoothing", TWIN)]
    attacks += [write(f"{TWIN}+quantization", "pgd", base, base - 0.02, "quantization", TWIN),
                write(f"{TWIN}+quantization", "pgd+bpda", base, attacked, "quantization", TWIN)]
    attacks += [write(ENSEMBLE, "pgd", base, attacked + 0.1, "ensemble", "none")]
    cards = [write_card(root, model, 10_000_000, 1) for model in
             (TWIN, f"{TWIN}+pgd_at", f"{TWIN}+smoothing", f"{TWIN}+quantization", ENSEMBLE)]
    return attacks, cards


def loaded(root):
    attacks, cards = defended_study(root)
    every = runs.load_runs(attacks, cards)
    every += runs.worst_case_runs(every)
    table = units.unit_table(every)
    return every, table


def test_each_defense_is_judged_by_its_worst_case_against_its_twin(tmp_path):
    every, table = loaded(tmp_path)
    report = robustness.robustness_table(table, settings())
    rows = report.set_index("model")
    assert rows.loc[TWIN, "defense"] == "none" and pd.isna(rows.loc[TWIN, "gain"])
    at = rows.loc[f"{TWIN}+pgd_at"]
    # its worst case takes, slice by slice, the lower of pgd and transfer: pgd (+0.3, not +0.35)
    assert at["attacks"] == "pgd/bce;transfer/bce"
    twin_worst = table[(table.model == TWIN) & (table.attack == "worst")].set_index("unit")["adv_dice"]
    own_worst = table[(table.model == f"{TWIN}+pgd_at") & (table.attack == "worst")].set_index("unit")["adv_dice"]
    expected = statistics.sign_flip_test((own_worst - twin_worst).to_numpy(), 0.05, 1000)
    assert (at["gain"], at["gain_p"]) == pytest.approx((expected.effect, expected.p))
    assert at["gain"] == pytest.approx(0.3, abs=0.01) and at["gain_verdict"] == "helps under attack"
    assert at["cost"] == pytest.approx(-0.05, abs=1e-9) and at["cost_verdict"] == "lowers the clean score"
    np.testing.assert_allclose(report["gain_p_adjusted"].dropna(),
                               statistics.adjust(report["gain_p"].dropna().to_numpy(), "holm"))
    # the smoothed model is judged by EOT, the stronger; quantization by BPDA, which undoes its masking
    assert rows.loc[f"{TWIN}+smoothing", "gain"] == pytest.approx(0.1, abs=0.01)
    assert rows.loc[f"{TWIN}+quantization", "gain"] == pytest.approx(0.0, abs=0.01)
    assert rows.loc[f"{TWIN}+quantization", "gain_verdict"] == "no significant difference"
    # the ensemble's twin is the undefended models' mean (here the one undefended model)
    assert rows.loc[ENSEMBLE, "twin"] == "none" and rows.loc[ENSEMBLE, "gain"] == pytest.approx(0.1, abs=0.01)
    page = robustness.robustness_markdown(report, settings(), "case")
    assert "| Unet-resnet18+pgd_at | pgd_at | 0.05 | 8 |" in page and "helps under attack" in page


def test_sanity_flags_masking_and_checks_eot(tmp_path):
    every, table = loaded(tmp_path)
    summary = tables.summary_table(every, table, settings())
    replicates = tables.replicate_table(table, summary, settings())
    checks = sanity.sanity_checks(replicates, [r for r in every if r.info["attack"] != "worst"],
                                  tables.transfer_table([], summary, None), "dice")
    eot = checks[checks["check"] == "EOT ≥ plain gradient"]
    assert len(eot) == 1 and eot.iloc[0]["status"] == "pass" and eot.iloc[0]["model"] == f"{TWIN}+smoothing"
    masking = checks[checks["check"] == "no gradient masking"].set_index("model")
    assert masking.loc[f"{TWIN}+quantization", "status"] == "flag"
    assert "quantization masks gradients" in masking.loc[f"{TWIN}+quantization", "note"]
    assert masking.loc[f"{TWIN}+pgd_at", "status"] == "pass"   # transfer weaker than its own gradients
    iterative = checks[checks["check"] == "iterative ≥ single-step"]
    assert set(iterative["attack"]) == {"pgd"}, "transfer and adapted attacks are not compared with FGSM"


def test_certified_dice_is_a_mean_over_units_per_radius(tmp_path):
    paths = []
    for seed, shift in ((1, 0.0), (2, 0.1)):
        certified = np.array([[0.9, 0.5], [0.7, 0.3], [0.8, 0.4], [0.6, 0.2], [0.5, 0.1], [0.4, 0.0]]) + shift
        path = tmp_path / f"seed_{seed}" / "certificate.npz"
        records.write_certificate(path, "Unet-resnet18+smoothing", 0, seed, ["a", "b"],
                                  np.array([0, 0, 1, 1, 2, 2]), "case", np.array([0.0, 0.25]), certified,
                                  np.full(6, 0.1 * seed))
        paths.append(path)
    table = robustness.certified_table([records.read_certificate(p) for p in paths], settings(min_units=2))
    first = table[table.radius == 0.0].iloc[0]
    # seed 1 per unit: 0.8, 0.7, 0.45; seed 2 the same + 0.1: the mean over units of the seeds' mean is 0.70
    assert first["certified_dice"] == pytest.approx(0.70) and first["n_units"] == 3
    assert first["ci_low"] <= 0.70 <= first["ci_high"] and first["abstain_rate"] == pytest.approx(0.15)
    assert table[table.radius == 0.25].iloc[0]["certified_dice"] == pytest.approx(0.30)
    assert "| Unet-resnet18+smoothing | 0.25 | 3 |" in robustness.certified_markdown(table, settings(), "case")
    arrays = dict(np.load(paths[0]))
    arrays["certified_dice"] = arrays["certified_dice"][:, :1]
    np.savez(paths[0], **arrays)
    with pytest.raises(ValueError, match=re.escape(str(paths[0])) + ": certified_dice has shape"):
        records.read_certificate(paths[0])
