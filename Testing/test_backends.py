"""The OpenVINO backend of LiteMedSAM's image encoder and box decoder: the same answers as PyTorch
on real data with the real weights, a converted-model cache that is reused, rebuilt when the
weights or the converter change and never trusted when corrupt, and PyTorch when OpenVINO is not
installed."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch

from MemSegLogic import MemSegWarning, Prompt, Volume, segment_volume
from MemSegLogic.app.cli import main
from MemSegLogic.app.demo import DEMO_PRESET, DEMO_SEGMENT
from MemSegLogic.core.metrics import dice
from MemSegLogic.engines import backends, clear_engine_cache, load_engine
from MemSegLogic.volume3d import SpeedOptions

pytest.importorskip("openvino")

# fp32 OpenVINO against PyTorch eager: the same arithmetic in another order (measured ~3e-6 on
# LiteMedSAM's embeddings, whose values are of order 1).
EMBEDDING_TOLERANCE = 1e-4
# The box decoder's low-res logits (of order 10; measured ~2e-5) and its IoU estimate (~4e-7).
LOGIT_TOLERANCE, IOU_TOLERANCE = 1e-3, 1e-5
MASK_DICE_MIN = 0.999
# precision="auto" on a CPU with bf16 (AVX-512 BF16 / AMX): OpenVINO computes in bf16, ~3 significant
# digits; the bound a mask must keep to PyTorch's on the slab.
REDUCED_PRECISION_DICE_MIN = 0.98


# -- real weights, real CT ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def lite_engines():
    """LiteMedSAM on PyTorch and on OpenVINO fp32 (converted once into the test weights folder)."""
    clear_engine_cache()
    return load_engine("medsam-lite", torch.device("cpu"), backend="torch"), \
        load_engine("medsam-lite", torch.device("cpu"), backend="openvino", precision="fp32")


@pytest.fixture(scope="module")
def chest_slab(chest_ct):
    """Seven axial slices of slicerio's CTChest4 around the right lung's middle, with the box
    of the reference on the centre one (the grid moved with the slab, so RAS stays exact)."""
    from MemSegLogic.app.demo import seed_box

    volume, segments = chest_ct
    reference = segments[DEMO_SEGMENT]
    _, k = seed_box(reference)
    slab = volume.slab(k - 3, 7)
    rows, cols = np.nonzero(reference[k])
    return slab, Prompt.from_box((cols.min(), rows.min(), 3), (cols.max(), rows.max(), 3))


def _segment_slab(slab, backend, precision="fp32"):
    volume, prompt = slab
    return segment_volume(volume, prompt, model="medsam-lite", axes=1, device="cpu", preset=DEMO_PRESET,
                          speed=SpeedOptions(backend=backend, precision=precision))


@pytest.fixture(scope="module")
def torch_slab_mask(lite_engines, chest_slab):
    return _segment_slab(chest_slab, "torch").mask


def test_openvino_embedding_equals_pytorch_on_a_real_slice(lite_engines, chest_ct):
    from MemSegLogic.core.intensity import to_uint8
    from MemSegLogic.models.lite_medsam import preprocess_slice

    torch_engine, openvino_engine = lite_engines
    assert (torch_engine.backend, openvino_engine.backend) == ("torch", "openvino")
    volume, _ = chest_ct
    image, _, _ = preprocess_slice(to_uint8(volume.array, DEMO_PRESET)[volume.array.shape[0] // 2])
    expected = torch_engine.encode(image)
    embedding = openvino_engine.encode(image)
    assert embedding.shape == expected.shape == (1, 256, 64, 64)
    assert float((embedding - expected).abs().max()) <= EMBEDDING_TOLERANCE
    assert float(expected.abs().max()) > 0.1  # a real embedding, not a blank one


def test_openvino_box_decoder_equals_pytorch_on_a_real_slice(lite_engines, chest_ct):
    """The decoder every carried slice and every candidate box around a click goes through: the
    same logits and IoU estimate as PyTorch for boxes small and large, on a real embedding."""
    from MemSegLogic.core.intensity import to_uint8
    from MemSegLogic.models.lite_medsam import preprocess_slice

    torch_engine, openvino_engine = lite_engines
    volume, _ = chest_ct
    image, _, _ = preprocess_slice(to_uint8(volume.array, DEMO_PRESET)[volume.array.shape[0] // 2])
    embedding = torch_engine.encode(image)
    for box in ([[120.0, 90.0, 136.0, 110.0]], [[40.0, 60.0, 130.0, 200.0]], [[0.0, 0.0, 255.0, 255.0]]):
        box = torch.tensor(box)
        expected_logits, expected_iou = torch_engine.decode_box(embedding, box)
        logits, iou = openvino_engine.decode_box(embedding, box)
        assert logits.shape == expected_logits.shape == (1, 1, 256, 256)
        assert float((logits - expected_logits).abs().max()) <= LOGIT_TOLERANCE
        assert float((iou - expected_iou).abs().max()) <= IOU_TOLERANCE
        assert (expected_logits > 0).any()  # a mask, not a blank answer


def test_openvino_masks_equal_pytorch_on_real_ct(chest_slab, torch_slab_mask):
    result = _segment_slab(chest_slab, "openvino")
    assert torch_slab_mask.sum() > 1000  # the lung on seven slices
    assert dice(result.mask, torch_slab_mask) >= MASK_DICE_MIN
    np.testing.assert_array_equal(result.ijk_to_ras, chest_slab[0].ijk_to_ras)


def test_reduced_precision_masks_stay_close_on_real_ct(chest_slab, torch_slab_mask):
    import openvino

    if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16: precision='auto' is fp32 here")
    result = _segment_slab(chest_slab, "openvino", precision="auto")
    assert dice(result.mask, torch_slab_mask) >= REDUCED_PRECISION_DICE_MIN


# -- the converted-model cache (a small network: the same code path, seconds instead of a minute) --
def _network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(),
                               torch.nn.Conv2d(8, 4, 3, stride=2, padding=1)).eval()


EXAMPLE = torch.rand(1, 3, 32, 32)


def _encoder(folder, network, weights_sha256="a" * 64):
    return backends.openvino_model(network, EXAMPLE, "net", weights_sha256, cache=folder)


def _stamps(folder) -> dict:
    return {path.name: path.stat().st_mtime_ns for path in (folder / "net").iterdir()}


def _same_as_torch(encoder, network) -> bool:
    with torch.no_grad():
        return float((encoder(EXAMPLE) - network(EXAMPLE)).abs().max()) < 1e-5


def test_converted_model_is_reused(tmp_path):
    network = _network()
    notes = []
    first = backends.openvino_model(network, EXAMPLE, "net", "a" * 64, cache=tmp_path, note=notes.append)
    assert len(notes) == 1 and "converting" in notes[0]
    stamps = _stamps(tmp_path)
    assert set(stamps) == {"manifest.json", "model.xml", "model.bin"}
    second = backends.openvino_model(network, EXAMPLE, "net", "a" * 64, cache=tmp_path, note=notes.append)
    assert len(notes) == 1 and _stamps(tmp_path) == stamps  # loaded, not converted again
    assert _same_as_torch(first, network) and _same_as_torch(second, network)
    assert [p.name for p in tmp_path.iterdir()] == ["net"]  # no partial folder left behind


def test_other_weights_rebuild_the_cache(tmp_path):
    _encoder(tmp_path, _network(0), "a" * 64)
    retrained = _network(1)
    encoder = _encoder(tmp_path, retrained, "b" * 64)
    manifest = json.loads((tmp_path / "net" / "manifest.json").read_text())
    assert manifest["weights_sha256"] == "b" * 64
    assert _same_as_torch(encoder, retrained)


def test_another_converter_rebuilds_the_cache(tmp_path, monkeypatch):
    network = _network()
    _encoder(tmp_path, network)
    stamps = _stamps(tmp_path)
    monkeypatch.setattr(backends, "CONVERSION_SCHEME", backends.CONVERSION_SCHEME + 1)
    _encoder(tmp_path, network)
    assert _stamps(tmp_path)["model.bin"] != stamps["model.bin"]
    assert json.loads((tmp_path / "net" / "manifest.json").read_text())["converter"] == backends.converter_version()


@pytest.mark.parametrize("damage", ["flipped weights", "truncated graph", "manifest missing", "manifest garbage"])
def test_corrupt_cache_is_rebuilt_not_used(tmp_path, damage):
    network = _network()
    _encoder(tmp_path, network)
    folder = tmp_path / "net"
    if damage == "flipped weights":  # same size, one weight changed: only the hash can tell
        data = bytearray((folder / "model.bin").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "model.bin").write_bytes(bytes(data))
    elif damage == "truncated graph":
        (folder / "model.xml").write_bytes((folder / "model.xml").read_bytes()[:100])
    elif damage == "manifest missing":
        (folder / "manifest.json").unlink()
    else:
        (folder / "manifest.json").write_text("{not json")
    encoder = _encoder(tmp_path, network)
    assert _same_as_torch(encoder, network)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["model.bin"] == backends.sha256_of(folder / "model.bin")


def test_one_encoder_serves_threads_at_once(tmp_path):
    """An engine is shared (engine cache): calls from several threads each get their own answer."""
    from concurrent.futures import ThreadPoolExecutor

    network = _network()
    encoder = _encoder(tmp_path, network)
    images = [torch.rand(1, 3, 32, 32) for _ in range(16)]
    with ThreadPoolExecutor(4) as pool:
        embeddings = list(pool.map(encoder, images))
    with torch.no_grad():
        assert all(float((e - network(i)).abs().max()) < 1e-5 for e, i in zip(embeddings, images))


# -- choosing the backend -------------------------------------------------------------------------
def test_auto_is_openvino_on_cpu_and_torch_elsewhere():
    assert backends.resolve_backend("auto", torch.device("cpu")) == "openvino"
    assert backends.resolve_backend("auto", torch.device("cuda")) == "torch"
    assert backends.resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="runs on the CPU only"):
        backends.resolve_backend("openvino", torch.device("cuda"))


def test_without_openvino_the_encoder_runs_on_pytorch(monkeypatch):
    """OpenVINO made unimportable (None in sys.modules makes `import openvino` fail): auto falls
    back with a progress line, an explicit request with a warning, and the run still segments."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    notes = []
    assert backends.resolve_backend("auto", torch.device("cpu"), note=notes.append) == "torch"
    assert len(notes) == 1 and "OpenVINO is not installed" in notes[0]
    clear_engine_cache()
    volume = Volume(np.pad(np.full((3, 16, 16), 400, np.int16), ((0, 0), (8, 8), (8, 8))), np.eye(4))
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = segment_volume(volume, Prompt.from_box((6, 6, 1), (25, 25, 1)), axes=1, device="cpu",
                                speed=SpeedOptions(backend="openvino"), progress=lambda f, m: messages.append(m))
    assert [str(w.message) for w in caught if issubclass(w.category, MemSegWarning)] == [notes[0]]
    assert result.mask[1].sum() > 100
    clear_engine_cache()


@pytest.mark.parametrize("field, value", [("backend", "cuda"), ("backend", "onnx"), ("precision", "fp16")])
def test_bad_backend_or_precision_is_refused(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be one of .*got '{value}'$"):
        SpeedOptions(**{field: value})


def test_cli_takes_backend_and_refuses_a_bad_one(tmp_path, capsys):
    volume = Volume(np.pad(np.full((3, 16, 16), 400, np.int16), ((0, 0), (8, 8), (8, 8))), np.eye(4))
    volume.write(tmp_path / "ct.nrrd")
    output = tmp_path / "mask.nii.gz"
    arguments = ["segment", str(tmp_path / "ct.nrrd"), "--box", "6,6,1,25,25,1", "--axes", "1", "--device", "cpu",
                 "-o", str(output)]
    assert main(["-q", *arguments, "--backend", "torch", "--precision", "fp32"]) == 0 and output.is_file()
    with pytest.raises(SystemExit) as exit_:
        main(["-q", *arguments, "--backend", "tensorrt", "--overwrite"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--backend: invalid choice: 'tensorrt'" in error and "Traceback" not in error
