rule aggregate:
    """Tables with confidence intervals, paired loss tests, correlations, transfer, sanity checks, example
    figures; one MLflow run."""
    input:
        attacks=attack_results("json"),
        slices=attack_results("slices.npz"),
        cards=model_cards(),
        transfers=transfer_results(),
        examples=example_files(),
        tracking=TRACKING_FILE,
    output:
        summary=report(f"{RESULTS}/tables/attack_summary.csv", caption="../report/attack_summary.rst",
                       category="Tables"),
        replicates=f"{RESULTS}/tables/attack_summary_replicates.csv",
        losses_md=report(f"{RESULTS}/tables/attack_losses.md", caption="../report/attack_losses.rst",
                         category="Tables"),
        losses_csv=f"{RESULTS}/tables/attack_losses.csv",
        ablation=report(f"{RESULTS}/tables/ablation.md", caption="../report/ablation.rst", category="Tables"),
        correlation_csv=f"{RESULTS}/tables/correlation.csv",
        transfer_csv=f"{RESULTS}/tables/transfer.csv",
        sanity_md=report(f"{RESULTS}/tables/sanity.md", caption="../report/sanity.rst", category="Tables"),
        sanity_csv=f"{RESULTS}/tables/sanity.csv",
        correlation=report(f"{RESULTS}/plots/param_size_correlation.png",
                           caption="../report/param_size_correlation.rst", category="Plots"),
        dice=report(f"{RESULTS}/plots/dice_vs_eps.png", caption="../report/dice_vs_eps.rst", category="Plots"),
        loss_curve=report(f"{RESULTS}/plots/loss_curve.png", caption="../report/loss_curve.rst", category="Plots"),
        transfer=report(f"{RESULTS}/plots/transfer.png", caption="../report/transfer.rst", category="Plots"),
        run_record=f"{RESULTS}/mlflow/aggregate_run.json",
        grids=[
            report(path, caption="../report/example_grid.rst", category="Examples", labels={"model": model})
            for model, path in example_grids().items()
        ],
    params:
        metric=config["report"]["metric"],
        correlation_eps=CORRELATION_EPS,
        transfer_eps=TRANSFER_EPS,
        n_bootstrap=config["report"]["n_bootstrap"],
        seed=config["report"]["seed"],
        examples_dir=lambda wildcards, output: Path(output.grids[0]).parent,
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg aggregate --tracking {input.tracking} --attacks {input.attacks} --cards {input.cards}"
        " --transfers {input.transfers} --examples {input.examples} --metric {params.metric}"
        " --correlation-eps {params.correlation_eps} --transfer-eps {params.transfer_eps}"
        " --n-bootstrap {params.n_bootstrap} --seed {params.seed}"
        " --summary-csv {output.summary} --replicates-csv {output.replicates} --losses-md {output.losses_md}"
        " --losses-csv {output.losses_csv} --ablation-md {output.ablation} --correlation-csv {output.correlation_csv}"
        " --transfer-csv {output.transfer_csv} --sanity-md {output.sanity_md} --sanity-csv {output.sanity_csv}"
        " --correlation-plot {output.correlation} --dice-plot {output.dice} --loss-plot {output.loss_curve}"
        " --transfer-plot {output.transfer} --examples-dir {params.examples_dir} --run-record {output.run_record} 2> {log}"
