"""3D Dice of one-axis vs six-orientation propagation on real CT/MR, from the same single seed.

    python Testing/benchmarks/accuracy_axes.py [--model medsam-lite] [--device cpu] [--cases ...]

Cases: both lungs of slicerio's CTChest4 and the pyradiomics lesions (lung1, lung2, brain1,
brain2, breast1). The seed is the reference's bounding box on its middle axial (K) slice — what a
user would drag. Each case is segmented once with ``axes=1`` and once with ``axes=3``; the
``axes=3`` run is scored fused by mean probability and, re-fused from its per-axis
probabilities, by majority vote. Prints a Markdown table (pasted into README "Accuracy") and
the seconds and slices each run took. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout, installed or not

from MemSegLogic import segment_volume
from MemSegLogic.data import PYRADIOMICS_CASES, dice, fetch_pyradiomics_data, load_chest_ct, load_pyradiomics_case
from MemSegLogic.demo import seed_box
from MemSegLogic.fusion import fuse

CHEST_CASES = ("CTChest4 right lung", "CTChest4 left lung")
PRESETS = {"lung1": "ct-chest", "lung2": "ct-chest", "brain1": "mr", "brain2": "mr", "breast1": "mr"}
CACHE = REPO / ".cache" / "test-data"


def load_case(name: str):
    """(volume, reference mask, preset)."""
    if name in CHEST_CASES:
        volume, segments = load_chest_ct()
        return volume, segments[name.split(" ", 1)[1]], "ct-chest"
    volume, reference = load_pyradiomics_case(fetch_pyradiomics_data(CACHE), name)
    return volume, reference, PRESETS[name]


def measure(name: str, model: str, device: str, **options) -> dict:
    volume, reference, preset = load_case(name)
    prompt, _ = seed_box(reference)
    row = {"case": name, "voxels": int(reference.sum())}
    one = segment_volume(volume, prompt, model=model, device=device, preset=preset, axes=1, **options)
    row["axes=1"] = dice(one.mask, reference)
    row["axes=1 s"], row["axes=1 slices"] = one.seconds, one.slices_visited
    six = segment_volume(volume, prompt, model=model, device=device, preset=preset, axes=3, **options)
    row["axes=3 mean"] = dice(six.mask, reference)
    _, voted = fuse(list(six.axis_probability.values()), "vote")
    row["axes=3 vote"] = dice(voted, reference)
    row["axes=3 s"], row["axes=3 slices"] = six.seconds, six.slices_visited
    for axis, probability in six.axis_probability.items():  # each axis alone, where it looked
        row[f"{axis} alone"] = dice(np.nan_to_num(probability) > 0.5, reference)
    return row


def table(rows, model: str, device: str) -> str:
    lines = [f"3D Dice, `{model}` on {device}, one box on the middle axial slice of the reference:", "",
             "| case | axes=1 | axes=3 mean | axes=3 vote | slices 1 / 3 | seconds 1 / 3 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['axes=1']:.4f} | {r['axes=3 mean']:.4f} | {r['axes=3 vote']:.4f} | "
                     f"{r['axes=1 slices']} / {r['axes=3 slices']} | {r['axes=1 s']:.0f} / {r['axes=3 s']:.0f} |")
    mean = lambda key: float(np.mean([r[key] for r in rows]))
    lines.append(f"| **mean** | **{mean('axes=1'):.4f}** | **{mean('axes=3 mean'):.4f}** | "
                 f"**{mean('axes=3 vote'):.4f}** | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="medsam-lite")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="*", default=list(CHEST_CASES) + list(PYRADIOMICS_CASES))
    parser.add_argument("--no-crop", action="store_true", help="later axes visit whole slices")
    parser.add_argument("--crop-frames", action="store_true", help="later axes also crop each frame to the object")
    parser.add_argument("--square-pixels", choices=("engine", "yes", "no"), default="engine",
                        help="resample thick-axis frames to square pixels (default: the engine's choice)")
    args = parser.parse_args(argv)
    rows = []
    for name in args.cases:
        started = time.perf_counter()
        square = {"engine": None, "yes": True, "no": False}[args.square_pixels]
        row = measure(name, args.model, args.device, crop=not args.no_crop, square_pixels=square,
                      crop_frames=args.crop_frames)
        rows.append(row)
        details = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.endswith("alone"))
        print(f"{name}: axes=1 {row['axes=1']:.4f}, axes=3 mean {row['axes=3 mean']:.4f}, "
              f"vote {row['axes=3 vote']:.4f} ({details}; {time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)
    print(table(rows, args.model, args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
