"""Random-weight checkpoints in the official formats, for tests and benchmarks.

Random weights do the same work as trained ones (same architecture, same shapes), so they time
MedSAM-2 and MemSAM honestly; they segment nothing in particular."""

from __future__ import annotations

import pathlib


def save_random_sam2(path, config: str, image_size: int, seed: int = 0) -> pathlib.Path:
    """A SAM 2 model of ``config`` with random weights saved as ``{"model": state_dict}`` in bf16,
    like MedSAM2_pretrain.pth. Random object-score heads say "no object" and every mask becomes
    -1024: the head is biased to "present" so the masks carry information."""
    import torch
    from sam2.build_sam import build_sam2

    from MemSegLogic.engines.medsam2 import sam2_overrides

    torch.manual_seed(seed)
    model = build_sam2(config, None, device="cpu", hydra_overrides_extra=sam2_overrides(image_size))
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    state["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 10.0
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


def save_random_memsam(path, tiny: bool, seed: int = 0) -> pathlib.Path:
    """MemSAM with random weights in the official layout with its ``.sha256`` record, as
    `memseg train-memsam` writes one: ``tiny`` a small ViT (fast tests), else the official ViT-B."""
    import torch

    from MemSegLogic.models.memsam import MemSAMConfig, build_memsam
    from MemSegLogic.training.checkpointing import save_model_checkpoint

    torch.manual_seed(seed)
    path = pathlib.Path(path)
    save_model_checkpoint(build_memsam(MemSAMConfig.tiny() if tiny else MemSAMConfig()), path)
    return path
