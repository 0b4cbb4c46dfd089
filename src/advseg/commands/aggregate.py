"""advseg aggregate: one pass from attack results to tables, claims and plots.

load (every file checked before any output) -> unit scores -> statistics -> tables, the claims
page and plots, each written whole; one MLflow run. Never imports torch.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from advseg.commands import add_tracking_argument

log = logging.getLogger(__name__)
OUTPUTS = (("--summary-csv", "attack_summary.csv: one row per model, replicate, attack, loss, variant and eps"),
           ("--replicates-csv", "attack_summary_replicates.csv: means over replicates with hierarchical intervals"),
           ("--losses-md", "attack_losses.md: each pair of attack losses, tested over units"),
           ("--losses-csv", "attack_losses.csv: the same as a table"),
           ("--ablation-md", "ablation.md: the loss verdicts per attack variant"),
           ("--size-csv", "size.csv: does model size predict attack success"),
           ("--size-md", "size.md: the same for a reader"),
           ("--robustness-csv", "robustness.csv: each defended model against its undefended twin"),
           ("--robustness-md", "robustness.md: the same for a reader"),
           ("--certified-csv", "certified.csv: certified Dice of smoothed models per radius"),
           ("--certified-md", "certified.md: the same for a reader"),
           ("--claims-md", "claims.md: the study's claims with the verdicts the data can carry"),
           ("--transfer-csv", "transfer.csv: perturbations of one model replayed on another"),
           ("--sanity-md", "sanity.md: checks of the attacks"),
           ("--sanity-csv", "sanity.csv: the checks as a table"),
           ("--size-plot", "param_size_correlation.png"),
           ("--dice-plot", "dice_vs_eps.png"),
           ("--loss-plot", "loss_curve.png"),
           ("--transfer-plot", "transfer.png"),
           ("--tradeoff-plot", "defense_tradeoff.png: clean against worst-case score, defended and undefended"),
           ("--certified-plot", "certified_dice.png: certified Dice against radius"),
           ("--examples-dir", "folder for <model>.png, each model's example slice under every attack"),
           ("--run-record", "JSON naming the MLflow run"))


def add_arguments(parser) -> None:
    add_tracking_argument(parser)
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--attacks", type=Path, nargs="+", required=True,
                        help="eps_<eps>.json files of 'advseg attack' (the .slices.npz beside each is read too)")
    inputs.add_argument("--cards", type=Path, nargs="+", required=True, help="model cards of 'advseg checkpoint'")
    inputs.add_argument("--transfers", type=Path, nargs="*", default=[], help="transfer JSON files (lists of rows)")
    inputs.add_argument("--certificates", type=Path, nargs="*", default=[],
                        help="certificate.npz files of 'advseg certify' (smoothed models)")
    inputs.add_argument("--examples", type=Path, nargs="*", default=[],
                        help="eps_<eps>.example.npz files of 'advseg attack' to draw, one figure per model; "
                             "each must sit beside one of --attacks")
    options = parser.add_argument_group("options")
    options.add_argument("--settings", required=True,
                         help="the config's report section as JSON, with correlation_eps and transfer_eps resolved")
    options.add_argument("--training-loss", required=True,
                         help="training.loss: the loss the study's claim 'BCE beats the training loss' is about")
    outputs = parser.add_argument_group("outputs")
    for flag, text in OUTPUTS:
        outputs.add_argument(flag, type=Path, required=True, help=text)


def run(args) -> None:
    from advseg import records
    from advseg.jobs import write_json
    from advseg.report import plots, runs
    from advseg.report.settings import ReportSettings
    from advseg.settings import from_mapping

    settings = from_mapping(ReportSettings, args.settings, "report", training_loss=args.training_loss)
    loaded = runs.load_runs(args.attacks, args.cards)
    # read now: a bad example or certificate stops the step before any output
    examples = {model: plots.load_examples(files)
                for model, files in runs.examples_by_model(loaded, args.examples).items()}
    certificates = [records.read_certificate(path) for path in args.certificates]
    results = analyse(loaded, certificates, args.transfers, settings)
    grids = write_outputs(args, results, examples, settings)
    params, metrics = run_summary(results, settings)
    artifacts = {"": [args.claims_md],
                 "tables": [getattr(args, name) for name in TABLES],
                 "plots": [getattr(args, name) for name in PLOTS], "plots/examples": grids}
    run_id = log_aggregate_run(args.tracking, params, metrics, artifacts)
    write_json(args.run_record, {"mlflow_run_id": run_id, "size": results["size"].to_dict(orient="records")})
    log.info("%d results of %d models over %d units (%s); %d flagged sanity rows -> %s", len(results["summary"]),
             params["n_models"], params["n_units"], results["unit"], metrics["sanity_flags"], args.claims_md)


TABLES = ("summary_csv", "replicates_csv", "losses_md", "losses_csv", "ablation_md", "size_csv", "size_md",
          "robustness_csv", "robustness_md", "certified_csv", "certified_md", "transfer_csv", "sanity_md", "sanity_csv")
PLOTS = ("size_plot", "dice_plot", "loss_plot", "transfer_plot", "tradeoff_plot", "certified_plot")


def analyse(loaded, certificates: list[dict], transfers: list[Path], settings) -> dict:
    """Every table of the report, from the loaded runs: unit scores first, then the statistics.

    The study's claims and the size question are about undefended models; defended ones are
    judged in the robustness table against their undefended twins.
    """
    from advseg.report import claims, comparisons, robustness, runs, sanity, size, tables, units

    every_run = loaded + runs.worst_case_runs(loaded)
    unit_table = units.unit_table(every_run)
    summary = tables.summary_table(every_run, unit_table, settings)
    replicates = tables.replicate_table(unit_table, summary, settings)
    undefended_units = unit_table[unit_table["defense"] == runs.UNDEFENDED]
    undefended = replicates[replicates["defense"] == runs.UNDEFENDED]
    transfer = tables.transfer_table(transfers, summary, settings.transfer_eps)
    return {"runs": loaded, "unit": runs.unit_kind(loaded), "units": unit_table, "summary": summary,
            "replicates": replicates,
            "losses": comparisons.loss_comparisons(unit_table, settings),
            "size_points": size.model_points(undefended, settings.metric, settings.correlation_eps,
                                             settings.min_clean_score),
            "size": size.size_table(undefended, settings),
            "judgements": claims.judge_all(undefended_units, undefended, settings), "claims_units": undefended_units,
            "robustness": robustness.robustness_table(unit_table, settings),
            "certified": robustness.certified_table(certificates, settings),
            "transfer": transfer, "sanity": sanity.sanity_checks(replicates, loaded, transfer, settings.metric)}


def write_outputs(args, results: dict, examples: dict, settings) -> list[Path]:
    """Every table, page and figure, each written whole; returns the example figures."""
    from advseg.report import claims, comparisons, defense_plots, plots, robustness, sanity, size
    from advseg.report.markdown import write_csv, write_text

    unit = results["unit"]
    csv = {"summary_csv": "summary", "replicates_csv": "replicates", "losses_csv": "losses", "size_csv": "size",
           "robustness_csv": "robustness", "certified_csv": "certified", "transfer_csv": "transfer",
           "sanity_csv": "sanity"}
    for flag, name in csv.items():
        write_csv(results[name], getattr(args, flag))
    write_text(comparisons.attack_losses_markdown(results["losses"], settings, unit), args.losses_md)
    write_text(comparisons.ablation_markdown(results["losses"], settings, unit), args.ablation_md)
    write_text(size.size_markdown(results["size"], settings), args.size_md)
    write_text(claims.claims_markdown(results["judgements"], settings, results["claims_units"], unit), args.claims_md)
    write_text(robustness.robustness_markdown(results["robustness"], settings, unit), args.robustness_md)
    write_text(robustness.certified_markdown(results["certified"], settings, unit), args.certified_md)
    write_text(sanity.sanity_markdown(results["sanity"], settings.metric), args.sanity_md)
    plots.plot_size(results["size_points"], results["size"], settings.metric, settings.correlation_eps,
                    args.size_plot)
    plots.plot_dice_vs_eps(results["replicates"], settings.metric, args.dice_plot)
    plots.plot_loss_curve(results["runs"], args.loss_plot)
    plots.plot_transfer(results["transfer"], settings.metric, args.transfer_plot)
    defense_plots.plot_tradeoff(results["robustness"], settings.metric, settings.correlation_eps, args.tradeoff_plot)
    defense_plots.plot_certified(results["certified"], args.certified_plot)
    grids = [args.examples_dir / f"{model}.png" for model in examples]
    for grid, figures in zip(grids, examples.values()):
        plots.plot_example_grid(figures, grid)
    return grids


def run_summary(results: dict, settings) -> tuple[dict, dict]:
    """The aggregate run's MLflow params (what was aggregated, how) and metrics (what it found)."""
    from dataclasses import asdict

    summary, losses, loaded = results["summary"], results["losses"], results["runs"]
    params = {**asdict(settings), "unit": results["unit"], "n_models": summary["model"].nunique(),
              "n_units": int(results["units"][["fold", "unit"]].drop_duplicates().shape[0]),
              "n_replicates": int(summary[["seed", "fold"]].drop_duplicates().shape[0]),
              "attacks": ",".join(sorted(summary["attack"].unique())),
              "attack_losses": ",".join(sorted({run.info["attack_loss"] for run in loaded})),
              "variants": ",".join(sorted({run.info["variant"] for run in loaded})),
              "defenses": ",".join(sorted({run.info["defense"] for run in loaded})),
              "epsilons": ",".join(f"{e:g}" for e in sorted(summary["eps"].unique()))}
    metrics = {"sanity_flags": int((results["sanity"]["status"] == "flag").sum()),
               "loss_pairs_decided": int((losses["stronger"] != "").sum()) if not losses.empty else 0}
    for row in results["size"].itertuples():
        metrics[f"{row.attack}_{row.attack_loss}_{row.variant}_spearman_rho"] = row.spearman
    return params, metrics


def log_aggregate_run(tracking_file: Path, params: dict, metrics: dict, artifacts: dict[str, list[Path]]) -> str:
    """Log the one MLflow "aggregate" run; every MLflow call of this step lives here."""
    from advseg.tracking import Tracking, job_run

    tracking = Tracking.load(tracking_file)
    with job_run(tracking, "aggregate", {"stage": "aggregate"}) as run:
        run.log_params({key: "" if value is None else value for key, value in params.items()})
        run.log_metrics({key: float(value) for key, value in metrics.items() if not math.isnan(float(value))})
        for folder, paths in artifacts.items():
            for path in paths:
                run.log_artifact(path, artifact_path=folder or None)
        return run.run_id
