"""Names a config may use, checkable without importing torch.

Snakemake validates the config when it parses the Snakefile; importing torch and smp
there would add seconds to every start. The encoder list mirrors the pinned smp
release (``tests/test_catalog.py`` keeps the two equal); ``tu-<name>`` selects any
timm encoder. Whether smp can build a pair is checked by :func:`check_buildable`.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import warnings
from importlib import resources
from pathlib import Path

from advseg.jobs import write_json

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


def build_cache_path() -> Path:
    """Where pairs smp built are remembered: per user, as they depend only on the smp version."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "advseg" / "buildable_models.json"


def check_buildable(models: list[tuple[str, str, str]], cache: Path | None = None) -> None:
    """Build every (key, arch, encoder) on the meta device; one ValueError lists each pair that fails.

    smp refuses some pairs only when it builds them (UnetPlusPlus with a transformer
    encoder, DPT without a timm encoder, an unknown timm name). On the meta device a
    build allocates no memory and loads no weights, so the whole grid is checked before
    any job, at the price of importing smp (seconds); pairs that built once are
    remembered in ``cache`` (:func:`build_cache_path`) for the installed smp version.
    """
    from importlib.metadata import version

    smp_version = version("segmentation-models-pytorch")
    known: set[str] = set()
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            known = set(stored["buildable"]) if stored.get("smp") == smp_version else set()
        except (ValueError, KeyError, TypeError):
            known = set()
    todo = [(key, arch, encoder) for key, arch, encoder in models if f"{arch}/{encoder}" not in known]
    if not todo:
        return
    import segmentation_models_pytorch as smp
    import torch

    failures = []
    for key, arch, encoder in todo:
        try:
            with torch.device("meta"), _without_weight_init():
                smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1)
        except Exception as error:  # smp raises ValueError, RuntimeError, KeyError... for unbuildable pairs
            failures.append(f"{key}: smp cannot build {arch} with encoder {encoder!r} ({str(error).splitlines()[0]})")
        else:
            known.add(f"{arch}/{encoder}")
    if cache is not None:
        try:
            write_json(cache, {"smp": smp_version, "buildable": sorted(known)})  # jobs may check at once
        except OSError as error:  # a read-only home only costs the next check its seconds
            warnings.warn(f"{cache}: could not remember the models that built ({error}); "
                          f"set XDG_CACHE_HOME to a writable folder", stacklevel=2)
    if failures:
        raise ValueError("; ".join(failures))


@contextlib.contextmanager
def _without_weight_init():
    """torch.nn.init's initialisers as no-ops while models are built on the meta device.

    There are no values to fill there, yet filling them is most of a build's time; whether smp
    can build a pair does not depend on them.
    """
    import torch

    initialisers = {name: function for name, function in vars(torch.nn.init).items()
                    if name.endswith("_") and not name.startswith("_") and callable(function)}
    try:
        for name in initialisers:
            setattr(torch.nn.init, name, _unchanged)
        yield
    finally:
        for name, function in initialisers.items():
            setattr(torch.nn.init, name, function)


def _unchanged(tensor, *args, **kwargs):
    return tensor
