"""The DAG's axes: models (and their defended twins), replicates, attack jobs and transfer pairs.

The Snakefile expands over what these functions return, from a config that
:func:`advseg.config.validate_config` has completed and checked. Imports no torch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from advseg import settings

METHODS = tuple(settings.node("attack.methods")["items"]["enum"])
# SegPGD and CosPGD weight element-wise BCE themselves: another attack loss changes nothing.
BCE_ONLY_METHODS = ("segpgd", "cospgd")
# SEA's losses (advseg.apgd) are APGD's: its masked and bounded objectives need its adaptive steps
APGD_ONLY_LOSSES = ("maskedbce", "js")
UNDEFENDED, ENSEMBLE = "none", "ensemble"
# defenses that train a model of their own (smoothing: its base, with Gaussian noise at its sigma)
TRAINED_DEFENSES = ("noise", "fast_at", "pgd_at", "smoothing")
# how a defense is attacked beyond plain gradients: its adaptive attack, as a suffix of the method
ADAPTATIONS = {"smoothing": "eot", "quantization": "bpda"}
TRANSFER = "transfer"   # the attack label of perturbations made on a defended model's undefended twin
VARIANT_CHOICES = {"step": ("standard", "study"), "loss_argument_order": ("standard", "study"),
                   "input": ("grey", "channels")}
STANDARD_VARIANT = {"step": "standard", "loss_argument_order": "standard", "input": "grey"}


@dataclass(frozen=True)
class ModelSpec:
    """One configured model: trained by the workflow, or imported from a checkpoint."""
    name: str
    arch: str
    encoder: str
    key: str                        # where it is configured, e.g. models[2], for messages
    checkpoint: str | None
    encoder_weights: str | None
    in_channels: int
    defense: str = UNDEFENDED
    twin: str | None = None         # the undefended model a defended one is judged against
    members: tuple[str, ...] = ()   # the ensemble's undefended models

    @property
    def trains(self) -> bool:
        """Whether the workflow trains this model (undefended or with a training defense) from scratch."""
        return self.checkpoint is None and self.defense in (UNDEFENDED, *TRAINED_DEFENSES)


@dataclass(frozen=True)
class Variant:
    """How the perturbation is made beyond the method: the study's options."""
    step: str
    loss_argument_order: str
    input: str

    @property
    def label(self) -> str:
        """'standard' for the standard attack, else step-order-input, e.g. 'study-study-channels'."""
        if self.__dict__ == STANDARD_VARIANT:
            return "standard"
        return f"{self.step}-{self.loss_argument_order}-{self.input}"


@dataclass(frozen=True)
class AttackJob:
    method: str
    variant: Variant
    attack_loss: str
    adaptation: str = "plain"   # plain, eot or bpda (ADAPTATIONS), or transfer: made on the twin with method

    @property
    def label(self) -> str:
        """The attack's name in paths and tables: 'pgd', 'pgd+eot', 'transfer'."""
        if self.adaptation == TRANSFER:
            return TRANSFER
        return self.method if self.adaptation == "plain" else f"{self.method}+{self.adaptation}"


def model_spec(model: dict[str, Any], index: int) -> ModelSpec:
    return ModelSpec(name=model.get("name") or f"{model['arch']}-{model['encoder']}", arch=model["arch"],
                     encoder=model["encoder"], key=f"models[{index}]", checkpoint=model["checkpoint"],
                     encoder_weights=model["encoder_weights"], in_channels=model["in_channels"])


def model_specs(config: dict[str, Any]) -> dict[str, ModelSpec]:
    """Configured models by name, in config order."""
    return {spec.name: spec for spec in (model_spec(model, index) for index, model in enumerate(config["models"]))}


def defended_specs(config: dict[str, Any]) -> dict[str, ModelSpec]:
    """Every model of the ``defenses`` axis by name: the configured (undefended) ones first, which always
    run as twins, then ``<model>+<defense>`` per defense and model, and the ensemble.

    Training defenses apply to the models the workflow trains; an imported checkpoint gets the
    inference-time ones (quantization, ensemble)."""
    undefended = model_specs(config)
    found = dict(undefended)
    for defense in config["defenses"]:
        if defense == ENSEMBLE:
            members = tuple(config["defense"][ENSEMBLE]["models"] or undefended)
            found[ENSEMBLE] = ModelSpec(ENSEMBLE, ENSEMBLE, "+".join(members), "defense.ensemble", None, None,
                                        undefended[members[0]].in_channels, ENSEMBLE, None, members)
        elif defense != UNDEFENDED:
            for spec in undefended.values():
                if defense not in TRAINED_DEFENSES or not spec.checkpoint:
                    found[f"{spec.name}+{defense}"] = replace(spec, name=f"{spec.name}+{defense}", defense=defense,
                                                              twin=spec.name)
    return found


def replicates(config: dict[str, Any], spec: ModelSpec) -> list[tuple[int, int]]:
    """(fold, seed) pairs a model is trained and attacked in.

    An imported checkpoint is trained once, elsewhere: it is scored on every fold but
    only under the first seed, so repeated seeds do not count it twice (nor does an
    ensemble with such a member).
    """
    imported = spec.checkpoint or (spec.members and any(model_specs(config)[name].checkpoint for name in spec.members))
    seeds = config["seeds"][:1] if imported else config["seeds"]
    return [(fold, seed) for fold in config["data"]["folds_to_run"] for seed in seeds]


def methods(config: dict[str, Any]) -> list[str]:
    """attack.method (a one-method shorthand) wins over attack.methods."""
    attack = config["attack"]
    return [attack["method"]] if attack.get("method") else list(attack["methods"])


def job_settings(config: dict[str, Any], job: AttackJob) -> dict[str, Any]:
    """One attack job's part of the attack section: its method, the method's settings and the
    variant (what ``advseg attack --settings`` takes)."""
    eot = {"eot": config["attack"]["eot"]} if job.adaptation == "eot" else {}
    return {"method": job.method, job.method: config["attack"][job.method], **job.variant.__dict__, **eot}


STUDY_VARIANT = Variant("study", "study", "channels")


def variants(config: dict[str, Any]) -> list[Variant]:
    """The product of attack.step x loss_argument_order x input, and the study's own attack when
    attack.study_protocol asks for it (so that claims.md can judge the study's protocol)."""
    attack = config["attack"]
    found = [Variant(*values) for values in itertools.product(*(as_list(attack[key]) for key in VARIANT_CHOICES))]
    if attack["study_protocol"] and STUDY_VARIANT not in found:
        found.append(STUDY_VARIANT)
    return found


def attack_jobs(config: dict[str, Any]) -> list[AttackJob]:
    """Every method x variant x attack loss that makes sense; each is one attack job per model."""
    jobs = []
    for method in methods(config):
        for variant in variants(config):
            if variant.step == "study" and method != "fgsm":
                continue
            if method == "apgd" and variant.loss_argument_order != "standard":
                continue
            jobs.extend(AttackJob(method, variant, loss) for loss in config["attack"]["losses"] if runs_with(method, loss))
    return jobs


def runs_with(method: str, loss: str) -> bool:
    """Whether ``method`` attacks with ``loss`` (BCE_ONLY_METHODS and APGD_ONLY_LOSSES)."""
    return (method not in BCE_ONLY_METHODS or loss == "bce") and (loss not in APGD_ONLY_LOSSES or method == "apgd")


def model_attack_jobs(config: dict[str, Any], spec: ModelSpec, jobs: list[AttackJob] | None = None) -> list[AttackJob]:
    """The attack jobs of one model: every job of :func:`attack_jobs`; on a defense with an adaptive attack the
    same adapted (``pgd+eot``, ``pgd+bpda``); on a defended model with a twin, the transfer from the twin with
    ``defense.transfer_method`` and each attack loss it takes (standard variant)."""
    jobs = attack_jobs(config) if jobs is None else jobs
    adaptation = ADAPTATIONS.get(spec.defense)
    adapted = [replace(job, adaptation=adaptation) for job in jobs] if adaptation else []
    method = config["defense"]["transfer_method"]
    transfers = [AttackJob(method, Variant(**STANDARD_VARIANT), loss, TRANSFER)
                 for loss in config["attack"]["losses"] if runs_with(method, loss)] if spec.twin else []
    return jobs + adapted + transfers


def transfer_models(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(sources, targets) of the transfer step, as model names in config order.

    A null key means every model while the grid has at most ``transfer.all_pairs_up_to``
    models, and none past that: all pairs grow with the square of the grid, and a large grid
    should replay only what its config names.
    """
    names = list(model_specs(config))
    transfer = config["transfer"]

    def chosen(key: str) -> list[str]:
        if transfer[key] is None:
            return names if len(names) <= transfer["all_pairs_up_to"] else []
        return [name for name in names if name in transfer[key]]

    return chosen("sources"), chosen("targets")


def as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]
