"""advseg aggregate: every table, statistic, sanity check and plot over all attack results.

Reads the attack JSONs (with the per-slice ``.slices.npz`` beside each), the model cards and
the transfer files; never imports torch. All outputs are named on the command line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.commands import add_tracking_argument

log = logging.getLogger(__name__)
MIN_BOOTSTRAP = 1000


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
    options = parser.add_argument_group("options (config section 'report')")
    options.add_argument("--metric", choices=("dice", "dice_study"), default="dice",
                         help="report.metric: the Dice protocol behind diff, plots, comparisons, correlations")
    options.add_argument("--correlation-eps", type=float, default=None,
                         help="report.correlation_eps (default: the largest attacked eps)")
    options.add_argument("--transfer-eps", type=float, default=None,
                         help="report.transfer_eps (default: the largest eps among the transfer rows)")
    options.add_argument("--n-bootstrap", type=int, default=MIN_BOOTSTRAP, help="report.n_bootstrap resamples")
    options.add_argument("--seed", type=int, default=0, help="report.seed: seed of every bootstrap")
    outputs = parser.add_argument_group("outputs")
    for flag, text in (("--summary-csv", "attack_summary.csv: one row per run and eps, worst case included"),
                       ("--replicates-csv", "attack_summary_replicates.csv: mean ± sd over seeds x folds"),
                       ("--losses-md", "attack_losses.md: paired comparison of attack losses"),
                       ("--losses-csv", "attack_losses.csv: the same comparisons as a table"),
                       ("--ablation-md", "ablation.md: the comparisons per attack variant"),
                       ("--correlation-csv", "correlation.csv: size and clean score vs diff"),
                       ("--transfer-csv", "transfer.csv: source x target attacked scores"),
                       ("--sanity-md", "sanity.md: checks of the attacks"),
                       ("--sanity-csv", "sanity.csv: the checks as a table"),
                       ("--correlation-plot", "param_size_correlation.png"),
                       ("--dice-plot", "dice_vs_eps.png"),
                       ("--loss-plot", "loss_curve.png"),
                       ("--transfer-plot", "transfer.png"),
                       ("--examples-dir", "folder for <model>.png, each model's example slice under every attack"),
                       ("--run-record", "JSON naming the MLflow run")):
        outputs.add_argument(flag, type=Path, required=True, help=text)


def run(args) -> None:
    from advseg import comparisons, plots, sanity, summary
    from advseg.jobs import write_json

    if args.n_bootstrap < MIN_BOOTSTRAP:
        raise ValueError(f"report.n_bootstrap: {args.n_bootstrap} resamples; use at least {MIN_BOOTSTRAP}")
    runs = summary.load_runs(args.attacks, args.cards)
    examples = {model: plots.load_examples(files)  # read now: a bad one stops before any output
                for model, files in summary.examples_by_model(runs, args.examples).items()}
    all_runs = runs + summary.worst_case_runs(runs)
    scored = summary.score_runs(all_runs, args.n_bootstrap, args.seed)
    table = summary.summary_table(scored)
    replicates = summary.replicate_table(scored)
    correlation_eps = float(table["eps"].max()) if args.correlation_eps is None else args.correlation_eps
    correlations = summary.correlation_table(replicates, args.metric, correlation_eps, args.n_bootstrap, args.seed)
    losses = comparisons.loss_comparisons(runs, args.metric, args.n_bootstrap, args.seed)
    transfer = summary.transfer_table(args.transfers, table, args.transfer_eps)
    checks = sanity.sanity_checks(replicates, runs, transfer, args.metric)

    summary.write_csv(table, args.summary_csv)
    summary.write_csv(replicates, args.replicates_csv)
    summary.write_csv(losses, args.losses_csv)
    summary.write_text(comparisons.attack_losses_markdown(losses, args.metric), args.losses_md)
    summary.write_text(comparisons.ablation_markdown(losses, args.metric), args.ablation_md)
    summary.write_csv(correlations, args.correlation_csv)
    summary.write_csv(transfer, args.transfer_csv)
    summary.write_text(sanity.sanity_markdown(checks, args.metric), args.sanity_md)
    summary.write_csv(checks, args.sanity_csv)
    plots.plot_param_correlation(replicates, correlations, args.metric, correlation_eps, args.correlation_plot)
    plots.plot_dice_vs_eps(replicates, args.metric, args.dice_plot)
    plots.plot_loss_curve(runs, args.loss_plot)
    plots.plot_transfer(transfer, args.metric, args.transfer_plot)
    grids = [args.examples_dir / f"{model}.png" for model in examples]
    for grid, loaded in zip(grids, examples.values()):
        plots.plot_example_grid(loaded, grid)

    params = {"metric": args.metric, "correlation_eps": correlation_eps, "transfer_eps": args.transfer_eps,
              "n_bootstrap": args.n_bootstrap, "bootstrap_seed": args.seed, "n_models": table["model"].nunique(),
              "n_replicates": int(table[["seed", "fold"]].drop_duplicates().shape[0]),
              "attacks": ",".join(sorted(table["attack"].unique())),
              "attack_losses": ",".join(sorted(runs_column(runs, "attack_loss"))),
              "variants": ",".join(sorted(runs_column(runs, "variant"))),
              "epsilons": ",".join(f"{e:g}" for e in sorted(table["eps"].unique()))}
    metrics = {}
    for row in correlations.itertuples():
        name = f"{row.attack}_{row.attack_loss}_{row.variant}_{row.x}"
        metrics.update({f"{name}_pearson_r": row.pearson_r, f"{name}_spearman_rho": row.spearman_rho})
    metrics["sanity_flags"] = int((checks["status"] == "flag").sum())
    metrics["loss_pairs_significant"] = int(losses["significant"].sum())
    artifacts = {"tables": [args.summary_csv, args.replicates_csv, args.losses_md, args.losses_csv, args.ablation_md,
                            args.correlation_csv, args.transfer_csv, args.sanity_md, args.sanity_csv],
                 "plots": [args.correlation_plot, args.dice_plot, args.loss_plot, args.transfer_plot],
                 "plots/examples": grids}
    run_id = log_aggregate_run(args.tracking, params, metrics, artifacts)
    write_json(args.run_record, {"mlflow_run_id": run_id, "correlations": correlations.to_dict(orient="records")})
    log.info("%d results of %d models (%d flagged sanity rows) -> %s", len(table), table["model"].nunique(),
             metrics["sanity_flags"], args.summary_csv)


def runs_column(runs, name: str) -> set[str]:
    return {str(run.info[name]) for run in runs}


def log_aggregate_run(tracking_file: Path, params: dict, metrics: dict, artifacts: dict[str, list[Path]]) -> str:
    """Log the one MLflow "aggregate" run; every MLflow call of this step lives here."""
    import math

    from advseg.tracking import Tracking, job_run

    tracking = Tracking.load(tracking_file)
    with job_run(tracking, "aggregate", {"stage": "aggregate"}) as run:
        run.log_params({key: "" if value is None else value for key, value in params.items()})
        run.log_metrics({key: float(value) for key, value in metrics.items() if not math.isnan(float(value))})
        for folder, paths in artifacts.items():
            for path in paths:
                run.log_artifact(path, artifact_path=folder)
        return run.run_id
