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


wildcard_constraints:
    arch="[A-Za-z0-9]+",
    encoder="[A-Za-z0-9_.-]+",
    attack_loss="|".join(ATTACK["losses"]),
    eps="|".join(label.replace(".", r"\.") for label in EPS_LABELS),


def per_model(pattern, **wildcards):
    """``pattern`` formatted for every configured architecture x encoder."""
    return [expand(pattern, arch=m["arch"], encoder=m["encoder"], **wildcards) for m in MODELS]


def flat(nested):
    return [path for group in nested for path in group]


def attack_outputs(extension, eps=EPS_LABELS):
    pattern = f"{RESULTS}/attacks/{{arch}}/{{encoder}}/{{attack_loss}}/eps_{{eps}}.{extension}"
    return flat(per_model(pattern, attack_loss=ATTACK["losses"], eps=eps))


def example_grids():
    return flat(per_model(f"{RESULTS}/plots/examples/{{arch}}/{{encoder}}.png"))


def model_cards():
    return flat(per_model(f"{RESULTS}/checkpoints/{{arch}}/{{encoder}}/model_card.json"))


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
