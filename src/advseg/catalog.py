"""Names a config may use, checkable without importing torch.

Snakemake validates the config when it parses the Snakefile; importing torch and smp
there would add seconds to every start. The encoder list mirrors the pinned smp
release (``tests/test_catalog.py`` keeps the two equal); ``tu-<name>`` selects any
timm encoder and is checked when the model is built.
"""

from __future__ import annotations

import difflib
from importlib import resources

ARCHITECTURES = (
    "Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet",
    "DeepLabV3", "DeepLabV3Plus", "PAN", "UPerNet", "Segformer", "DPT",
)
TIMM_PREFIX = "tu-"


def encoder_names() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("encoders.txt").read_text()
    return tuple(line for line in text.split() if line)


def check_choice(key: str, value: str, choices) -> None:
    """Raise a ValueError that names the config key and lists the valid choices."""
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{key}: unknown value {value!r}{hint}; choose one of: {', '.join(sorted(choices))}")


def check_model(key: str, arch: str, encoder: str) -> None:
    check_choice(f"{key}.arch", arch, ARCHITECTURES)
    if not encoder.startswith(TIMM_PREFIX):
        check_choice(f"{key}.encoder", encoder, encoder_names())
