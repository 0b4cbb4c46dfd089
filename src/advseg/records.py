"""The files attack and transfer jobs write for the report: their keys, written and read here only.

- ``eps_<eps>.slices.npz``: per-slice clean and attacked scores of one attack job at one eps,
  with the unit (case, subject, volume, slab) of each slice;
- ``eps_<eps>.example.npz``: one slice before and after the attack, for the example figures;
- ``transfer.npz``: the perturbation at the transfer eps, for other models to replay;
- ``certificate.npz``: a smoothed model's certified Dice per slice and radius, and abstain rates.

numpy only: the report job reads these without importing torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advseg.jobs import read_npz, write_npz
from advseg.metrics import PER_CLASS_METRICS

ATTACK = "'advseg attack'"
SCORED = PER_CLASS_METRICS + ("dice_study",)
SLICE_KEYS = ("class_names", "units", "unit", "has_organ",
              *(f"{kind}_{metric}" for kind in ("clean", "adv") for metric in SCORED))
EXAMPLE_KEYS = ("image", "truth", "clean_pred", "adv_image", "adv_pred", "class_names", "eps", "model")
CERTIFICATE_KEYS = ("model", "fold", "seed", "class_names", "units", "unit", "radii", "certified_dice",
                    "abstain_rate")
PERTURBATION_KEYS = ("delta", "scale", "input", "source", "attack", "attack_loss", "variant", "eps", "fold", "seed")


def slices_path(attack_json: Path) -> Path:
    """``eps_0.02.json`` -> ``eps_0.02.slices.npz`` in the same folder."""
    attack_json = Path(attack_json)
    return attack_json.with_name(attack_json.name.removesuffix(".json") + ".slices.npz")


def write_slice_scores(path: Path, clean: dict, adv: dict, class_names: list[str], units: np.ndarray,
                       unit: str) -> None:
    """Per-slice scores (of ``metrics.slice_scores``) of clean and attacked predictions, with units."""
    arrays = {"class_names": np.array(class_names, dtype=str), "units": np.asarray(units, dtype=np.int64),
              "unit": np.array(unit), "has_organ": clean["has_organ"]}
    for metric in SCORED:
        arrays[f"clean_{metric}"], arrays[f"adv_{metric}"] = clean[metric], adv[metric]
    write_npz(path, arrays)


def read_slice_scores(path: Path) -> dict[str, np.ndarray]:
    """What :func:`write_slice_scores` wrote, checked for keys and shapes; errors name the file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: per-slice scores not found (written beside the attack JSON)")
    data = read_npz(path, SLICE_KEYS, f"{ATTACK} (delete its attack JSON too)")
    names = [str(name) for name in data["class_names"]]
    n = data["has_organ"].shape[0]
    for key in SLICE_KEYS[3:]:
        expected = (n,) if key in ("has_organ", "clean_dice_study", "adv_dice_study") else (n, len(names))
        if data[key].shape != expected:
            raise ValueError(f"{path}: {key} has shape {data[key].shape}, expected {expected}")
    if data["units"].shape != (n,) or not np.issubdtype(data["units"].dtype, np.integer):
        raise ValueError(f"{path}: units must be one integer per slice, got {data['units'].dtype} "
                         f"{data['units'].shape}")
    slices = {key: data[key].astype(float) for key in SLICE_KEYS[4:]}
    slices.update(has_organ=data["has_organ"].astype(bool), units=data["units"].astype(np.int64),
                  class_names=np.array(names), unit=str(data["unit"]))
    return slices


def per_slice(slices: dict, kind: str) -> dict[str, np.ndarray]:
    """The ``clean`` or ``adv`` scores of :func:`read_slice_scores` in ``metrics.slice_scores``'s keys."""
    return {**{metric: slices[f"{kind}_{metric}"] for metric in SCORED}, "has_organ": slices["has_organ"]}


def write_example(path: Path, model: str, eps: float, class_names, index: int, images, masks, clean_pred,
                  adv_inputs, adv_pred) -> None:
    """Slice ``index`` before and after the attack."""
    write_npz(path, {"image": np.asarray(images[index]), "truth": np.asarray(masks[index]),
                     "clean_pred": clean_pred[index], "adv_image": adv_inputs[index].mean(0),
                     "adv_pred": adv_pred[index], "class_names": np.array(class_names), "eps": np.float64(eps),
                     "model": np.array(model), "index": np.int64(index)})


def read_example(path: Path) -> dict:
    data = read_npz(path, EXAMPLE_KEYS, ATTACK)
    data["class_names"] = [str(name) for name in data["class_names"]]
    data["model"] = str(data["model"])
    return data


def write_perturbation(path: Path, delta: np.ndarray, scale: float, input: str, identity: dict) -> None:
    """A perturbation to replay: ``delta * scale`` added to the slices it was made on.

    ``identity``: source (model), attack, attack_loss, variant, eps, fold, seed.
    """
    write_npz(path, {"delta": delta, "scale": np.float64(scale), "input": np.array(input),
                     "source": np.array(identity["source"]), "attack": np.array(identity["attack"]),
                     "attack_loss": np.array(identity["attack_loss"]), "variant": np.array(identity["variant"]),
                     "eps": np.float64(identity["eps"]), "fold": np.int64(identity["fold"]),
                     "seed": np.int64(identity["seed"])})


def read_perturbation(path: Path, fold: int) -> dict:
    """A perturbation of :func:`write_perturbation`, made on held-out fold ``fold``."""
    loaded = read_npz(path, PERTURBATION_KEYS, ATTACK)
    loaded = {key: value if key == "delta" else value.item() for key, value in loaded.items()}
    if loaded["fold"] != fold:
        raise ValueError(f"{path}: made on fold {loaded['fold']}, not on the target's fold {fold}")
    return loaded


def write_certificate(path: Path, model: str, fold: int, seed: int, class_names, units: np.ndarray, unit: str,
                      radii: np.ndarray, certified_dice: np.ndarray, abstain_rate: np.ndarray) -> None:
    """Per slice: certified Dice at each radius (N, R), abstained share of pixels (N,), and its unit."""
    write_npz(path, {"model": np.array(model), "fold": np.int64(fold), "seed": np.int64(seed),
                     "class_names": np.array(class_names, dtype=str), "units": np.asarray(units, dtype=np.int64),
                     "unit": np.array(unit), "radii": np.asarray(radii, dtype=float),
                     "certified_dice": np.asarray(certified_dice, dtype=float),
                     "abstain_rate": np.asarray(abstain_rate, dtype=float)})


def read_certificate(path: Path) -> dict:
    """What :func:`write_certificate` wrote, shapes checked; ``source`` names the file."""
    data = read_npz(path, CERTIFICATE_KEYS, "'advseg certify'")
    n, r = len(data["units"]), len(data["radii"])
    for key, shape in (("certified_dice", (n, r)), ("abstain_rate", (n,))):
        if data[key].shape != shape:
            raise ValueError(f"{path}: {key} has shape {data[key].shape}, expected {shape}")
    return {**{key: data[key] for key in ("units", "radii", "certified_dice", "abstain_rate")},
            "model": str(data["model"]), "fold": int(data["fold"]), "seed": int(data["seed"]),
            "unit": str(data["unit"]), "class_names": [str(c) for c in data["class_names"]], "source": str(path)}
