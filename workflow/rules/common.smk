import json

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from advseg.config import check_config, correlation_eps, eps_label

validate(config, "../schemas/config.schema.yaml")
try:
    check_config(config)
except ValueError as error:
    raise WorkflowError(f"invalid config: {error}")

RESULTS = "results"
MODELS = config["models"]
ATTACK = config["attack"]
EPS_LABELS = [eps_label(eps) for eps in ATTACK["epsilons"]]
CORRELATION_EPS = eps_label(correlation_eps(config))
PREPARED_DATA = f"{RESULTS}/data/{config['data']['name']}.npz"


wildcard_constraints:
    arch="[A-Za-z0-9]+",
    encoder="[A-Za-z0-9_.-]+",
    attack_loss="|".join(ATTACK["losses"]),
    eps="|".join(label.replace(".", r"\.") for label in EPS_LABELS),


def per_model(pattern, **wildcards):
    """``pattern`` expanded for every configured architecture x encoder (and ``wildcards``)."""
    return [path for m in MODELS for path in expand(pattern, arch=m["arch"], encoder=m["encoder"], **wildcards)]


def attack_scores():
    pattern = f"{RESULTS}/attacks/{{arch}}/{{encoder}}/{{attack_loss}}/eps_{{eps}}.json"
    return per_model(pattern, attack_loss=ATTACK["losses"], eps=EPS_LABELS)


def example_inputs(wildcards):
    """The example slice of each attack loss at the correlation eps, for one model."""
    return {
        loss: f"{RESULTS}/attacks/{wildcards.arch}/{wildcards.encoder}/{loss}/eps_{CORRELATION_EPS}.npz"
        for loss in ATTACK["losses"]
    }


def example_grids():
    return per_model(f"{RESULTS}/plots/examples/{{arch}}/{{encoder}}.png")


def model_cards():
    return per_model(f"{RESULTS}/checkpoints/{{arch}}/{{encoder}}/model_card.json")


def final_outputs():
    return [
        f"{RESULTS}/tables/attack_summary.csv",
        f"{RESULTS}/tables/attack_losses.md",
        f"{RESULTS}/plots/param_size_correlation.png",
        f"{RESULTS}/plots/dice_vs_eps.png",
        f"{RESULTS}/mlflow/aggregate_run.json",
        *example_grids(),
    ]


def as_json(section, **extra):
    """A config section as JSON for an `advseg` command's --settings."""
    return json.dumps({**config[section], **extra}, sort_keys=True)
