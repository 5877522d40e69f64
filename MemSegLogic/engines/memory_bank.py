"""The self-sorting memory bank of MedSAM-2 (paper v2 §3.2, Eqs. 2-5), as a memory policy.

Stock SAM 2 attends to the prompted frames plus the 6 most recent frames. MedSAM-2 instead keeps
a bank of at most K memories chosen for confidence and diversity, and resamples from it for
every new frame:

- admission (Eq. 2): a frame's memory enters only if the decoder's predicted IoU >= a threshold;
- self-sorting (Eqs. 3-4): of the bank plus the new entry, keep the K with the largest summed
  cosine dissimilarity to all the others, D_i = sum_j (1 - cos(E_i, E_j)), computed on the mask
  memory features (what memory attention reads); prompted frames are pinned, never evicted;
- resampling (Eq. 5): per frame, draw memories with probability p_i = sim(F_t, F_i) / sum_j
  sim(F_t, F_j), where F is a frame's pooled image feature (the current slice is compared with
  the slices the memories came from; negative cosines count as 0), with a seeded generator.

Our choices where the paper is silent:
- K = 16 (the authors' 2D code); IoU threshold 0.7 (no published value; unmeasured with real
  weights); 6 draws per frame = the non-conditioning slots SAM 2's memory attention was trained
  with. Draws are with replacement as in Eq. 5, but a memory drawn twice is attended once: the
  draw selects memories, and duplicated tokens would re-weight attention in a way SAM 2 never saw.
- The prompted frames of the current pass are attended as SAM 2 does (temporal slot 0); draws
  come from the rest of the bank.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, List, Optional

import torch

from .base import MEMORY_POLICIES


@dataclasses.dataclass(eq=False)
class BankEntry:
    """One frame's memory. ``key`` = (pass id, frame index) makes entries of different passes
    distinct when a bank is shared across passes."""

    key: tuple
    memory: torch.Tensor  # maskmem_features (1, C, h, w)
    position: torch.Tensor  # its spatial position encoding (1, C, h, w)
    pointer: Optional[torch.Tensor]  # object pointer (1, 256)
    iou: float
    descriptor: torch.Tensor  # 1-D pooled image feature of the frame
    pinned: bool = False

    @property
    def pass_id(self) -> int:
        return self.key[0]

    @property
    def frame(self) -> int:
        return self.key[1]


def _unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    vectors = vectors.float()
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)


def summed_dissimilarity(embeddings: torch.Tensor) -> torch.Tensor:
    """D_i = sum over j != i of (1 - cos(E_i, E_j)) for the rows of ``embeddings`` (n, d)."""
    unit = _unit_rows(embeddings.flatten(1))
    cosine = unit @ unit.T
    n = cosine.shape[0]
    return (n - 1) - (cosine.sum(dim=1) - cosine.diagonal())


def resampling_probabilities(query: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
    """p_i proportional to cos(query, descriptor_i), negative cosines clipped to 0; uniform when
    nothing is similar at all."""
    unit = _unit_rows(descriptors.flatten(1))
    cosine = (unit @ _unit_rows(query.reshape(1, -1)).T).squeeze(1).clamp_min(0.0)
    total = cosine.sum()
    if total <= 0:
        return torch.full_like(cosine, 1.0 / len(cosine))
    return cosine / total


class SelfSortingMemoryBank:
    def __init__(self, capacity: int = 16, iou_threshold: float = 0.7, draws: int = 6, seed: int = 0):
        if capacity < 1 or draws < 1:
            raise ValueError(f"capacity and draws must be >= 1, got {capacity} and {draws}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
        self.capacity = capacity
        self.iou_threshold = iou_threshold
        self.draws = draws
        self.generator = torch.Generator().manual_seed(seed)
        self.entries: List[BankEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def keys(self) -> list:
        return [entry.key for entry in self.entries]

    def pin(self, entry: BankEntry) -> None:
        """Add a prompted frame's memory; it is never evicted (it replaces an entry of the same key)."""
        entry.pinned = True
        self._put(entry)

    def offer(self, entry: BankEntry) -> bool:
        """Admit ``entry`` if confident enough, then keep the K most dissimilar entries. Returns
        whether it is in the bank afterwards."""
        if entry.iou < self.iou_threshold:
            return False
        self._put(entry)
        return any(e is entry for e in self.entries)

    def _put(self, entry: BankEntry) -> None:
        """Add ``entry``, replacing the entry of the same frame (the backward pass re-runs frames
        between seeds) unless only a pin may replace it, then keep the K most dissimilar."""
        self.entries = [e for e in self.entries if e.key != entry.key or (e.pinned and not entry.pinned)] + [entry]
        self._sort()

    def _sort(self) -> None:
        if len(self.entries) <= self.capacity:
            return
        scores = summed_dissimilarity(torch.stack([e.memory.detach().flatten().cpu() for e in self.entries]))
        free_slots = max(self.capacity - sum(e.pinned for e in self.entries), 0)
        unpinned = [i for i, e in enumerate(self.entries) if not e.pinned]
        # most dissimilar first; stable, so on a tie the older entry stays
        ranked = sorted(unpinned, key=lambda i: -float(scores[i]))
        keep = set(ranked[:free_slots]) | {i for i, e in enumerate(self.entries) if e.pinned}
        self.entries = [e for i, e in enumerate(self.entries) if i in keep]

    def draw(self, query: torch.Tensor, exclude: Iterable[tuple] = ()) -> List[BankEntry]:
        """The memories to attend to for a frame with descriptor ``query``: ``draws`` samples with
        replacement, proportional to similarity, each distinct memory returned once."""
        excluded = set(exclude)
        pool = [e for e in self.entries if e.key not in excluded]
        if not pool:
            return []
        probabilities = resampling_probabilities(query.cpu(), torch.stack([e.descriptor.cpu() for e in pool]))
        picks = torch.multinomial(probabilities, self.draws, replacement=True, generator=self.generator)
        return [pool[i] for i in sorted(set(picks.tolist()))]


@dataclasses.dataclass
class MemoryBanks:
    """Hands out banks for the passes of one segmentation: a fresh bank per direction, or one
    bank for all passes (``shared``, as the paper sorts memories from all orientations together).
    Seeds are derived from ``seed`` in pass order, so a run is reproducible."""

    capacity: int = 16
    iou_threshold: float = 0.7
    draws: int = 6
    seed: int = 0
    shared: bool = False

    def __post_init__(self):
        self._shared_bank: Optional[SelfSortingMemoryBank] = None
        self._counter = itertools.count()
        self._pass_ids = itertools.count()

    def new_pass_id(self) -> int:
        return next(self._pass_ids)

    def bank_for_direction(self) -> SelfSortingMemoryBank:
        if self.shared and self._shared_bank is not None:
            return self._shared_bank
        bank = SelfSortingMemoryBank(self.capacity, self.iou_threshold, self.draws, self.seed + next(self._counter))
        if self.shared:
            self._shared_bank = bank
        return bank


def memory_banks(memory: str, shared: bool = False, seed: int = 0, **settings) -> Optional[MemoryBanks]:
    """`MemoryBanks` for ``memory="self-sorting"``, None for stock SAM 2 memory (``"sam2"``)."""
    if memory not in MEMORY_POLICIES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_POLICIES)}, got {memory!r}")
    if memory == "sam2":
        return None
    return MemoryBanks(shared=shared, seed=seed, **settings)
