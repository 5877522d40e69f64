"""Engines turn seed prompts on a stack of 2D frames into per-frame logits.

`load_engine` builds an engine for a registered checkpoint (verifying its weights first) and
keeps the most recent ones, so repeated clicks in Slicer do not reload the model.
"""

from __future__ import annotations

from ..runtime.checkpoints import Checkpoint, ensure_checkpoint, get_checkpoint
from .base import NOT_VISITED_LOGIT, Engine, PassResult
from .cache import clear_engine_cache, engine_cache


def load_engine(model, device, download: bool = True, progress=None, **options) -> Engine:
    """The engine for ``model`` (a registered name or a `Checkpoint`) on a torch ``device``.
    ``options`` go to the engine (MedSAM-2: ``encode_batch``, ``compile_encoder``; LiteMedSAM:
    ``backend``, ``precision``); None values mean the engine's defaults."""
    checkpoint = model if isinstance(model, Checkpoint) else get_checkpoint(model)
    weights = ensure_checkpoint(checkpoint, download=download, progress=progress)
    options = _with_backend({name: value for name, value in options.items() if value is not None}, device, progress)
    key = (checkpoint, str(weights), str(device), tuple(sorted(options.items())))

    def build() -> Engine:
        if checkpoint.engine == "medsam2":
            from .medsam2 import MedSAM2Engine as engine_class
        elif checkpoint.engine == "medsam-lite":
            from .lite_medsam import LiteMedSAMEngine as engine_class
        else:  # a registry entry naming an engine this version does not know
            raise ValueError(f"checkpoint {checkpoint.name} needs unknown engine {checkpoint.engine!r}")
        extra = {"progress": progress} if checkpoint.engine == "medsam-lite" else {}
        return engine_class(checkpoint, weights, device, **options, **extra)

    return engine_cache.get(key, build)


def _with_backend(options: dict, device, progress) -> dict:
    """``backend`` and ``precision`` replaced by `backends.backend_options` (what makes the
    encoder of an engine different)."""
    if "backend" not in options:
        return options
    from .backends import backend_options

    note = None if progress is None else (lambda message: progress(0.0, message))
    backend, precision = options.pop("backend"), options.pop("precision", "fp32")
    return {**options, **backend_options(backend, precision, device, note)}


__all__ = ["Engine", "PassResult", "NOT_VISITED_LOGIT", "load_engine", "clear_engine_cache"]
