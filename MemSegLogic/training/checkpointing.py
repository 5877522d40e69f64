"""The files a MemSAM training run writes, each replaced atomically (a reader or a crash never sees
half a file):

* ``memsam_last.pth`` / ``memsam_best.pth``: the model in the official MemSAM layout
  (`save_memsam`: our state dict plus the ``memory.key_encoder.*`` twins of ``image_encoder.*``), which
  `load_memsam` and the reference's own loader read strictly; each with ``<file>.sha256``
  (``sha256sum`` format) that the inference side verifies;
* ``memsam_last.state.pt``: everything else needed to resume (optimizer, gradient scaler, epoch,
  random generators, history, options), with the SHA-256 of the model file it belongs to;
* ``history.json``: the per-epoch numbers, for people.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any, Dict

import torch

from ..errors import CheckpointError
from ..io.atomic import replace_atomically
from ..models.memsam import MemSAM, save_memsam
from ..runtime.checkpoints import write_sha256_record

__all__ = [
    "BEST_MODEL",
    "HISTORY",
    "LAST_MODEL",
    "LAST_STATE",
    "copy_model_checkpoint",
    "load_training_state",
    "save_model_checkpoint",
    "save_training_state",
    "write_json",
]

LAST_MODEL = "memsam_last.pth"
BEST_MODEL = "memsam_best.pth"
LAST_STATE = "memsam_last.state.pt"
HISTORY = "history.json"


def save_model_checkpoint(model: MemSAM, path: pathlib.Path) -> str:
    """The model in the official layout at ``path`` plus its ``.sha256``; returns the digest."""
    path = pathlib.Path(path)
    save_memsam(model, path)  # atomic itself (written beside, then renamed)
    return write_sha256_record(path)


def copy_model_checkpoint(source: pathlib.Path, target: pathlib.Path) -> str:
    """Copy a saved checkpoint (e.g. last -> best) atomically, with its own ``.sha256``."""
    replace_atomically(pathlib.Path(target), lambda p: shutil.copyfile(source, p))
    return write_sha256_record(pathlib.Path(target))


def save_training_state(state: Dict[str, Any], path: pathlib.Path) -> None:
    replace_atomically(pathlib.Path(path), lambda p: torch.save(state, p))


def load_training_state(path: pathlib.Path) -> Dict[str, Any]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist (start a new run without resume)")
    try:
        # tensors, numbers, strings and containers only: never run pickled code from a file
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read the training state {path}: {error}") from None


def write_json(data: Any, path: pathlib.Path) -> None:
    replace_atomically(pathlib.Path(path), lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))
