"""Benchmark: the report's one pass (load -> unit scores -> statistics -> tables, claims, plots).

Times each phase of ``advseg aggregate`` in this process, without MLflow, on the attack results
of a finished run (``--results results/zoo``) or, by default, on a synthetic set of the zoo's
size: 24 models x (fgsm, pgd) x (bce, dicefocal) x 3 eps, 7 units of 4 slices, written as the
attack job writes them. The target: under 60 s with 10,000 resamples on 2 CPU cores.

Run: ``python benchmarks/aggregate_cost.py [--results DIR] [--resamples 10000]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from advseg import records
from advseg.report import claims, comparisons, plots, runs, sanity, size, tables, units
from advseg.report.settings import ReportSettings
from advseg.settings import from_mapping

CLASSES = ["grey_matter", "white_matter", "other_brain"]


def synthetic(root: Path, models: int, units_per_fold: int, slices_per_unit: int) -> tuple[list[Path], list[Path]]:
    """Attack JSONs, per-slice scores and model cards of a zoo-sized run with random Dice."""
    rng = np.random.default_rng(0)
    attacks, cards = [], []
    unit_of_slice = np.repeat(np.arange(units_per_fold), slices_per_unit)
    for m in range(models):
        name, params = f"Net-m{m}", int(10 ** rng.uniform(5.5, 7.8))
        card = root / "models" / name / "model_card.json"
        card.parent.mkdir(parents=True)
        card.write_text(json.dumps({"arch": "Net", "encoder": f"m{m}", "model": name, "params": params, "fold": 0,
                                    "seed": 42}))
        cards.append(card)
        clean = np.clip(rng.normal(0.6, 0.1, (len(unit_of_slice), len(CLASSES))), 0, 1)
        for method in ("fgsm", "pgd"):
            for loss in ("bce", "dicefocal"):
                for eps in (0.01, 0.02, 0.05):
                    adv = np.clip(clean * (1 - rng.uniform(0, 8 * eps, clean.shape)), 0, 1)
                    path = root / "attacks" / name / method / loss / f"eps_{eps}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps({"arch": "Net", "encoder": f"m{m}", "model": name, "fold": 0, "seed": 42,
                                                "attack": method, "attack_loss": loss, "eps": eps, "linf": eps,
                                                "l2": 1.0, "loss_history": [1.0, 2.0] if method == "pgd" else []}))
                    records.write_slice_scores(records.slices_path(path), _scores(clean), _scores(adv), CLASSES,
                                               unit_of_slice, "slab")
                    attacks.append(path)
    return attacks, cards


def _scores(dice: np.ndarray) -> dict:
    return {"dice": dice, "iou": dice * 0.9, "hd95": (1 - dice) * 10, "nsd": dice, "dice_study": dice.mean(1),
            "has_organ": np.ones(len(dice), bool)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, help="a finished run's results_dir (default: a synthetic zoo)")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.results:
            attacks = sorted(args.results.glob("attacks/**/eps_*.json"))
            cards = sorted(args.results.glob("models/*/fold_*/seed_*/model_card.json"))
            source = str(args.results)
        else:
            attacks, cards = synthetic(scratch, args.models, units_per_fold=7, slices_per_unit=4)
            source = f"synthetic: {args.models} models, 7 units x 4 slices"
        eps = sorted({json.loads(p.read_text())["eps"] for p in attacks})
        report = from_mapping(ReportSettings, {"n_bootstrap": args.resamples, "correlation_eps": eps[len(eps) // 2],
                                               "transfer_eps": eps[len(eps) // 2]}, "report",
                              training_loss="dicefocal")
        phases, started = [], time.perf_counter()

        def phase(name, function, *inputs):
            start = time.perf_counter()
            result = function(*inputs)
            phases.append((name, time.perf_counter() - start))
            return result

        loaded = phase("load and check", runs.load_runs, attacks, cards)
        every = loaded + phase("worst case per slice", runs.worst_case_runs, loaded)
        table = phase("unit scores", units.unit_table, every)
        summary = phase("summary table", tables.summary_table, every, table, report)
        replicates = phase("replicate table", tables.replicate_table, table, summary, report)
        phase("loss comparisons", comparisons.loss_comparisons, table, report)
        size_table = phase("size question", size.size_table, replicates, report)
        judgements = phase("claims", claims.judge_all, table, replicates, report)
        phase("claims page", claims.claims_markdown, judgements, report, table, runs.unit_kind(loaded))
        phase("sanity checks", sanity.sanity_checks, replicates, loaded, tables.transfer_table([], summary, None),
              report.metric)
        points = size.model_points(replicates, report.metric, report.correlation_eps, report.min_clean_score)
        phase("size plot", plots.plot_size, points, size_table, report.metric, report.correlation_eps,
              scratch / "size.png")
        phase("dice vs eps plot", plots.plot_dice_vs_eps, replicates, report.metric, scratch / "dice.png")
        total = time.perf_counter() - started
    print(f"{source}; {len(attacks)} attack results, {table.shape[0]} (run, unit) rows, "
          f"{args.resamples} resamples\n")
    print("| phase | seconds |\n|---|---:|")
    for name, seconds in phases:
        print(f"| {name} | {seconds:.2f} |")
    print(f"| **total** | **{total:.2f}** |")


if __name__ == "__main__":
    main()
