rule download:
    """Prepare the dataset once: memory-mappable slices, masks and the split of every fold to run."""
    output:
        directory(f"{RESULTS}/data/{{dataset}}"),
    params:
        settings=as_json("data"),
    log:
        f"{RESULTS}/logs/download/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{dataset}}.tsv"
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg download --settings {params.settings:q} --out {output} 2> {log}"


rule tracking:
    """Create the MLflow store and experiment once, before jobs log runs in parallel."""
    output:
        TRACKING_FILE,
    params:
        tracking_uri=TRACKING_URI,
        experiment=config["mlflow"]["experiment"],
        artifact_dir=f"{RESULTS}/mlflow/artifacts",
    log:
        f"{RESULTS}/logs/tracking.log",
    benchmark:
        f"{RESULTS}/benchmarks/tracking.tsv"
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg tracking --tracking-uri {params.tracking_uri:q} --experiment {params.experiment:q}"
        " --artifact-dir {params.artifact_dir} --out {output} 2> {log}"
