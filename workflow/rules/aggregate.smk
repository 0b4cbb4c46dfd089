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
    """Comparison tables with confidence intervals, paired tests, correlations, sanity checks; one MLflow run."""
    input:
        attacks=attack_results("json"),
        slices=attack_results("slices.npz"),
        cards=model_cards(),
        transfer=transfer_results(),
        grids=example_grids(),
        tracking=rules.tracking.output[0],
    output:
        csv=report(
            f"{RESULTS}/tables/attack_summary.csv",
            caption="../report/attack_summary.rst",
            category="Tables",
        ),
        markdown=report(
            f"{RESULTS}/tables/attack_losses.md",
            caption="../report/attack_losses.rst",
            category="Tables",
        ),
        correlation=report(
            f"{RESULTS}/plots/param_size_correlation.png",
            caption="../report/param_size_correlation.rst",
            category="Plots",
        ),
        dice=report(
            f"{RESULTS}/plots/dice_vs_eps.png",
            caption="../report/dice_vs_eps.rst",
            category="Plots",
        ),
        run_record=f"{RESULTS}/mlflow/aggregate_run.json",
    params:
        correlation_eps=CORRELATION_EPS,
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg aggregate --attacks {input.attacks} --cards {input.cards} --grids {input.grids}"
        " --correlation-eps {params.correlation_eps} --tracking {input.tracking}"
        " --summary-csv {output.csv} --markdown {output.markdown} --correlation-plot {output.correlation}"
        " --dice-plot {output.dice} --run-record {output.run_record} 2> {log}"
