"""Model weights on disk as safetensors, with what is needed to rebuild the model.

safetensors stores tensors only, so loading a checkpoint never unpickles code. The
metadata names the architecture, encoder, classes and input channels; loading checks
them and the tensor names, and any mismatch is an error that names the file.

Weights trained elsewhere come in through :func:`load_external_state_dict`: a
``torch.save``'d state_dict (read with ``weights_only=True``, so no code is unpickled
either) or a safetensors file without advseg's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from advseg.grid import ENSEMBLE
from advseg.defenses.ensemble import Ensemble
from advseg.jobs import atomic_path
from advseg.models import IN_CHANNELS, build_model, input_channels

# where common training code nests the weights inside a saved dict (Lightning, plain loops)
NESTED_STATE_KEYS = ("state_dict", "model", "model_state_dict")
# prefixes that wrappers put before every key (DataParallel/DDP "module.", Lightning "model.")
WRAPPER_PREFIXES = ("module.", "model.")


def save_weights(path: Path, model: nn.Module, arch: str, encoder: str,
                 class_names: tuple[str, ...], extra: dict | None = None) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {"arch": arch, "encoder": encoder, "class_names": json.dumps(list(class_names)),
                "in_channels": json.dumps(input_channels(model)),
                **{key: json.dumps(value) for key, value in (extra or {}).items()}}
    with atomic_path(path) as temporary:  # a killed job leaves no half-written checkpoint behind
        save_file(state, str(temporary), metadata=metadata)


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({error}); delete it and rerun the "
                         "workflow to write it again") from error
    missing = [key for key in ("arch", "encoder", "class_names") if key not in metadata]
    if missing:
        raise ValueError(f"{path}: checkpoint metadata lacks {', '.join(missing)}")
    return {key: value if key in ("arch", "encoder") else json.loads(value) for key, value in metadata.items()}


def load_model(path: Path, arch: str | None = None, encoder: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was saved from, checking it is the one expected."""
    metadata = read_metadata(path)
    for key, expected in (("arch", arch), ("encoder", encoder)):
        if expected is not None and metadata[key] != expected:
            raise ValueError(f"{path}: checkpoint holds {key} {metadata[key]!r}, expected {expected!r} (its model "
                             f"card names another model); delete both and rerun the workflow")
    model = _rebuild(metadata)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, SafetensorError) as error:
        raise ValueError(f"{path}: weights do not fit {metadata['arch']}-{metadata['encoder']} ({error})") from error
    return model.eval(), metadata


def save_ensemble(path: Path, ensemble: Ensemble, members: list[dict], class_names: tuple[str, ...],
                  extra: dict | None = None) -> None:
    """An ensemble as one checkpoint: every member's weights, and per member its arch, encoder and
    in_channels (``members``), so that the attack job needs no other file."""
    save_weights(path, ensemble, ENSEMBLE, "+".join(member["model"] for member in members), class_names,
                 extra={"members": [{key: member[key] for key in ("arch", "encoder", "in_channels")}
                                    for member in members], **(extra or {})})


def _rebuild(metadata: dict) -> nn.Module:
    """The untrained model a checkpoint's metadata describes (an ensemble: of its members)."""
    classes = len(metadata["class_names"])
    if "members" in metadata:
        return Ensemble([build_model(member["arch"], member["encoder"], classes=classes,
                                     in_channels=int(member["in_channels"])) for member in metadata["members"]])
    return build_model(metadata["arch"], metadata["encoder"], classes=classes,
                       in_channels=int(metadata.get("in_channels", IN_CHANNELS)))


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte header length and a JSON header."""
    with open(path, "rb") as handle:
        start = handle.read(9)
    return len(start) == 9 and start[8:9] == b"{" and int.from_bytes(start[:8], "little") < 100_000_000


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a torch.save'd state_dict or a safetensors file, unwrapped; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint file not found")
    try:
        if _is_safetensors(path):
            loaded = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises anything from UnpicklingError to RuntimeError
        raise ValueError(f"{path}: not a readable state_dict (torch.save with weights_only=True, or "
                         f"safetensors): {type(error).__name__}: {str(error).strip()[:300]}") from None
    if isinstance(loaded, dict):
        for key in NESTED_STATE_KEYS:
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(f"{path}: holds a {type(loaded).__name__}, not a state_dict (a dict of tensors)")
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: not a state_dict: entry {not_tensors[0]!r} is not a tensor but "
                         f"{type(loaded[not_tensors[0]]).__name__}")
    for prefix in WRAPPER_PREFIXES:
        if all(str(key).startswith(prefix) for key in loaded):
            loaded = {key[len(prefix):]: value for key, value in loaded.items()}
    return loaded


def first_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str | None:
    """What is wrong first, in the model's own key order: a missing key, a shape, an extra key."""
    for key, tensor in expected.items():
        if key not in found:
            missing = sum(name not in found for name in expected)
            return f"missing key {key!r} ({missing} of {len(expected)} missing)"
        if tuple(found[key].shape) != tuple(tensor.shape):
            return (f"key {key!r} has shape {tuple(found[key].shape)}, the model expects "
                    f"{tuple(tensor.shape)}")
    extra = [key for key in found if key not in expected]
    if extra:
        return f"unexpected key {extra[0]!r} ({len(extra)} not in the model)"
    return None


def load_external_state_dict(path: Path, arch: str, encoder: str, classes: int,
                             in_channels: int = IN_CHANNELS, key: str = "model") -> nn.Module:
    """A model trained elsewhere, from its weights alone, ready for evaluation.

    Accepts a plain state_dict, one nested under 'state_dict', 'model' or
    'model_state_dict' (training checkpoints), and keys all prefixed by 'module.' or
    'model.' (DataParallel, Lightning). Anything else is a ValueError naming the file and
    the first key that does not fit ``arch``-``encoder`` with ``classes`` outputs.
    """
    state = read_state_dict(path)
    model = build_model(arch, encoder, classes=classes, in_channels=in_channels, key=key)
    problem = first_mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"{path}: not a state_dict of {arch}-{encoder} with {classes} classes and "
                         f"{in_channels} input channel(s): {problem}; check {key}.arch, {key}.encoder, "
                         f"{key}.in_channels and the dataset's classes")
    model.load_state_dict(state, strict=True)
    return model.eval()
