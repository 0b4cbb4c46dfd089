"""advseg aggregate: comparison tables and plots over every model, loss and eps."""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.commands import add_tracking_argument

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_tracking_argument(parser)
    parser.add_argument("--attacks", type=Path, nargs="+", required=True, help="score files of 'advseg attack'")
    parser.add_argument("--cards", type=Path, nargs="+", required=True, help="model cards of 'advseg checkpoint'")
    parser.add_argument("--grids", type=Path, nargs="*", default=[], help="example figures to log with the run")
    parser.add_argument("--correlation-eps", type=float, required=True)
    parser.add_argument("--summary-csv", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--correlation-plot", type=Path, required=True)
    parser.add_argument("--dice-plot", type=Path, required=True)
    parser.add_argument("--run-record", type=Path, required=True, help="JSON naming the MLflow run")


def run(args) -> None:
    import mlflow

    from advseg import plots, summary
    from advseg.jobs import write_json
    from advseg.tracking import Tracking, mlflow_run

    tracking = Tracking.load(args.tracking)
    records = summary.load_records(args.attacks, args.cards)
    correlations = summary.correlation(records, args.correlation_eps)
    summary.write_summary_csv(records, args.summary_csv)
    summary.write_loss_comparison_markdown(records, args.markdown)
    plots.plot_param_correlation(records, args.correlation_eps, args.correlation_plot)
    plots.plot_dice_vs_eps(records, args.dice_plot)

    with mlflow_run(tracking, "aggregate", {"stage": "aggregate"}) as run:
        mlflow.log_params({"n_models": records["model"].nunique(), "correlation_eps": args.correlation_eps,
                           "attack_losses": ",".join(sorted(records["attack_loss"].unique())),
                           "epsilons": ",".join(f"{e:g}" for e in sorted(records["eps"].unique()))})
        for row in correlations.itertuples():
            mlflow.log_metrics({f"{row.attack_loss}_pearson_r": row.pearson_r,
                                f"{row.attack_loss}_spearman_rho": row.spearman_rho})
        for path in (args.summary_csv, args.markdown):
            mlflow.log_artifact(str(path), artifact_path="tables")
        for path in (args.correlation_plot, args.dice_plot):
            mlflow.log_artifact(str(path), artifact_path="plots")
        for path in args.grids:
            mlflow.log_artifact(str(path), artifact_path="plots/examples")
        write_json(args.run_record, {"mlflow_run_id": run.info.run_id,
                                     "correlations": correlations.to_dict(orient="records")})
    log.info("%d results of %d models -> %s", len(records), records["model"].nunique(), args.summary_csv)
