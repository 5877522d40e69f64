"""MemSAM's image encoder on OpenVINO: the same answers as PyTorch, converted once and reused,
PyTorch when OpenVINO is not installed. Tiny random MemSAM weights in the official checkpoint
layout (`MemSAMConfig.tiny()`, conftest); the cache's rebuild rules are test_backends.py's (one
definition, `engines.backends`)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from MemSegLogic import MemSegWarning, SpeedOptions
from MemSegLogic.cine import frame_prompt, segment_sequence
from MemSegLogic.core.metrics import dice
from MemSegLogic.engines import clear_engine_cache
from MemSegLogic.engines.backends import converted_dir
from MemSegLogic.engines.memsam import load_memsam_engine

pytest.importorskip("openvino")

# The reference-equality tolerances of test_memsam_model.py (ours against the official code):
# fp32 OpenVINO must keep to them against PyTorch eager.
RTOL, ATOL = 1e-4, 1e-5
MASK_DICE_MIN = 0.999
CLICK = (118, 131)


def _clip(frames: int = 4, seed: int = 0) -> np.ndarray:
    """Grey frames 0..255: a bright ellipse shrinking over time on a speckled gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    out = []
    for t in range(frames):
        image = 40.0 + 30.0 * xx / 256 + rng.normal(0.0, 6.0, (256, 256))
        image[((yy - 130) / (50 - 4 * t)) ** 2 + ((xx - 118) / (35 - 3 * t)) ** 2 <= 1] += 140.0
        out.append(np.clip(np.rint(image), 0, 255))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def engines(tiny_memsam_checkpoint):
    """The tiny MemSAM on PyTorch and on OpenVINO fp32 (converted once into the test weights folder)."""
    clear_engine_cache()
    notes = []
    torch_engine = load_memsam_engine(tiny_memsam_checkpoint, "cpu", backend="torch")
    openvino_engine = load_memsam_engine(tiny_memsam_checkpoint, "cpu", progress=lambda f, m: notes.append(m),
                                         backend="openvino", precision="fp32")
    yield torch_engine, openvino_engine, notes
    clear_engine_cache()


def test_openvino_embeddings_equal_pytorch_within_reference_tolerance(engines):
    torch_engine, openvino_engine, notes = engines
    assert (torch_engine.backend, openvino_engine.backend) == ("torch", "openvino")
    # converted here, or earlier in this session by a run on `auto` (the same weights, the same cache)
    assert len(notes) <= 1 and all("converting" in note for note in notes)
    frames = torch.from_numpy(_clip(3))[:, None].repeat(1, 3, 1, 1)  # a batch of 3: the engine encodes chunks
    with torch.inference_mode():
        expected = torch_engine.model.image_encoder(frames)
        embedding = openvino_engine.image_encoder(frames)
    assert embedding.shape == expected.shape == (3, 256, 32, 32)
    torch.testing.assert_close(embedding, expected, rtol=RTOL, atol=ATOL)
    assert float(expected.std()) > 0.1  # a real embedding, not a constant one


def test_openvino_cine_equals_pytorch(engines, tiny_memsam_checkpoint):
    """The whole per-frame algorithm from a click on a middle frame (both directions)."""
    clip = _clip(4)
    results = {backend: segment_sequence(clip, frame_prompt(1, positive=[CLICK]), model=tiny_memsam_checkpoint,
                                         device="cpu", speed=SpeedOptions(backend=backend))
               for backend in ("torch", "openvino")}
    expected, got = results["torch"], results["openvino"]
    torch.testing.assert_close(torch.from_numpy(got.probability), torch.from_numpy(expected.probability),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(got.masks, (got.probability > got.threshold).astype(np.uint8))
    # Random weights put little above MemSAM's 0.6: the masks are compared at the median
    # probability, where half the pixels are in and the edge is long.
    threshold = float(np.median(expected.probability))
    assert 0.3 < float((expected.probability > threshold).mean()) < 0.7
    assert dice(got.probability > threshold, expected.probability > threshold) >= MASK_DICE_MIN
    np.testing.assert_array_equal(got.ijk_to_ras, expected.ijk_to_ras)


def test_converted_encoder_is_reused_and_auto_is_openvino(engines, tiny_memsam_checkpoint):
    """A fresh engine (as after a restart: engine cache cleared) loads the converted model as it
    is; "auto" on the CPU is the same OpenVINO engine."""
    folder = converted_dir() / f"{tiny_memsam_checkpoint.stem}-encoder"
    stamps = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    assert set(stamps) == {"manifest.json", "model.xml", "model.bin"}
    clear_engine_cache()
    notes = []
    engine = load_memsam_engine(tiny_memsam_checkpoint, "cpu", progress=lambda f, m: notes.append(m),
                                backend="openvino")
    assert engine.backend == "openvino" and notes == []  # nothing converted
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == stamps
    assert load_memsam_engine(tiny_memsam_checkpoint, "cpu", backend="auto") is engine


def test_without_openvino_memsam_runs_on_pytorch(monkeypatch, tiny_memsam_checkpoint):
    """OpenVINO made unimportable: auto falls back with a progress line, an explicit request
    with a warning, and the cine is still segmented."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    clear_engine_cache()
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_memsam_engine(tiny_memsam_checkpoint, "cpu", progress=lambda f, m: messages.append(m),
                                  backend="auto").backend == "torch"
        result = segment_sequence(_clip(2), frame_prompt(0, positive=[CLICK]), model=tiny_memsam_checkpoint,
                                  device="cpu", speed=SpeedOptions(backend="openvino"))
    assert any("OpenVINO is not installed" in m for m in messages)
    assert [str(w.message) for w in caught if issubclass(w.category, MemSegWarning)] == [
        m for m in messages if "OpenVINO" in m]
    assert result.masks.shape == (2, 256, 256)
    clear_engine_cache()


def test_echo_cli_takes_backend_and_refuses_a_bad_one(tmp_path, capsys, tiny_memsam_checkpoint):
    from MemSegLogic.app.cli import main
    from MemSegLogic.cine import Cine

    Cine(_clip(2).astype(np.uint8)).write(tmp_path / "loop.seq.nrrd")
    output = tmp_path / "mask.seq.nrrd"
    arguments = ["echo", str(tmp_path / "loop.seq.nrrd"), "--point", f"{CLICK[0]},{CLICK[1]}", "--model",
                 str(tiny_memsam_checkpoint), "--device", "cpu", "-o", str(output)]
    assert main(["-q", *arguments, "--backend", "torch", "--precision", "fp32", "--threads", "1"]) == 0
    assert output.is_file()
    with pytest.raises(SystemExit) as exit_:
        main(["-q", *arguments, "--backend", "tensorrt", "--overwrite"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--backend: invalid choice: 'tensorrt'" in error and "Traceback" not in error
