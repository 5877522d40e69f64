"""The self-sorting memory bank: update and resampling rules on hand-made embeddings, then the
bank inside MedSAM-2's predictor with the real sam2 model code and tiny random weights."""

import numpy as np
import pytest
import torch

from MemSegLogic.engines.memory_bank import (
    BankEntry,
    MemoryBanks,
    SelfSortingMemoryBank,
    memory_banks,
    resampling_probabilities,
    summed_dissimilarity,
)


def _entry(frame, memory, iou=0.9, descriptor=None, pass_id=0):
    memory = torch.as_tensor(memory, dtype=torch.float32).reshape(1, -1, 1, 1)
    descriptor = memory.flatten() if descriptor is None else torch.as_tensor(descriptor, dtype=torch.float32)
    return BankEntry((pass_id, frame), memory, torch.zeros_like(memory), None, iou, descriptor)


def test_summed_dissimilarity_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # cos: e0.e1 = 1, e0.e2 = 0, e1.e2 = 0 -> D = [0 + 1, 0 + 1, 1 + 1]
    np.testing.assert_allclose(summed_dissimilarity(embeddings).numpy(), [1.0, 1.0, 2.0], atol=1e-6)


def test_the_bank_keeps_the_most_dissimilar_entries_and_never_exceeds_k():
    bank = SelfSortingMemoryBank(capacity=3, iou_threshold=0.5)
    directions = {0: [1, 0, 0], 1: [0, 1, 0], 2: [0.99, 0.1, 0], 3: [0, 0, 1], 4: [0.7, 0.7, 0.1]}
    for frame, vector in directions.items():
        bank.offer(_entry(frame, vector))
        assert len(bank) <= 3
    # the near-duplicate of frame 0 (frame 2) and the in-between frame 4 are the redundant ones
    assert sorted(key[1] for key in bank.keys()) == [0, 1, 3]


def test_only_confident_frames_are_admitted():
    bank = SelfSortingMemoryBank(capacity=4, iou_threshold=0.7)
    assert bank.offer(_entry(0, [1, 0], iou=0.7))
    assert not bank.offer(_entry(1, [0, 1], iou=0.69))
    assert bank.keys() == [(0, 0)]


def test_prompted_frames_are_pinned_and_a_revisited_frame_replaces_itself():
    bank = SelfSortingMemoryBank(capacity=2, iou_threshold=0.0)
    prompt = _entry(5, [1, 0, 0])
    bank.pin(prompt)
    for frame, vector in ((6, [0.9, 0.1, 0]), (7, [0, 1, 0]), (8, [0, 0, 1])):
        bank.offer(_entry(frame, vector))
        assert prompt in bank.entries and len(bank) == 2
    # 7 and 8 are equally dissimilar to the rest: on a tie the older entry stays
    assert sorted(k[1] for k in bank.keys()) == [5, 7]
    revisit = _entry(7, [0, 1, 0], iou=0.95)  # the backward pass re-runs frame 7
    assert bank.offer(revisit)
    assert [e for e in bank.entries if e.key == (0, 7)] == [revisit] and len(bank) == 2


def test_resampling_probabilities_are_proportional_to_similarity():
    query = torch.tensor([1.0, 0.0])
    descriptors = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    p = resampling_probabilities(query, descriptors).numpy()
    cos = np.array([1.0, 1 / np.sqrt(2), 0.0, 0.0])  # the negative cosine counts as 0
    np.testing.assert_allclose(p, cos / cos.sum(), atol=1e-6)
    uniform = resampling_probabilities(query, torch.tensor([[0.0, 1.0], [-1.0, 0.0]])).numpy()
    np.testing.assert_allclose(uniform, [0.5, 0.5])


def test_draws_are_seeded_reproducible_and_follow_similarity():
    def bank_with(seed):
        bank = SelfSortingMemoryBank(capacity=8, iou_threshold=0.0, draws=1, seed=seed)
        for frame in range(4):
            descriptor = [1.0, 0.0] if frame == 0 else [0.2, 1.0]
            bank.offer(_entry(frame, np.eye(4)[frame], descriptor=descriptor))
        return bank

    query = torch.tensor([1.0, 0.0])
    bank_a, bank_b = bank_with(7), bank_with(7)
    seq_a = [bank_a.draw(query)[0].frame for _ in range(400)]
    seq_b = [bank_b.draw(query)[0].frame for _ in range(400)]
    assert seq_a == seq_b
    counts = np.bincount(seq_a, minlength=4) / 400
    cos = np.array([1.0] + [0.2 / np.hypot(0.2, 1.0)] * 3)
    np.testing.assert_allclose(counts, cos / cos.sum(), atol=0.06)
    assert [bank_with(8).draw(query)[0].frame for _ in range(400)] != seq_a
    # the current pass' prompted frames are attended anyway, so they are not drawn
    assert all(e.frame != 0 for e in bank_with(7).draw(query, exclude=[(0, 0)]))


def test_a_memory_drawn_twice_is_attended_once():
    bank = SelfSortingMemoryBank(capacity=4, iou_threshold=0.0, draws=6)
    bank.offer(_entry(0, [1.0, 0.0]))
    drawn = bank.draw(torch.tensor([1.0, 0.0]))
    assert len(drawn) == 1


def test_banks_per_direction_or_shared():
    per_direction = MemoryBanks(seed=3)
    assert per_direction.bank_for_direction() is not per_direction.bank_for_direction()
    shared = memory_banks("self-sorting", shared=True)
    assert shared.bank_for_direction() is shared.bank_for_direction()
    assert memory_banks("sam2") is None
    with pytest.raises(ValueError, match="memory must be one of"):
        memory_banks("fifo")
    with pytest.raises(ValueError, match="iou_threshold"):
        SelfSortingMemoryBank(iou_threshold=1.5)


# -- inside the real predictor -----------------------------------------------------------------
class RecordingBank(SelfSortingMemoryBank):
    """The real bank, logging every offer and the bank's size after it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.offers = []

    def offer(self, entry):
        admitted = super().offer(entry)
        self.offers.append((entry.key, entry.iou, admitted, len(self)))
        return admitted


class RecordingBanks(MemoryBanks):
    def __post_init__(self):
        super().__post_init__()
        self.made = []

    def bank_for_direction(self):
        bank = RecordingBank(self.capacity, self.iou_threshold, self.draws, self.seed + len(self.made))
        self.made.append(bank)
        return bank


def _frames(count=10, size=96):
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for n in range(count):
        disc = (yy - 48) ** 2 + (xx - 40 - n) ** 2 < (26 - 2 * abs(n - 5)) ** 2
        frames.append((40 + 30 * rng.random((size, size)) + 150 * disc).astype(np.uint8))
    return np.stack(frames)


def _seed():
    from MemSegLogic.core.prompt import SlicePrompt

    return {5: SlicePrompt(5, np.array([[44.0, 48.0]]), np.array([1]), np.array([22.0, 26.0, 70.0, 70.0]))}


def test_self_sorting_bank_in_the_sam2_predictor(tiny_sam2_checkpoint):
    pytest.importorskip("sam2")
    from MemSegLogic.engines import load_engine
    from MemSegLogic.progress import Monitor

    engine = load_engine(tiny_sam2_checkpoint.name, torch.device("cpu"))
    frames = _frames()
    # first learn what IoUs this random model predicts, then set the threshold between them
    probe = RecordingBanks(capacity=4, iou_threshold=0.0)
    engine.propagate(frames, _seed(), Monitor(), absent_slices=0, memory=probe)
    ious = sorted(iou for bank in probe.made for _, iou, _, _ in bank.offers)
    assert len(ious) == len(frames) - 1 and ious[0] < ious[-1]
    threshold = float(np.median(ious))

    banks = RecordingBanks(capacity=4, iou_threshold=threshold)
    first = engine.propagate(frames, _seed(), Monitor(), absent_slices=0, memory=banks)
    assert len(banks.made) == 2  # forward and backward
    for bank in banks.made:
        for key, iou, admitted, size in bank.offers:
            assert size <= 4
            if iou < threshold:
                assert not admitted
        assert all(e.pinned or e.iou >= threshold for e in bank.entries)
        assert any(e.pinned and e.frame == 5 for e in bank.entries)  # the prompted slice stays
    assert any(not admitted for bank in banks.made for _, _, admitted, _ in bank.offers)

    again = engine.propagate(frames, _seed(), Monitor(), absent_slices=0,
                             memory=RecordingBanks(capacity=4, iou_threshold=threshold))
    np.testing.assert_array_equal(first.logits, again.logits)  # same seed, same result
    stock = engine.propagate(frames, _seed(), Monitor(), absent_slices=0, memory=None)
    assert not np.array_equal(first.logits, stock.logits)  # the bank changes what is attended


def test_shared_bank_spans_the_passes_of_a_volume(tiny_sam2_checkpoint):
    pytest.importorskip("sam2")
    from MemSegLogic import Prompt, PropagationOptions, Volume, segment_volume

    k, j, i = np.indices((8, 26, 24))
    ball = ((k - 4) / 3.0) ** 2 + ((j - 13) / 8.0) ** 2 + ((i - 12) / 7.0) ** 2 < 1
    volume = Volume((np.random.default_rng(0).normal(0, 20, ball.shape) + 300 * ball).astype(np.float32))
    prompt = Prompt.from_points([[12, 13, 4]], box=[[6, 6, 4], [18, 20, 4]])
    results = [segment_volume(volume, prompt, model=tiny_sam2_checkpoint.name, device="cpu",
                              propagation=PropagationOptions(shared_memory=True, seed=seed)) for seed in (0, 0)]
    np.testing.assert_array_equal(results[0].probability, results[1].probability)
