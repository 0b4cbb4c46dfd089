"""The workflow config, checked and expanded into the DAG's axes.

The Snakefile calls :func:`validate_config`: the schema (:mod:`advseg.settings`: types,
ranges, defaults), then :func:`check_config` for the cross-field rules and the names that
come from segmentation-models-pytorch. The functions below give the axes it expands over.
All of it runs before any job and imports no torch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from advseg import catalog, settings

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


def validate_config(config: dict[str, Any], build_cache: Path | None = None) -> None:
    """What the Snakefile does before any job: fill in the schema's defaults, then every check.

    Raises ValueError whose message starts with the key at fault.
    """
    settings.complete(config)
    check_config(config, build_cache)


def check_config(config: dict[str, Any], build_cache: Path | None = None) -> None:
    """Raise ValueError naming the first key that cannot work; every unbuildable model at once."""
    names: dict[str, int] = {}
    for index, model in enumerate(config["models"]):
        catalog.check_model(f"models[{index}]", model["arch"], model["encoder"])
        name = model_spec(model, index).name
        if name in names:
            raise ValueError(f"models[{index}]: {name!r} is configured twice (models[{names[name]}] too); "
                             "give one of them a different 'name'")
        names[name] = index
        checkpoint = model["checkpoint"]
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise ValueError(f"models[{index}].checkpoint: {checkpoint!r} is not a file")
    data = config["data"]
    for fold in data["folds_to_run"]:
        if fold >= data["folds"]:
            raise ValueError(f"data.folds_to_run: fold {fold} must be smaller than data.folds ({data['folds']})")
    _check_data_source(data)
    attack = config["attack"]
    labels: dict[str, float] = {}
    for eps in attack["epsilons"]:
        label = eps_label(eps)
        if label in labels:
            raise ValueError(f"attack.epsilons: {labels[label]!r} and {eps!r} are the same eps")
        labels[label] = eps
    check_variant(attack)
    for key in ("correlation_eps", "transfer_eps"):
        eps = config["report"][key]
        if eps is not None and eps not in attack["epsilons"]:
            raise ValueError(f"report.{key}: {eps} is not one of attack.epsilons {attack['epsilons']}")
    if not attack_jobs(config):
        raise ValueError("attack: no method, variant and loss combine (step 'study' needs fgsm; "
                         "segpgd and cospgd need the bce loss)")
    for loss in attack["losses"]:
        if not any(runs_with(method, loss) for method in methods(config)):
            raise ValueError(f"attack.losses: {loss} is SEA's loss for apgd; add apgd to attack.methods or remove it")
    check_transfer(config)
    check_defenses(config)
    catalog.check_buildable([(f"models[{index}]", model["arch"], model["encoder"])
                             for index, model in enumerate(config["models"])], build_cache)


def check_variant(attack: dict[str, Any]) -> None:
    """attack.step, .loss_argument_order and .input: each value one of its choices."""
    for key, choices in VARIANT_CHOICES.items():
        for value in as_list(attack[key]):
            catalog.check_choice(f"attack.{key}", value, choices)


def _check_data_source(data: dict[str, Any]) -> None:
    """The dataset's files are where the config says, before any job."""
    options = data[data["name"]]
    if data["name"] == "uwmadison":
        root, source = options.get("root"), options.get("source")
        if root and source:
            raise ValueError("data.uwmadison: give source or root, not both")
        if source:
            if source != "kaggle" and not Path(source).exists():
                raise ValueError(f"data.uwmadison.source: {source!r} is neither 'kaggle' nor an existing .zip or folder")
        elif not root or not Path(root).is_dir():
            raise ValueError(f"data.uwmadison.root: {root!r} is not a folder; download the Kaggle competition "
                             "data (see workflow/configs/uwmadison_study.yaml) and point root at it, or set "
                             "data.uwmadison.source")
    elif data["name"] == "folder":
        root = options.get("root")
        if not root or not Path(root).is_dir():
            raise ValueError(f"data.folder.root: {root!r} is not a folder holding images/ and masks/")
        if not options.get("classes"):
            raise ValueError("data.folder.classes: name the classes, in label order")
    elif data["name"] == "nifti":
        root, pairs = options.get("root"), options.get("pairs")
        if bool(root) == bool(pairs):
            raise ValueError("data.nifti: give root (a folder of <id>_image.nii.gz + <id>_label.nii.gz) or pairs "
                             "(a CSV), one of them")
        if root and not Path(root).is_dir():
            raise ValueError(f"data.nifti.root: {root!r} is not a folder")
        if pairs and not Path(pairs).is_file():
            raise ValueError(f"data.nifti.pairs: {pairs!r} is not a file")
        if not options.get("classes"):
            raise ValueError("data.nifti.classes: name the classes, label k = the k-th")


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


def check_defenses(config: dict[str, Any]) -> None:
    """The ensemble's members are configured models of one input kind; every defense defends some model."""
    undefended = model_specs(config)
    if ENSEMBLE in undefended:
        raise ValueError(f"models[{undefended[ENSEMBLE].key.removeprefix('models[').rstrip(']')}]: the name "
                         f"{ENSEMBLE!r} is the ensemble's (defenses); give the model another name")
    if ENSEMBLE in config["defenses"]:
        members = config["defense"][ENSEMBLE]["models"] or list(undefended)
        for name in members:
            catalog.check_choice("defense.ensemble.models", name, list(undefended))
        if len(members) < 2:
            raise ValueError("defense.ensemble.models: an ensemble needs at least 2 models; configure another model")
        if len({undefended[name].in_channels for name in members}) > 1:
            raise ValueError("defense.ensemble.models: the members take different in_channels; one input feeds them all")
    transfer_method = config["defense"]["transfer_method"]
    if set(config["defenses"]) - {UNDEFENDED, ENSEMBLE} and \
            not any(runs_with(transfer_method, loss) for loss in config["attack"]["losses"]):
        raise ValueError(f"defense.transfer_method: {transfer_method} takes none of attack.losses "
                         f"{config['attack']['losses']}; choose apgd, or add a loss such as bce")
    trainable = [spec for spec in undefended.values() if not spec.checkpoint]
    for defense in config["defenses"]:
        if defense in TRAINED_DEFENSES and not trainable:
            raise ValueError(f"defenses: {defense} trains its model, but every configured model is an imported "
                             "checkpoint; remove it or configure a model to train")


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


def correlation_eps(config: dict[str, Any]) -> float:
    """The eps at which model size is compared with attack success (default: the middle one).

    The middle of the sorted epsilons (the upper of the two middles) is a moderate attack
    whatever grid the user configures, so changing the grid never needs this key too.
    """
    eps = config["report"]["correlation_eps"]
    if eps is not None:
        return eps
    ordered = sorted(config["attack"]["epsilons"])
    return ordered[len(ordered) // 2]


def transfer_eps(config: dict[str, Any]) -> float:
    eps = config["report"]["transfer_eps"]
    return correlation_eps(config) if eps is None else eps


def tracking_uri(config: dict[str, Any]) -> str:
    """mlflow.tracking_uri; null is the SQLite store in results_dir."""
    return config["mlflow"]["tracking_uri"] or f"sqlite:///{config['results_dir']}/mlflow.db"


def tracking_file(config: dict[str, Any]) -> Path:
    """Where the ``tracking`` rule records the store and the experiment every job logs into."""
    return Path(config["results_dir"]) / "mlflow" / "tracking.json"


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


def check_transfer(config: dict[str, Any]) -> None:
    """Every named source and target is a configured model, and names that are given make a pair of two models."""
    names = list(model_specs(config))
    for key in ("sources", "targets"):
        for name in config["transfer"][key] or ():
            catalog.check_choice(f"transfer.{key}", name, names)
    sources, targets = transfer_models(config)
    named = config["transfer"]["sources"] or config["transfer"]["targets"]
    if named and sources and targets and not any(source != target for source in sources for target in targets):
        raise ValueError(f"transfer: sources and targets name only {sources[0]!r}, whose own perturbations are "
                         "the white-box attack; name another model in one of them, or set sources: [] for no transfer")


def eps_label(eps: float) -> str:
    """How an eps appears in file names: its shortest exact repr, 0.002 -> '0.002', 1e-05 -> '1e-05'."""
    return repr(float(eps))


def as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]
