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
           ("--claims-md", "claims.md: the study's claims with the verdicts the data can carry"),
           ("--transfer-csv", "transfer.csv: perturbations of one model replayed on another"),
           ("--sanity-md", "sanity.md: checks of the attacks"),
           ("--sanity-csv", "sanity.csv: the checks as a table"),
           ("--size-plot", "param_size_correlation.png"),
           ("--dice-plot", "dice_vs_eps.png"),
           ("--loss-plot", "loss_curve.png"),
           ("--transfer-plot", "transfer.png"),
           ("--examples-dir", "folder for <model>.png, each model's example slice under every attack"),
           ("--run-record", "JSON naming the MLflow run"))


def add_arguments(parser) -> None:
    add_tracking_argument(parser)
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--attacks", type=Path, nargs="+", required=True,
                        help="eps_<eps>.json files of 'advseg attack' (the .slices.npz beside each is read too)")
    inputs.add_argument("--cards", type=Path, nargs="+", required=True, help="model cards of 'advseg checkpoint'")
    inputs.add_argument("--transfers", type=Path, nargs="*", default=[], help="transfer JSON files (lists of rows)")
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
    from dataclasses import asdict

    from advseg.jobs import write_json
    from advseg.report import claims, comparisons, plots, runs, sanity, size, tables, units
    from advseg.report.markdown import write_csv, write_text
    from advseg.report.settings import ReportSettings
    from advseg.settings import from_mapping

    settings = from_mapping(ReportSettings, args.settings, "report", training_loss=args.training_loss)
    loaded = runs.load_runs(args.attacks, args.cards)
    examples = {model: plots.load_examples(files)  # read now: a bad one stops before any output
                for model, files in runs.examples_by_model(loaded, args.examples).items()}
    unit = runs.unit_kind(loaded)
    every_run = loaded + runs.worst_case_runs(loaded)
    unit_table = units.unit_table(every_run)
    summary = tables.summary_table(every_run, unit_table, settings)
    replicates = tables.replicate_table(unit_table, summary, settings)
    losses = comparisons.loss_comparisons(unit_table, settings)
    size_points = size.model_points(replicates, settings.metric, settings.correlation_eps, settings.min_clean_score)
    size_table = size.size_table(replicates, settings)
    judgements = claims.judge_all(unit_table, replicates, settings)
    transfer = tables.transfer_table(args.transfers, summary, settings.transfer_eps)
    checks = sanity.sanity_checks(replicates, loaded, transfer, settings.metric)

    write_csv(summary, args.summary_csv)
    write_csv(replicates, args.replicates_csv)
    write_csv(losses, args.losses_csv)
    write_text(comparisons.attack_losses_markdown(losses, settings, unit), args.losses_md)
    write_text(comparisons.ablation_markdown(losses, settings, unit), args.ablation_md)
    write_csv(size_table, args.size_csv)
    write_text(size.size_markdown(size_table, settings), args.size_md)
    write_text(claims.claims_markdown(judgements, settings, unit_table, unit), args.claims_md)
    write_csv(transfer, args.transfer_csv)
    write_text(sanity.sanity_markdown(checks, settings.metric), args.sanity_md)
    write_csv(checks, args.sanity_csv)
    plots.plot_size(size_points, size_table, settings.metric, settings.correlation_eps, args.size_plot)
    plots.plot_dice_vs_eps(replicates, settings.metric, args.dice_plot)
    plots.plot_loss_curve(loaded, args.loss_plot)
    plots.plot_transfer(transfer, settings.metric, args.transfer_plot)
    grids = [args.examples_dir / f"{model}.png" for model in examples]
    for grid, figures in zip(grids, examples.values()):
        plots.plot_example_grid(figures, grid)

    params = {**asdict(settings), "unit": unit, "n_models": summary["model"].nunique(),
              "n_units": int(unit_table[["fold", "unit"]].drop_duplicates().shape[0]),
              "n_replicates": int(summary[["seed", "fold"]].drop_duplicates().shape[0]),
              "attacks": ",".join(sorted(summary["attack"].unique())),
              "attack_losses": ",".join(sorted({run.info["attack_loss"] for run in loaded})),
              "variants": ",".join(sorted({run.info["variant"] for run in loaded})),
              "epsilons": ",".join(f"{e:g}" for e in sorted(summary["eps"].unique()))}
    metrics = {"sanity_flags": int((checks["status"] == "flag").sum()),
               "loss_pairs_decided": int((losses["stronger"] != "").sum()) if not losses.empty else 0}
    for row in size_table.itertuples():
        metrics[f"{row.attack}_{row.attack_loss}_{row.variant}_spearman_rho"] = row.spearman
    artifacts = {"": [args.claims_md],
                 "tables": [args.summary_csv, args.replicates_csv, args.losses_md, args.losses_csv, args.ablation_md,
                            args.size_csv, args.size_md, args.transfer_csv, args.sanity_md, args.sanity_csv],
                 "plots": [args.size_plot, args.dice_plot, args.loss_plot, args.transfer_plot],
                 "plots/examples": grids}
    run_id = log_aggregate_run(args.tracking, params, metrics, artifacts)
    write_json(args.run_record, {"mlflow_run_id": run_id, "size": size_table.to_dict(orient="records")})
    log.info("%d results of %d models over %d units (%s); %d flagged sanity rows -> %s", len(summary),
             summary["model"].nunique(), params["n_units"], unit, metrics["sanity_flags"], args.claims_md)


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
