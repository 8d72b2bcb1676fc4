"""Checkpoint files: safetensors weights with the JSON config in the same file's metadata.

A checkpoint needs nothing else to be loaded (STYLE habit 4): the model config, the identity names,
the motion basis (faces and masks included) and the sampler settings all travel inside it. The
config is the JSON string under the metadata key ``"config"``; other metadata keys are free-form
strings (training step, git commit, validation LVE, ...). Loading problems raise
``models.errors.ModelError`` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.errors import ModelError

FORMAT_VERSION = "1"




def save_checkpoint(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``tensors`` and ``config`` atomically (temp file + rename) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "diffusion-talker", "format_version": FORMAT_VERSION,
                "config": json.dumps(config, sort_keys=True)}
    for key, value in (extra_metadata or {}).items():
        metadata[str(key)] = value if isinstance(value, str) else json.dumps(value)
    # safetensors refuses shared or non-contiguous storage: give it plain copies.
    plain = {k: v.detach().contiguous().clone().cpu() for k, v in tensors.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(plain, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path,
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """Read a checkpoint: (tensors, config dict, all metadata strings). Raises ModelError."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path} (train one with `talker train`)")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"checkpoint {path} is corrupt or not a safetensors file: {e}") from e
    if "config" not in metadata:
        raise ModelError(f"checkpoint {path} carries no config: not a diffusion-talker "
                         "checkpoint (save it with Talker.save)")
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as e:
        raise ModelError(f"checkpoint {path} has an unreadable config: {e}") from e
    return tensors, config, metadata
