"""Model weights on disk as safetensors, with what is needed to rebuild the model.

safetensors stores tensors only, so loading a checkpoint never unpickles code. The
metadata names the architecture, encoder and classes; loading checks them and the
tensor names, and any mismatch is an error that names the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from advseg.models import build_model


def save_weights(path: Path, model: nn.Module, arch: str, encoder: str,
                 class_names: tuple[str, ...], extra: dict | None = None) -> None:
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {"arch": arch, "encoder": encoder, "class_names": json.dumps(list(class_names)),
                **{key: json.dumps(value) for key, value in (extra or {}).items()}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({error})") from error
    missing = [key for key in ("arch", "encoder", "class_names") if key not in metadata]
    if missing:
        raise ValueError(f"{path}: checkpoint metadata lacks {', '.join(missing)}")
    return {key: value if key in ("arch", "encoder") else json.loads(value) for key, value in metadata.items()}


def load_model(path: Path, arch: str | None = None, encoder: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was saved from, checking it is the one expected."""
    metadata = read_metadata(path)
    for key, expected in (("arch", arch), ("encoder", encoder)):
        if expected is not None and metadata[key] != expected:
            raise ValueError(f"{path}: checkpoint holds {key} {metadata[key]!r}, expected {expected!r}")
    model = build_model(metadata["arch"], metadata["encoder"], classes=len(metadata["class_names"]))
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, SafetensorError) as error:
        raise ValueError(f"{path}: weights do not fit {metadata['arch']}-{metadata['encoder']} ({error})") from error
    return model.eval(), metadata
