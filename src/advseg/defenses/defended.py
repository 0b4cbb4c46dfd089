"""A model with its defense, as the workflow uses it: what trains it, what is scored, what is attacked.

A defended model is a checkpoint whose model card names its ``defense`` and the settings of
``defense.<name>``. Three questions get their answer here, one function each:

- how it trains (:func:`training_batch_maker`): noise, fast_at and pgd_at with their batch makers;
  smoothing's base with Gaussian noise at the smoothing sigma (Cohen et al. 2019, Fischer et al.
  2021: a base model that never saw the noise votes at random under it);
- what is scored (:func:`scored_model`): the smoothed majority vote, the purified model, or the
  model itself;
- what each attack sees (:func:`attacked_model`): ``plain`` gradients (one noise draw per step on
  smoothing; the rounding's zero gradient on quantization), ``eot`` (the gradient averaged over
  ``attack.eot.draws`` draws) or ``bpda`` (straight through the purifier). The attack's result is
  always scored by :func:`scored_model`, never by the view it was made on.
"""

from __future__ import annotations

from typing import Mapping

from torch import nn

from advseg import catalog
from advseg import settings as config_schema
from advseg.defenses.eot import ExpectationOverTransformation
from advseg.defenses.purification import Quantization, bpda, purified
from advseg.defenses.smoothing import SmoothedModel, SmoothingSettings
from advseg.defenses.training_inputs import BatchMaker, training_inputs

ADAPTATIONS_OF = {"smoothing": ("plain", "eot"), "quantization": ("plain", "bpda")}


def checked_settings(defense: str, values: Mapping | str | None) -> dict:
    """``defense.<defense>`` from ``values`` (a mapping or its JSON) and the schema's defaults, checked;
    none and the ensemble have no settings. A ValueError names the key at fault."""
    catalog.check_choice("defense", defense, config_schema.node("defenses")["items"]["enum"])
    return {} if defense in ("none", "ensemble") else config_schema.fill(f"defense.{defense}", values)


def card_defense(card: Mapping, path) -> tuple[str, dict]:
    """(defense, its settings) of a model card, checked before any work; errors name the card. A card
    written before defenses existed is an undefended model."""
    defense = card.get("defense", "none")
    try:
        return defense, checked_settings(defense, card.get("defense_settings"))
    except ValueError as error:
        raise ValueError(f"{path}: {error}; delete the card and its checkpoint and rerun the workflow") from None


def training_batch_maker(defense: str, settings: Mapping | None) -> BatchMaker | None:
    """The batch maker a defense trains with (None: standard training), its settings checked now."""
    if defense == "smoothing":
        return training_inputs("noise", {"sigma": SmoothingSettings.from_section(settings).sigma})
    if defense in ("noise", "fast_at", "pgd_at"):
        return training_inputs(defense, settings)
    return None


def scored_model(model: nn.Module, defense: str, settings: Mapping, seed: int) -> nn.Module:
    """The defended model whose predictions are scored (clean and attacked)."""
    if defense == "smoothing":
        return SmoothedModel(model, SmoothingSettings.from_section(settings), seed)
    if defense == "quantization":
        return purified(model, Quantization(int(settings["levels"])))
    return model


def attacked_model(model: nn.Module, scored: nn.Module, defense: str, settings: Mapping, adaptation: str,
                   eot_draws: int) -> nn.Module:
    """The model an attack follows the gradient of (see the module doc): ``scored`` itself for plain
    gradients, except on smoothing, whose votes have none (one draw per step; ``eot``: eot_draws);
    ``bpda``: ``model`` behind the purifier's straight-through pass."""
    allowed = ADAPTATIONS_OF.get(defense, ("plain",))
    if adaptation not in allowed:
        raise ValueError(f"attack {adaptation!r} does not apply to defense {defense!r}; it takes: {', '.join(allowed)}")
    if defense == "smoothing":
        return ExpectationOverTransformation(scored, eot_draws if adaptation == "eot" else 1)
    if adaptation == "bpda":
        return bpda(model, Quantization(int(settings["levels"])))
    return scored
