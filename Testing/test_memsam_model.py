"""Tests for MemSeg's own MemSAM implementation (MemSegLogic/models/memsam).

Run: cd /work/main && python -m pytest -q Testing/test_memsam_model.py

No trained MemSAM weights exist (reference issue #9), so everything here uses random weights:
(a) the full ViT-B build on the meta device against the official state-dict layout and parameter
counts (research notes, docs memsam.md §3.3); (b) loading a tiny model saved in the official
layout; (c) initialisation from a Meta SAM state dict; (d) memory components on hand-made
inputs; (e) one short clip. An opt-in test compares against the official code itself when
MEMSAM_REFERENCE_DIR points at a copy of ``models/segment_anything_memsam`` from
dengxl0520/MemSAM.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import math
import os
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from MemSegLogic.models.memsam import (
    MemSAM,
    MemSAMConfig,
    build_memsam,
    deep_update_schedule,
    init_from_sam,
    load_memsam,
)
from MemSegLogic.models.memsam.memory import (
    ConvGRUGate,
    ForegroundReinforcement,
    memory_affinity,
    memory_readout,
)
from MemSegLogic.models.sam_components import sam_modeling

CLIP_POINT = (118.0, 131.0)  # (x, y) inside the synthetic ventricle of frame 0


def _prefix(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "memory" else parts[0]


def _randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values everywhere, incl. the zero-initialised position/rel-pos tables and the
    batch-norm statistics, so that every path contributes to the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in model.named_parameters():
            std = 0.05 if parameter.dim() > 1 else 0.1
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) * 1.5 + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    return model


def _official_layout(model: MemSAM) -> dict:
    """Our state dict as the reference saves it: DataParallel prefix and the image encoder
    duplicated under memory.key_encoder (the reference registers that module twice)."""
    state = model.state_dict()
    out = {f"module.{k}": v.clone() for k, v in state.items()}
    for key, value in state.items():
        if key.startswith("image_encoder."):
            out["module.memory.key_encoder." + key[len("image_encoder.") :]] = value.clone()
    return out


def _synthetic_clip(frames: int = 3) -> torch.Tensor:
    """T x 3 x 256 x 256 float 0..255: a bright ellipse (the 'ventricle') that shrinks a little
    per frame, on a noisy gradient, grey repeated to 3 channels."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    clip = []
    for t in range(frames):
        image = 30.0 + 40.0 * xx / 256 + rng.normal(0.0, 6.0, (256, 256))
        ellipse = ((yy - 130) / (50 - 3 * t)) ** 2 + ((xx - 118) / (35 - 2 * t)) ** 2 <= 1.0
        image[ellipse] += 150.0
        clip.append(np.clip(image, 0, 255))
    grey = torch.from_numpy(np.stack(clip)).float()
    return grey[:, None].repeat(1, 3, 1, 1)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """One intra-op thread for this module: on a small shared machine, two OpenMP threads
    competing with other processes made these CPU convolutions ~3x slower. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def vit_b_meta() -> MemSAM:
    with torch.device("meta"):
        return build_memsam(MemSAMConfig())


@pytest.fixture(scope="module")
def tiny_model() -> MemSAM:
    torch.manual_seed(0)
    return _randomize_(build_memsam(MemSAMConfig.tiny()), seed=1)


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return _synthetic_clip(3)


@pytest.fixture(scope="module")
def clip_run(tiny_model: MemSAM, clip: torch.Tensor):
    """One forward_clip of the tiny model (default: reference-style seeded deep updates),
    observing the sensory-state updates through forward hooks."""
    decoder_states, reinforce_calls, decoder_calls = [], [], []
    hooks = [
        tiny_model.memory.decoder.hidden_update.register_forward_hook(
            lambda module, args, output: decoder_states.append(output.detach().clone())
        ),
        tiny_model.memory.value_encoder.hidden_reinforce.register_forward_hook(
            lambda module, args, output: reinforce_calls.append(output.detach().clone())
        ),
        tiny_model.mask_decoder.register_forward_hook(lambda module, args, output: decoder_calls.append(1)),
    ]
    try:
        with torch.no_grad():
            logits = tiny_model.forward_clip(clip, CLIP_POINT, 1, seed=1234)
    finally:
        for hook in hooks:
            hook.remove()
    return {
        "logits": logits,
        "decoder_states": decoder_states,
        "reinforce_calls": reinforce_calls,
        "mask_decoder_calls": len(decoder_calls),
    }


# --- (a) ViT-B layout on the meta device -------------------------------------------------------------
EXPECTED_PREFIX_COUNTS = {  # notes §3.3, minus the 256 duplicated memory.key_encoder.* entries
    "image_encoder": 256,
    "prompt_encoder": 17,
    "mask_decoder": 120,
    "memory.key_proj": 6,
    "memory.value_encoder": 108,
    "memory.decoder": 20,
    "memory.memory_reinforce": 4,
}
EXPECTED_SHAPES = {
    "memory.value_encoder.conv1.weight": (64, 5, 7, 7),
    "memory.value_encoder.fuser.block1.conv1.weight": (256, 384, 3, 3),
    "memory.decoder.fuser.block1.conv1.weight": (512, 576, 3, 3),
    "memory.decoder.hidden_update.transform.weight": (192, 320, 3, 3),
    "memory.value_encoder.hidden_reinforce.transform.weight": (192, 320, 3, 3),
    "memory.memory_reinforce.conv_wxh.weight": (128, 257, 3, 3),
    "memory.memory_reinforce.conv_1x1.weight": (256, 128, 1, 1),
    "memory.key_proj.key_proj.weight": (64, 256, 3, 3),
    "memory.key_proj.d_proj.weight": (1, 256, 3, 3),
    "memory.key_proj.e_proj.weight": (64, 256, 3, 3),
    "image_encoder.patch_embed.proj.weight": (768, 3, 16, 16),
    "image_encoder.pos_embed": (1, 64, 64, 768),
    "image_encoder.input_Adapter.D_fc1.weight": (192, 768),
    "image_encoder.cnn_embed.downs.2.maxpool_conv.1.weight": (768, 256, 3, 3),
    "image_encoder.post_pos_embed.downs.0.maxpool_conv.1.weight": (768, 768, 3, 3),
    "image_encoder.blocks.0.attn.rel_pos_h": (27, 64),
    "image_encoder.blocks.11.Space_Adapter.q.weight": (768, 768),
    "image_encoder.blocks.11.refine_Adapter.conv.0.weight": (768, 768, 3, 3),
    "image_encoder.neck.0.weight": (256, 768, 1, 1),
}


def test_vit_b_state_dict_layout_matches_official(vit_b_meta: MemSAM):
    state = vit_b_meta.state_dict()
    counts = collections.Counter(_prefix(k) for k in state)
    assert dict(counts) == EXPECTED_PREFIX_COUNTS
    assert len(state) + 256 == 787  # the official file, with its key_encoder duplicates
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    for block in range(12):
        rows = 63 if block in (2, 5, 8, 11) else 27  # global: 2*32-1; windowed: 2*14-1
        for axis in "hw":
            assert tuple(state[f"image_encoder.blocks.{block}.attn.rel_pos_{axis}"].shape) == (rows, 64)
        has_adapters = f"image_encoder.blocks.{block}.MLP_Adapter.D_fc1.weight" in state
        assert has_adapters == (block in (2, 5, 8, 11))
    # ResNet-18 trunk with torchvision names: conv1, bn1 (+ running stats), layer1..3, no layer4/fc
    resnet = [k for k in state if k.startswith("memory.value_encoder.") and ".fuser." not in k and "hidden" not in k]
    assert len(resnet) == 90
    assert "memory.value_encoder.layer2.0.downsample.1.running_var" in state
    assert "memory.value_encoder.layer3.1.bn2.num_batches_tracked" in state
    assert not any(".layer4." in k or ".fc." in k for k in resnet)
    assert not any(k.startswith("memory.key_encoder.") for k in state)


def test_vit_b_parameter_counts(vit_b_meta: MemSAM):
    total = sum(p.numel() for p in vit_b_meta.parameters())
    assert round(total / 1e6, 1) == 152.0, total
    trainable = sum(p.numel() for _, p in vit_b_meta.trainable_parameters())
    assert trainable == 58_376_375  # notes §3.3 (official model, reinforce on)
    vit_b_meta.freeze_for_training()
    assert sum(p.numel() for p in vit_b_meta.parameters() if p.requires_grad) == trainable
    reinforce = sum(p.numel() for p in vit_b_meta.memory.memory_reinforce.parameters())
    assert trainable - reinforce == 58_047_159  # the figure printed in reference issue #14
    names = {n for n, _ in vit_b_meta.trainable_parameters()}
    assert not any(n.startswith(("prompt_encoder.", "mask_decoder.")) for n in names)
    assert "image_encoder.blocks.5.attn.rel_pos_w" in names
    assert "image_encoder.blocks.4.attn.rel_pos_w" not in names
    assert "image_encoder.blocks.5.attn.qkv.weight" not in names
    assert "image_encoder.patch_embed.proj.weight" not in names
    assert "memory.value_encoder.layer3.0.conv1.weight" in names


def test_config_inferred_from_weights(vit_b_meta: MemSAM):
    assert MemSAMConfig.from_state_dict(vit_b_meta.state_dict()) == MemSAMConfig()
    with pytest.raises(ValueError, match="Cannot infer"):
        MemSAMConfig.from_state_dict({"foo.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="image_size 256"):
        MemSAM(MemSAMConfig(image_size=512))


# --- (b) official-layout checkpoint ---------------------------------------------------------------
def test_official_layout_checkpoint_loads_strictly_and_reproduces(tiny_model, clip, clip_run, tmp_path: Path):
    official = _official_layout(tiny_model)
    encoder_entries = sum(1 for k in tiny_model.state_dict() if k.startswith("image_encoder."))
    assert len(official) == len(tiny_model.state_dict()) + encoder_entries
    path = tmp_path / "memsam_tiny.pth"
    torch.save(official, path, _use_new_zipfile_serialization=False)  # as train_video.py saves

    loaded = load_memsam(path)  # configuration inferred from the weights
    assert loaded.config == MemSAMConfig.tiny()
    assert not loaded.training
    ours = tiny_model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ours[key]), key
    with torch.no_grad():
        logits = loaded.forward_clip(clip, CLIP_POINT, 1, seed=1234)
    torch.testing.assert_close(logits, clip_run["logits"], rtol=0, atol=0)


def test_checkpoint_mismatches_are_refused(tiny_model):
    official = _official_layout(tiny_model)
    tiny = MemSAMConfig.tiny()

    missing = dict(official)
    del missing["module.memory.decoder.fuser.block1.conv1.weight"]
    with pytest.raises(ValueError, match=r"1 missing: memory\.decoder\.fuser\.block1\.conv1\.weight"):
        load_memsam(missing, config=tiny)

    extra = dict(official)
    extra["module.memory.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"1 unexpected: memory\.extra_head\.weight"):
        load_memsam(extra, config=tiny)

    reshaped = dict(official)
    reshaped["module.memory.key_proj.d_proj.bias"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"shapes.*memory\.key_proj\.d_proj\.bias \(2,\) != \(1,\)"):
        load_memsam(reshaped, config=tiny)

    diverged = dict(official)
    key = "module.memory.key_encoder.neck.0.weight"
    diverged[key] = diverged[key] + 1.0
    with pytest.raises(ValueError, match="differ"):
        load_memsam(diverged, config=tiny)

    without_reinforcement = dataclasses.replace(tiny, reinforce=False)
    with pytest.raises(ValueError, match=r"4 unexpected: memory\.memory_reinforce\."):
        load_memsam(official, config=without_reinforcement)
    with pytest.raises(FileNotFoundError):
        load_memsam("/nonexistent/memsam.pth")


# --- (c) initialisation from Meta SAM weights ------------------------------------------------------
def _meta_sam_state_dict(embed_dim, depth, heads, global_blocks, window, seed=0) -> dict:
    """A Meta-format SAM state dict (1024 px, 64x64 tokens) from segment_anything's own classes."""
    modeling = sam_modeling()
    torch.manual_seed(seed)
    parts = {
        "image_encoder": modeling.ImageEncoderViT(
            img_size=1024, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=heads,
            mlp_ratio=4, out_chans=256, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, global_attn_indexes=global_blocks, window_size=window,
        ),
        "prompt_encoder": modeling.PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        "mask_decoder": modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    }
    state = {}
    for prefix, module in parts.items():
        _randomize_(module, seed)
        state.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    return state


def test_init_from_sam_tiny_interpolates_global_rel_pos():
    sam = _meta_sam_state_dict(48, 4, 2, (1, 3), 4)
    rows = torch.arange(127, dtype=torch.float32)[:, None]
    for block in (1, 3):
        sam[f"image_encoder.blocks.{block}.attn.rel_pos_h"] = rows.repeat(1, 24)
        sam[f"image_encoder.blocks.{block}.attn.rel_pos_w"] = 2 * rows + torch.arange(24.0)
    model = build_memsam(MemSAMConfig.tiny())
    report = init_from_sam(model, sam)

    assert report.unused == []
    assert sorted(report.loaded) == sorted(sam)
    assert report.interpolated == [f"image_encoder.blocks.{b}.attn.rel_pos_{a}" for b in (1, 3) for a in "hw"]
    state = model.state_dict()
    samus_markers = ("cnn_embed", "post_pos_embed", "Adapter")
    extras = {k for k in state if k.startswith("memory.") or any(m in k for m in samus_markers)}
    assert set(report.not_set) == extras
    # bilinear, align_corners=False, 127 -> 63 rows: row j samples the source at (j+0.5)*127/63-0.5
    expected_rows = (torch.arange(63, dtype=torch.float32) + 0.5) * 127 / 63 - 0.5
    for block in (1, 3):
        rel_h = state[f"image_encoder.blocks.{block}.attn.rel_pos_h"]
        rel_w = state[f"image_encoder.blocks.{block}.attn.rel_pos_w"]
        assert rel_h.shape == rel_w.shape == (63, 24)
        torch.testing.assert_close(rel_h, expected_rows[:, None].repeat(1, 24))
        torch.testing.assert_close(rel_w, 2 * expected_rows[:, None] + torch.arange(24.0))
    for key in sam:
        if key not in report.interpolated:
            assert torch.equal(state[key], sam[key]), key  # incl. 16x16 patch embed and 64x64 pos_embed


def test_init_from_sam_vit_b_name_mapping_on_meta():
    sam_modeling()  # registers segment_anything without its torchvision-importing __init__
    build_sam = importlib.import_module("segment_anything.build_sam")
    with torch.device("meta"):
        sam = build_sam.build_sam_vit_b(None).state_dict()  # Meta's own ViT-B layout
        model = build_memsam(MemSAMConfig())
    report = init_from_sam(model, sam)
    assert len(sam) == len(report.loaded) == 314
    assert report.unused == []
    global_rel_pos = [f"image_encoder.blocks.{b}.attn.rel_pos_{a}" for b in (2, 5, 8, 11) for a in "hw"]
    assert report.interpolated == sorted(global_rel_pos)
    assert len(report.not_set) == len(model.state_dict()) - 314
    assert model.image_encoder.blocks[2].attn.rel_pos_h.shape == (63, 64)
    wrong = dict(sam)
    wrong["mask_decoder.iou_token.weight"] = torch.zeros(2, 256, device="meta")
    with pytest.raises(ValueError, match="iou_token"):
        init_from_sam(model, wrong)


# --- (d) memory components --------------------------------------------------------------------------
def test_readout_affinity_is_a_softmax_over_all_memory_pixels():
    gen = torch.Generator().manual_seed(0)
    batch, channels, frames, height, width = 2, 8, 3, 4, 5
    memory_key = torch.randn(batch, channels, frames, height, width, generator=gen)
    shrinkage = 1 + torch.rand(batch, 1, frames, height, width, generator=gen) * 3
    query_key = torch.randn(batch, channels, height, width, generator=gen)
    selection = torch.rand(batch, channels, height, width, generator=gen)

    affinity = memory_affinity(memory_key, shrinkage, query_key, selection)
    assert affinity.shape == (batch, frames * height * width, height * width)
    assert (affinity >= 0).all()
    torch.testing.assert_close(affinity.sum(dim=1), torch.ones(batch, height * width))

    # brute force: -s_n * sum_c e_c (k_nc - q_c)^2 / sqrt(C), softmax over n
    mk = memory_key.flatten(2)[:, :, :, None]  # B C N 1
    qk = query_key.flatten(2)[:, :, None, :]  # B C 1 Q
    qe = selection.flatten(2)[:, :, None, :]
    distance = (qe * (mk - qk) ** 2).sum(dim=1)  # B N Q
    expected = torch.softmax(-distance * shrinkage.flatten(1)[:, :, None] / math.sqrt(channels), dim=1)
    torch.testing.assert_close(affinity, expected, rtol=1e-4, atol=1e-6)

    # readout of a memory holding the same value vector everywhere returns that vector
    value = torch.randn(batch, 6, 1, 1, 1, generator=gen).expand(batch, 6, frames, height, width)
    readout = memory_readout(affinity, value, (height, width))
    torch.testing.assert_close(readout, value[:, :, 0])


def test_reinforcement_is_zero_where_the_mask_is_zero():
    torch.manual_seed(0)
    module = ForegroundReinforcement(embed_dim=16)
    embedding = torch.randn(1, 16, 32, 32)
    mask = torch.rand(1, 1, 256, 256) * 4 + 0.5  # strictly positive logits ...
    mask[..., :, :128] = 0.0  # ... except the left half
    mask[..., 200:, :] = -2.0  # and negative logits at the bottom (logits, not probabilities)
    out = module(embedding, mask)
    assert out.shape == (1, 16, 32, 32)
    small = mask[..., ::8, ::8]  # nearest 256 -> 32 samples every 8th pixel
    zero = (small == 0).expand_as(out)
    assert torch.count_nonzero(out[zero]) == 0
    assert (out[~zero] != 0).all()
    # softmax over channels times the mask: channels sum back to the (downsampled) mask value
    torch.testing.assert_close(out.sum(dim=1, keepdim=True), small)


def test_conv_gru_gate_formula():
    gate = ConvGRUGate(feature_dim=3, hidden_dim=2)
    with torch.no_grad():
        gate.transform.weight.zero_()
        gate.transform.bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3, -0.7]))  # forget, update, new
    hidden = torch.randn(1, 2, 4, 4)
    out = gate(torch.randn(1, 3, 4, 4), hidden)
    f = torch.sigmoid(torch.tensor([0.5, -1.0]))[None, :, None, None]
    u = torch.sigmoid(torch.tensor([2.0, 0.0]))[None, :, None, None]
    n = torch.tanh(torch.tensor([0.3, -0.7]))[None, :, None, None]
    torch.testing.assert_close(out, f * hidden * (1 - u) + u * n)


def test_sensory_state_changes_every_frame(clip_run, clip):
    frames = clip.shape[0]
    states = clip_run["decoder_states"]
    assert len(states) == frames  # the memory decoder updates h once per frame
    assert states[0].abs().max() > 0
    for previous, current in zip(states, states[1:]):
        assert torch.isfinite(current).all()
        assert (current - previous).abs().max() > 1e-4
    # deep updates: always for the prompt value, then the seeded Bernoulli(0.2) draws per write
    draws = np.random.RandomState(1234).rand(frames - 1)
    assert len(clip_run["reinforce_calls"]) == 1 + int((draws < 0.2).sum())
    assert clip_run["mask_decoder_calls"] == 1 + frames  # the click, then every frame from memory


def test_value_encoding_updates_hidden_only_on_deep_update(tiny_model, clip):
    with torch.no_grad():
        embeddings, *_ = tiny_model.encode_frames(clip[None, :1])
        hidden = torch.randn(1, 64, 32, 32)
        mask = torch.randn(1, 1, 256, 256)
        value, same = tiny_model.encode_value(clip[:1], embeddings[:, 0], hidden, mask, deep_update=False)
        _, changed = tiny_model.encode_value(clip[:1], embeddings[:, 0], hidden, mask, deep_update=True)
    assert value.shape == (1, 256, 32, 32)
    assert torch.equal(same, hidden)
    assert (changed - hidden).abs().max() > 1e-4


def test_deep_update_schedule():
    assert deep_update_schedule(4, deep_update_every=1) == [True] * 4
    assert deep_update_schedule(5, deep_update_every=2) == [False, True, False, True, False]
    draws = np.random.RandomState(99).rand(9)
    assert deep_update_schedule(9, None, seed=99) == [bool(d < 0.2) for d in draws]
    with pytest.raises(ValueError):
        deep_update_schedule(3, deep_update_every=0)


# --- (e) a short clip ---------------------------------------------------------------------------------
def test_forward_clip_gives_finite_full_size_logits(clip_run, clip):
    logits = clip_run["logits"]
    assert logits.shape == (clip.shape[0], 1, 256, 256)
    assert torch.isfinite(logits).all()
    assert logits.std() > 0


def test_forward_clip_rejects_wrong_input(tiny_model):
    with pytest.raises(ValueError, match="256"):
        tiny_model.forward_clip(torch.zeros(2, 3, 128, 128), (10, 10))
    with pytest.raises(ValueError, match="one clip"):
        tiny_model.forward_clip(torch.zeros(1, 2, 3, 256, 256), (10, 10))


# --- opt-in: the official code itself ------------------------------------------------------------------
@pytest.fixture
def reference_modeling(monkeypatch):
    """The reference's ``modeling`` package, imported without running its package __init__
    (which needs torchvision), with ResNet-18 built unpretrained (its constructor downloads
    ImageNet weights) and einops stubbed if absent (imported, used only by the memory-less
    path). Its modules are removed from sys.modules afterwards."""
    directory = Path(os.environ["MEMSAM_REFERENCE_DIR"])
    if not (directory / "modeling" / "mem.py").is_file():
        pytest.fail(f"MEMSAM_REFERENCE_DIR={directory} has no modeling/mem.py")
    if importlib.util.find_spec("einops") is None:
        monkeypatch.setitem(sys.modules, "einops", types.SimpleNamespace(rearrange=None))
    package = types.ModuleType("memsam_reference")
    package.__path__ = [str(directory)]
    sys.modules["memsam_reference"] = package
    try:
        resnet = importlib.import_module("memsam_reference.modeling.resnet")
        unpretrained = resnet.resnet18
        monkeypatch.setattr(resnet, "resnet18", lambda pretrained=True, extra_dim=0: unpretrained(False, extra_dim))
        yield importlib.import_module("memsam_reference.modeling")
    finally:
        for name in [n for n in sys.modules if n == "memsam_reference" or n.startswith("memsam_reference.")]:
            del sys.modules[name]


@pytest.mark.skipif(
    not os.environ.get("MEMSAM_REFERENCE_DIR"),
    reason="set MEMSAM_REFERENCE_DIR to dengxl0520/MemSAM's models/segment_anything_memsam folder",
)
def test_matches_official_implementation(reference_modeling, clip):
    reference = reference_modeling
    tiny = MemSAMConfig.tiny()
    official = reference.MemSAM(
        image_encoder=reference.ImageEncoderViT(
            depth=tiny.depth, embed_dim=tiny.embed_dim, img_size=256, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=tiny.num_heads, patch_size=8,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=list(tiny.global_attn_indexes),
            window_size=tiny.window_size, out_chans=256,
        ),
        prompt_encoder=reference.PromptEncoder(
            embed_dim=256, image_embedding_size=(32, 32), input_image_size=(256, 256), mask_in_chans=16, batch_size=1
        ),
        mask_decoder=reference.MaskDecoder(
            num_multimask_outputs=3,
            transformer=reference.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        memory=reference.Mem(config={"key_dim": 64, "value_dim": 256, "hidden_dim": 64, "reinforce": True}),
    ).eval()
    _randomize_(official, seed=5)
    ours = load_memsam({f"module.{k}": v for k, v in official.state_dict().items()})
    frames = clip[:2]
    point = (torch.tensor([[[list(CLIP_POINT)]]]), torch.tensor([[1.0]]))
    with torch.no_grad():
        np.random.seed(1234)  # the reference draws its deep updates from the global numpy stream
        expected = official(frames[None], point)[0]
        got = ours.forward_clip(frames, CLIP_POINT, 1, seed=1234)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
