"""The workflow config, checked before any job, and the values the rules read from it.

The Snakefile calls :func:`validate_config`: the schema (:mod:`advseg.settings`: types,
ranges, defaults), then :func:`check_config` for the cross-field rules and the names that
come from segmentation-models-pytorch. The axes it expands over are :mod:`advseg.grid`'s.
All of it runs before any job and imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advseg import catalog, settings
from advseg.grid import (ENSEMBLE, TRAINED_DEFENSES, UNDEFENDED, VARIANT_CHOICES, as_list, attack_jobs, methods,
                         model_spec, model_specs, runs_with, transfer_models)


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


def eps_label(eps: float) -> str:
    """How an eps appears in file names: its shortest exact repr, 0.002 -> '0.002', 1e-05 -> '1e-05'."""
    return repr(float(eps))


