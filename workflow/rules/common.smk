import json
import re
import shlex
import sys
from itertools import product
from pathlib import Path

from snakemake.exceptions import WorkflowError

from advseg.catalog import build_cache_path
from advseg.jobs import write_file_list
from advseg.config import correlation_eps, eps_label, tracking_file, tracking_uri, transfer_eps, validate_config
from advseg.grid import (ENSEMBLE, TRANSFER, attack_jobs, defended_specs, job_settings, model_attack_jobs, model_specs,
                         replicates, transfer_models)

try:
    validate_config(config, build_cache=build_cache_path())
except ValueError as error:
    raise WorkflowError(f"invalid config: {error}") from None

RESULTS = config["results_dir"]
MODELS = model_specs(config)                # the configured models, undefended
ALL_MODELS = defended_specs(config)         # and every <model>+<defense> of the defenses axis, the ensemble
ATTACK = config["attack"]
ATTACK_JOBS = attack_jobs(config)
MODEL_JOBS = {name: model_attack_jobs(config, spec, ATTACK_JOBS) for name, spec in ALL_MODELS.items()}
EPS_LABELS = [eps_label(eps) for eps in ATTACK["epsilons"]]
CORRELATION_EPS = eps_label(correlation_eps(config))
TRANSFER_EPS = eps_label(transfer_eps(config))
TRANSFER_SOURCES, TRANSFER_TARGETS = transfer_models(config)
if workflow.is_main_process and config["transfer"]["sources"] is None and not TRANSFER_SOURCES:
    print(f"transfer: none, as the grid's {len(MODELS)} models are more than transfer.all_pairs_up_to "
          f"({config['transfer']['all_pairs_up_to']}); name transfer.sources and transfer.targets to replay some",
          file=sys.stderr)
PREPARED_DATA = f"{RESULTS}/data/{config['data']['name']}"
TRACKING_URI = tracking_uri(config)

MODEL_DIR = f"{RESULTS}/models/{{model}}/fold_{{fold}}/seed_{{seed}}"
# plain paths, not rules.<name>.output: Snakemake's check of rule dependencies hashes every
# input list once per input file, which made planning a 100-model grid quadratic in its inputs
TRACKING_FILE = str(tracking_file(config))
CHECKPOINT = {"model": f"{MODEL_DIR}/model.safetensors", "card": f"{MODEL_DIR}/model_card.json"}
PERTURBATION_LIST = f"{RESULTS}/transfer/fold_{{fold}}/seed_{{seed}}/perturbations.json"
ATTACK_DIR = f"{RESULTS}/attacks/{{model}}/fold_{{fold}}/seed_{{seed}}/{{method}}/{{variant}}/{{attack_loss}}"


def one_of(values):
    return "|".join(re.escape(str(value)) for value in values)


wildcard_constraints:
    model=one_of(ALL_MODELS),
    fold=one_of(config["data"]["folds_to_run"]),
    seed=one_of(config["seeds"]),
    method=one_of({job.label for jobs in MODEL_JOBS.values() for job in jobs}),
    variant=one_of({job.variant.label for jobs in MODEL_JOBS.values() for job in jobs}),
    attack_loss=one_of(ATTACK["losses"]),
    eps=one_of(EPS_LABELS),


def per_replicate(pattern, models=ALL_MODELS, **wildcards):
    """``pattern`` filled in for every model x fold x seed, and every value of a list in ``wildcards``.

    str.format, not expand(): a large grid's aggregate job has thousands of inputs."""
    lists = {key: value if isinstance(value, list) else [value] for key, value in wildcards.items()}
    return [pattern.format(model=name, fold=fold, seed=seed, **dict(zip(lists, values)))
            for name, spec in models.items() for fold, seed in replicates(config, spec)
            for values in product(*lists.values())]


def per_attack(pattern, **wildcards):
    """``pattern`` expanded for every model x replicate x its attack jobs (method, variant, attack loss)."""
    return [path for name, jobs in MODEL_JOBS.items() for job in jobs
            for path in per_replicate(pattern, {name: ALL_MODELS[name]}, method=job.label,
                                      variant=job.variant.label, attack_loss=job.attack_loss, **wildcards)]


def attack_outputs(kind):
    """One file of ``kind`` ('json', 'slices.npz', 'example.npz') per eps of one attack job."""
    return expand(f"{ATTACK_DIR}/eps_{{eps}}.{kind}", eps=EPS_LABELS, allow_missing=True)


def attack_job(wildcards):
    """The attack job a path of the attack rule names."""
    return next(job for job in MODEL_JOBS[wildcards.model] if (job.label, job.variant.label, job.attack_loss)
                == (wildcards.method, wildcards.variant, wildcards.attack_loss))


def attack_settings(wildcards):
    """The method's settings and the variant, as JSON for `advseg attack --settings`."""
    return json.dumps(job_settings(config, attack_job(wildcards)), sort_keys=True)


def twin_checkpoint(wildcards):
    """The undefended twin's checkpoint, for the transfer from it to its defended model."""
    if wildcards.method != TRANSFER:
        return {}
    return {"twin": CHECKPOINT["model"].format(model=ALL_MODELS[wildcards.model].twin, fold=wildcards.fold,
                                               seed=wildcards.seed)}


def trained_or_imported(wildcards):
    """A trained model's best epoch, or the checkpoint the config imports (quantization: its twin's)."""
    spec = ALL_MODELS[wildcards.model]
    if spec.checkpoint:
        return {"weights": spec.checkpoint}
    trained = spec.twin if spec.defense == "quantization" else wildcards.model
    run = f"{RESULTS}/models/{trained}/fold_{wildcards.fold}/seed_{wildcards.seed}/train"
    return {"weights": f"{run}/best.safetensors", "history": f"{run}/history.json"}


def model_options(spec):
    """How `advseg train` and `advseg checkpoint` are told which model to build."""
    options = f"--arch {spec.arch} --encoder {spec.encoder} --in-channels {spec.in_channels} --key {shlex.quote(spec.key)}"
    return options + (f" --encoder-weights {spec.encoder_weights}" if spec.encoder_weights and not spec.checkpoint else "")


def defense_options(spec):
    """How `advseg train` and `advseg checkpoint` are told the model's defense and its twin."""
    chosen = json.dumps(config["defense"].get(spec.defense, {}), sort_keys=True)
    return f"--defense {spec.defense} --defense-settings {shlex.quote(chosen)} --twin {spec.twin or spec.name}"


def replicate_perturbations(wildcards):
    """Every transfer source's perturbations of one fold and seed (each attack job writes one)."""
    fold, seed = int(wildcards.fold), int(wildcards.seed)
    return [f"{RESULTS}/attacks/{name}/fold_{fold}/seed_{seed}/{job.label}/{job.variant.label}/"
            f"{job.attack_loss}/transfer.npz"
            for name in TRANSFER_SOURCES if (fold, seed) in replicates(config, MODELS[name]) for job in ATTACK_JOBS]


def attack_results(kind):
    """Every attack job's per-eps files of ``kind`` ('json' or 'slices.npz')."""
    return per_attack(f"{ATTACK_DIR}/eps_{{eps}}.{kind}", eps=EPS_LABELS)


def model_cards():
    return per_replicate(f"{MODEL_DIR}/model_card.json")


def certificates():
    """One certificate per replicate of every smoothed model."""
    smoothed = {name: spec for name, spec in ALL_MODELS.items() if spec.defense == "smoothing"}
    return per_replicate(f"{RESULTS}/certified/{{model}}/fold_{{fold}}/seed_{{seed}}/certificate.npz", smoothed)


def transfer_results():
    """One transfer table per target and replicate that holds a source other than the target."""
    sources = {replicate: {name for name in TRANSFER_SOURCES if replicate in replicates(config, MODELS[name])}
               for name in MODELS for replicate in replicates(config, MODELS[name])}
    return [f"{RESULTS}/transfer/{name}/fold_{fold}/seed_{seed}.json"
            for name in TRANSFER_TARGETS for fold, seed in replicates(config, MODELS[name])
            if sources[fold, seed] - {name}]


def example_files():
    """Per model, its example slice under each method x attack loss at the correlation eps: first
    replicate, first variant."""
    variant = ATTACK_JOBS[0].variant.label
    return [f"{RESULTS}/attacks/{name}/fold_{fold}/seed_{seed}/{job.method}/{variant}/{job.attack_loss}/"
            f"eps_{CORRELATION_EPS}.example.npz"
            for name, spec in MODELS.items() for fold, seed in replicates(config, spec)[:1]
            for job in ATTACK_JOBS if job.variant.label == variant]


def example_grids():
    return {name: f"{RESULTS}/plots/examples/{name}.png" for name in MODELS}


def final_outputs():
    return rules.aggregate.output


def as_json(section, **extra):
    """A config section as JSON for an `advseg` command's --settings."""
    return json.dumps({**config[section], **extra}, sort_keys=True)
