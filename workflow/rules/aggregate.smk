rule aggregate:
    """The claims page, tables with unit-level intervals and adjusted tests, the size question, transfer,
    sanity checks and figures; one MLflow run."""
    input:
        attacks=attack_results("json"),
        slices=attack_results("slices.npz"),
        cards=model_cards(),
        transfers=transfer_results(),
        examples=example_files(),
        certificates=certificates(),
        tracking=TRACKING_FILE,
    output:
        claims=report(f"{RESULTS}/claims.md", caption="../report/claims.rst", category="Claims"),
        summary=report(f"{RESULTS}/tables/attack_summary.csv", caption="../report/attack_summary.rst",
                       category="Tables"),
        replicates=f"{RESULTS}/tables/attack_summary_replicates.csv",
        losses_md=report(f"{RESULTS}/tables/attack_losses.md", caption="../report/attack_losses.rst",
                         category="Tables"),
        losses_csv=f"{RESULTS}/tables/attack_losses.csv",
        ablation=report(f"{RESULTS}/tables/ablation.md", caption="../report/ablation.rst", category="Tables"),
        size_csv=f"{RESULTS}/tables/size.csv",
        size_md=report(f"{RESULTS}/tables/size.md", caption="../report/size.rst", category="Tables"),
        robustness_csv=f"{RESULTS}/tables/robustness.csv",
        robustness_md=report(f"{RESULTS}/tables/robustness.md", caption="../report/robustness.rst",
                             category="Defenses"),
        certified_csv=f"{RESULTS}/tables/certified.csv",
        certified_md=report(f"{RESULTS}/tables/certified.md", caption="../report/certified.rst", category="Defenses"),
        transfer_csv=f"{RESULTS}/tables/transfer.csv",
        sanity_md=report(f"{RESULTS}/tables/sanity.md", caption="../report/sanity.rst", category="Tables"),
        sanity_csv=f"{RESULTS}/tables/sanity.csv",
        size_plot=report(f"{RESULTS}/plots/param_size_correlation.png",
                         caption="../report/param_size_correlation.rst", category="Plots"),
        dice=report(f"{RESULTS}/plots/dice_vs_eps.png", caption="../report/dice_vs_eps.rst", category="Plots"),
        loss_curve=report(f"{RESULTS}/plots/loss_curve.png", caption="../report/loss_curve.rst", category="Plots"),
        transfer=report(f"{RESULTS}/plots/transfer.png", caption="../report/transfer.rst", category="Plots"),
        tradeoff=report(f"{RESULTS}/plots/defense_tradeoff.png", caption="../report/defense_tradeoff.rst",
                        category="Defenses"),
        certified=report(f"{RESULTS}/plots/certified_dice.png", caption="../report/certified.rst",
                         category="Defenses"),
        run_record=f"{RESULTS}/mlflow/aggregate_run.json",
        grids=[
            report(path, caption="../report/example_grid.rst", category="Examples", labels={"model": model})
            for model, path in example_grids().items()
        ],
    params:
        settings=as_json("report", correlation_eps=float(CORRELATION_EPS), transfer_eps=float(TRANSFER_EPS)),
        training_loss=config["training"]["loss"],
        examples_dir=lambda wildcards, output: Path(output.grids[0]).parent,
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg aggregate --tracking {input.tracking} --attacks {input.attacks} --cards {input.cards}"
        " --transfers {input.transfers} --examples {input.examples} --certificates {input.certificates}"
        " --settings {params.settings:q}"
        " --training-loss {params.training_loss}"
        " --claims-md {output.claims} --summary-csv {output.summary} --replicates-csv {output.replicates}"
        " --losses-md {output.losses_md} --losses-csv {output.losses_csv} --ablation-md {output.ablation}"
        " --size-csv {output.size_csv} --size-md {output.size_md} --transfer-csv {output.transfer_csv}"
        " --robustness-csv {output.robustness_csv} --robustness-md {output.robustness_md}"
        " --certified-csv {output.certified_csv} --certified-md {output.certified_md}"
        " --tradeoff-plot {output.tradeoff} --certified-plot {output.certified}"
        " --sanity-md {output.sanity_md} --sanity-csv {output.sanity_csv} --size-plot {output.size_plot}"
        " --dice-plot {output.dice} --loss-plot {output.loss_curve} --transfer-plot {output.transfer}"
        " --examples-dir {params.examples_dir} --run-record {output.run_record} 2> {log}"
