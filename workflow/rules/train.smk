rule train:
    """Train one model on one fold with one seed (with its training defense, if any); the best epoch on the
    inner validation split is kept."""
    wildcard_constraints:
        model=one_of(name for name, spec in ALL_MODELS.items() if spec.trains),
    input:
        data=PREPARED_DATA,
        tracking=TRACKING_FILE,
    output:
        weights=f"{MODEL_DIR}/train/best.safetensors",
        history=f"{MODEL_DIR}/train/history.json",
    params:
        model=lambda wildcards: model_options(ALL_MODELS[wildcards.model]),
        defense=lambda wildcards: defense_options(ALL_MODELS[wildcards.model]),
        settings=as_json("training"),
        resume_state=f"{MODEL_DIR}/train/resume.pt",
    log:
        f"{RESULTS}/logs/train/{{model}}/fold_{{fold}}/seed_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{model}}/fold_{{fold}}/seed_{{seed}}.tsv"
    # every model in training before attacks start: the attacks then fill the cores to the end
    priority: 1
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg train --name {wildcards.model} {params.model} {params.defense} --data {input.data}"
        " --fold {wildcards.fold} --seed {wildcards.seed} --settings {params.settings:q}"
        " --tracking {input.tracking} --weights {output.weights} --history {output.history}"
        " --resume-state {params.resume_state} --threads {threads} 2> {log}"


rule checkpoint:
    """Export the weights (safetensors) with a model card of clean scores on the held-out fold (a defended
    model's: quantization wraps its twin's weights, smoothing scores the majority vote)."""
    wildcard_constraints:
        model=one_of(name for name in ALL_MODELS if name != ENSEMBLE),
    input:
        unpack(trained_or_imported),
        data=PREPARED_DATA,
        tracking=TRACKING_FILE,
    output:
        model=CHECKPOINT["model"],
        card=CHECKPOINT["card"],
    params:
        source=lambda wildcards, input: (
            f"--history {input.history}" if "history" in input.keys() else model_options(ALL_MODELS[wildcards.model])
        ),
        defense=lambda wildcards: defense_options(ALL_MODELS[wildcards.model]),
    log:
        f"{RESULTS}/logs/checkpoint/{{model}}/fold_{{fold}}/seed_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/checkpoint/{{model}}/fold_{{fold}}/seed_{{seed}}.tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg checkpoint --name {wildcards.model} --weights {input.weights} {params.source} {params.defense}"
        " --data {input.data} --fold {wildcards.fold} --seed {wildcards.seed} --tracking {input.tracking}"
        " --model-out {output.model} --card-out {output.card} --threads {threads} 2> {log}"


rule ensemble:
    """The ensemble of defense.ensemble.models as one checkpoint, with a model card of its clean scores."""
    input:
        members=lambda wildcards: [CHECKPOINT["card"].format(model=name, fold=wildcards.fold, seed=wildcards.seed)
                                   for name in ALL_MODELS[ENSEMBLE].members],
        weights=lambda wildcards: [CHECKPOINT["model"].format(model=name, fold=wildcards.fold, seed=wildcards.seed)
                                   for name in ALL_MODELS[ENSEMBLE].members],
        data=PREPARED_DATA,
        tracking=TRACKING_FILE,
    output:
        model=CHECKPOINT["model"].replace("{model}", ENSEMBLE),
        card=CHECKPOINT["card"].replace("{model}", ENSEMBLE),
    params:
        name=ENSEMBLE,
    log:
        f"{RESULTS}/logs/checkpoint/{ENSEMBLE}/fold_{{fold}}/seed_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/checkpoint/{ENSEMBLE}/fold_{{fold}}/seed_{{seed}}.tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg checkpoint --name {params.name} --members {input.members} --defense {params.name}"
        " --data {input.data} --fold {wildcards.fold} --seed {wildcards.seed} --tracking {input.tracking}"
        " --model-out {output.model} --card-out {output.card} --threads {threads} 2> {log}"
