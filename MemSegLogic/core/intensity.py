"""Intensity presets: map raw voxel values to the 8-bit images the models were trained on.

Always on a copy: the caller's array (and the Slicer volume node behind it) is never touched,
unlike peers that overwrite the node's voxels with the windowed image.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ..errors import InvalidVolumeError


@dataclasses.dataclass(frozen=True)
class IntensityPreset:
    name: str
    description: str
    window: Optional[float] = None  # CT: window width (HU)
    level: Optional[float] = None  # CT: window centre (HU)
    percentiles: Optional[tuple] = None  # MR: clip to these percentiles of the volume

    def bounds(self, array: np.ndarray) -> tuple:
        """(low, high) raw values mapped to 0 and 255."""
        if self.window is not None:
            return self.level - self.window / 2.0, self.level + self.window / 2.0
        low, high = np.percentile(array, self.percentiles)
        return float(low), float(high)


PRESETS = {
    preset.name: preset
    for preset in (
        IntensityPreset("ct-abdomen", "CT soft tissue, W400/L40", window=400, level=40),
        IntensityPreset("ct-lung", "CT lung, W1500/L-600", window=1500, level=-600),
        # [-1000, 400] HU: lungs dark but distinct from air, soft tissue grey (LiteMedSAM segments
        # lungs markedly better with it than with the lung window; see README benchmarks)
        IntensityPreset("ct-chest", "CT chest, W1400/L-300", window=1400, level=-300),
        IntensityPreset("ct-bone", "CT bone, W1800/L400", window=1800, level=400),
        IntensityPreset("ct-brain", "CT brain, W80/L40", window=80, level=40),
        IntensityPreset("mr", "MR or any modality: clip to the 0.5-99.5 percentiles", percentiles=(0.5, 99.5)),
    )
}
PRESET_NAMES = tuple(PRESETS)
DEFAULT_PRESET = "mr"  # percentile clipping adapts to any modality; CT users pick a window


def to_uint8(array: np.ndarray, preset="mr") -> np.ndarray:
    """A new uint8 array: ``array`` clipped to the preset's range and scaled to 0..255.

    ``preset`` is a name from `PRESETS`, an `IntensityPreset`, or a (low, high) pair of raw values.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown intensity preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
        preset = PRESETS[preset]
    low, high = preset.bounds(array) if isinstance(preset, IntensityPreset) else map(float, preset)
    if not high > low:
        raise InvalidVolumeError(
            f"intensity range [{low:g}, {high:g}] is empty for this image: choose another preset")
    scaled = (np.asarray(array, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.rint(np.clip(scaled, 0, 255, out=scaled), out=scaled).astype(np.uint8)
