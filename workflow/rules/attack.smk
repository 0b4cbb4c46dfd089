rule gradient:
    """sign(grad) of one attack loss, computed once and shared by every eps."""
    input:
        model=rules.checkpoint.output.model,
        card=rules.checkpoint.output.card,
        data=PREPARED_DATA,
        tracking=rules.tracking.output[0],
    output:
        temp(f"{RESULTS}/gradients/{{arch}}/{{encoder}}/{{attack_loss}}.npz"),
    params:
        batch_size=ATTACK["batch_size"],
    log:
        f"{RESULTS}/logs/gradient/{{arch}}/{{encoder}}/{{attack_loss}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gradient/{{arch}}/{{encoder}}/{{attack_loss}}.tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg gradient --model {input.model} --card {input.card} --data {input.data}"
        " --loss {wildcards.attack_loss} --tracking {input.tracking} --out {output}"
        " --batch-size {params.batch_size} --threads {threads} 2> {log}"


rule attack:
    """FGSM at one eps; clean vs attacked Dice/IoU on the validation slices."""
    input:
        model=rules.checkpoint.output.model,
        card=rules.checkpoint.output.card,
        data=PREPARED_DATA,
        gradient=rules.gradient.output[0],
        tracking=rules.tracking.output[0],
    output:
        scores=f"{RESULTS}/attacks/{{arch}}/{{encoder}}/{{attack_loss}}/eps_{{eps}}.json",
        example=f"{RESULTS}/attacks/{{arch}}/{{encoder}}/{{attack_loss}}/eps_{{eps}}.npz",
    params:
        method=ATTACK["method"],
        batch_size=ATTACK["batch_size"],
    log:
        f"{RESULTS}/logs/attack/{{arch}}/{{encoder}}/{{attack_loss}}/eps_{{eps}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/attack/{{arch}}/{{encoder}}/{{attack_loss}}/eps_{{eps}}.tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg attack --model {input.model} --card {input.card} --data {input.data}"
        " --gradient {input.gradient} --method {params.method} --eps {wildcards.eps}"
        " --tracking {input.tracking} --out {output.scores} --example {output.example}"
        " --batch-size {params.batch_size} --threads {threads} 2> {log}"
