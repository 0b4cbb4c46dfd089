rule attack:
    """One model x method x variant x attack loss, every eps in one process: scores per eps and per slice. On a
    defended model also its adaptive attacks (pgd+eot, pgd+bpda) and the transfer from its twin."""
    input:
        unpack(twin_checkpoint),
        model=CHECKPOINT["model"],
        card=CHECKPOINT["card"],
        data=PREPARED_DATA,
        tracking=TRACKING_FILE,
    output:
        scores=attack_outputs("json"),
        slices=attack_outputs("slices.npz"),
        examples=attack_outputs("example.npz"),
        transfer=f"{ATTACK_DIR}/transfer.npz",
    params:
        settings=attack_settings,
        epsilons=" ".join(EPS_LABELS),
        transfer_eps=TRANSFER_EPS,
        out_dir=ATTACK_DIR,
        batch_size=ATTACK["batch_size"],
        adaptation=lambda wildcards, input: f"--adaptation {attack_job(wildcards).adaptation}"
        + (f" --twin-model {input.twin}" if "twin" in input.keys() else ""),
    log:
        f"{RESULTS}/logs/attack/{{model}}/fold_{{fold}}/seed_{{seed}}/{{method}}/{{variant}}/{{attack_loss}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/attack/{{model}}/fold_{{fold}}/seed_{{seed}}/{{method}}/{{variant}}/{{attack_loss}}.tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg attack --model {input.model} --card {input.card} --data {input.data} --fold {wildcards.fold}"
        " --loss {wildcards.attack_loss} --settings {params.settings:q} --epsilons {params.epsilons}"
        " --transfer-eps {params.transfer_eps} --out-dir {params.out_dir} --tracking {input.tracking}"
        " --batch-size {params.batch_size} {params.adaptation} --threads {threads} 2> {log}"


rule certify:
    """Certified Dice per radius and abstain rate of one smoothed model on the held-out slices."""
    input:
        model=CHECKPOINT["model"],
        card=CHECKPOINT["card"],
        data=PREPARED_DATA,
        tracking=TRACKING_FILE,
    output:
        f"{RESULTS}/certified/{{model}}/fold_{{fold}}/seed_{{seed}}/certificate.npz",
    params:
        batch_size=ATTACK["batch_size"],
    log:
        f"{RESULTS}/logs/certify/{{model}}/fold_{{fold}}/seed_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/certify/{{model}}/fold_{{fold}}/seed_{{seed}}.tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg certify --model {input.model} --card {input.card} --data {input.data} --fold {wildcards.fold}"
        " --tracking {input.tracking} --out {output} --batch-size {params.batch_size} --threads {threads} 2> {log}"


rule perturbations:
    """The perturbations every model of one fold and seed made at the transfer eps, listed once for
    all transfer jobs (each of them listing every file would make planning quadratic in models)."""
    input:
        replicate_perturbations,
    output:
        PERTURBATION_LIST,
    log:
        f"{RESULTS}/logs/perturbations/fold_{{fold}}/seed_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/perturbations/fold_{{fold}}/seed_{{seed}}.tsv"
    localrule: True
    run:
        write_file_list(input, output[0], log[0])


rule transfer:
    """Replay every other model's perturbations (same fold and seed, transfer eps) on one target model."""
    input:
        model=CHECKPOINT["model"],
        card=CHECKPOINT["card"],
        data=PREPARED_DATA,
        sources=PERTURBATION_LIST,
    output:
        f"{RESULTS}/transfer/{{model}}/fold_{{fold}}/seed_{{seed}}.json",
    params:
        batch_size=ATTACK["batch_size"],
    log:
        f"{RESULTS}/logs/transfer/{{model}}/fold_{{fold}}/seed_{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/transfer/{{model}}/fold_{{fold}}/seed_{{seed}}.tsv"
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/advseg.yaml"
    shell:
        "advseg transfer --model {input.model} --card {input.card} --data {input.data} --fold {wildcards.fold}"
        " --perturbation-list {input.sources} --out {output}"
        " --batch-size {params.batch_size} --threads {threads} 2> {log}"
