rule train:
    """Train one architecture x encoder; the best validation epoch's weights are kept."""
    input:
        data=PREPARED_DATA,
        tracking=rules.tracking.output[0],
    output:
        weights=f"{RESULTS}/train/{{arch}}/{{encoder}}/best.safetensors",
        history=f"{RESULTS}/train/{{arch}}/{{encoder}}/history.json",
    params:
        settings=as_json("training", seed=config["seed"]),
        resume_state=f"{RESULTS}/train/{{arch}}/{{encoder}}/resume.pt",
    log:
        f"{RESULTS}/logs/train/{{arch}}/{{encoder}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{arch}}/{{encoder}}.tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg train --arch {wildcards.arch} --encoder {wildcards.encoder} --data {input.data}"
        " --settings {params.settings:q} --tracking {input.tracking} --weights {output.weights}"
        " --history {output.history} --resume-state {params.resume_state} --threads {threads} 2> {log}"


rule checkpoint:
    """Export the best weights (safetensors) and a model card with clean validation scores."""
    input:
        weights=rules.train.output.weights,
        history=rules.train.output.history,
        data=PREPARED_DATA,
        tracking=rules.tracking.output[0],
    output:
        model=f"{RESULTS}/checkpoints/{{arch}}/{{encoder}}/model.safetensors",
        card=f"{RESULTS}/checkpoints/{{arch}}/{{encoder}}/model_card.json",
    log:
        f"{RESULTS}/logs/checkpoint/{{arch}}/{{encoder}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/checkpoint/{{arch}}/{{encoder}}.tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg checkpoint --weights {input.weights} --history {input.history} --data {input.data}"
        " --tracking {input.tracking} --model-out {output.model} --card-out {output.card}"
        " --threads {threads} 2> {log}"
