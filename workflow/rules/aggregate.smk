rule example_grid:
    """One model's example slice: image, truth, clean and attacked predictions, perturbation."""
    input:
        unpack(example_inputs),
    output:
        report(
            f"{RESULTS}/plots/examples/{{model}}.png",
            caption="../report/example_grid.rst",
            category="Examples",
            labels={"model": "{model}"},
        ),
    params:
        examples=lambda wildcards, input: " ".join(f"--example {label} {path}" for label, path in input.items()),
    log:
        f"{RESULTS}/logs/example_grid/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/example_grid/{{model}}.tsv"
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg example-grid {params.examples} --out {output} 2> {log}"


rule aggregate:
    """Tables with confidence intervals, paired loss tests, correlations, transfer, sanity checks; one MLflow run."""
    input:
        attacks=attack_results("json"),
        slices=attack_results("slices.npz"),
        cards=model_cards(),
        transfers=transfer_results(),
        grids=example_grids(),
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
    params:
        metric=config["report"]["metric"],
        correlation_eps=CORRELATION_EPS,
        transfer_eps=TRANSFER_EPS,
        n_bootstrap=config["report"]["n_bootstrap"],
        seed=config["report"]["seed"],
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg aggregate --tracking {input.tracking} --attacks {input.attacks} --cards {input.cards}"
        " --transfers {input.transfers} --grids {input.grids} --metric {params.metric}"
        " --correlation-eps {params.correlation_eps} --transfer-eps {params.transfer_eps}"
        " --n-bootstrap {params.n_bootstrap} --seed {params.seed}"
        " --summary-csv {output.summary} --replicates-csv {output.replicates} --losses-md {output.losses_md}"
        " --losses-csv {output.losses_csv} --ablation-md {output.ablation} --correlation-csv {output.correlation_csv}"
        " --transfer-csv {output.transfer_csv} --sanity-md {output.sanity_md} --sanity-csv {output.sanity_csv}"
        " --correlation-plot {output.correlation} --dice-plot {output.dice} --loss-plot {output.loss_curve}"
        " --transfer-plot {output.transfer} --run-record {output.run_record} 2> {log}"
