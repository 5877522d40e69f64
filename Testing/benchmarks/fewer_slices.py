"""Fewer slices for the same answer: axes=3 with the other axes visiting every k-th slice.

    python Testing/benchmarks/fewer_slices.py                       # k = 1, 2, 3 on three cases
    python Testing/benchmarks/fewer_slices.py --steps 1 2 --cases "CTChest4 right lung" --json out.json

Each case (`accuracy_axes.load_case`, its box prompt on the reference's middle axial slice; the
first is the demo's) is segmented with ``axes=3`` and ``PropagationOptions(other_axes_step=k)``
for every k in one process, one run after the other, with LiteMedSAM's real weights on the
backend asked for (default OpenVINO fp32; the converted model comes from ``--weights``' cache and
is loaded before the first timed run). Per run: wall seconds, slices visited, slices the encoder
saw, and the 3D Dice of the default (weighted) fusion against the reference. ``ratio`` is a run's
time over the k=1 run of the same case. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "Testing" / "benchmarks")]

from accuracy_axes import CHEST_CASES, load_case  # this folder is on sys.path when run as a script

from MemSegLogic import PropagationOptions, SpeedOptions, segment_volume
from MemSegLogic.app.demo import seed_box
from MemSegLogic.core.metrics import dice

CASES = (CHEST_CASES[0], CHEST_CASES[1], "lung2")


def run_case(name: str, steps, speed: SpeedOptions) -> dict:
    volume, reference, preset = load_case(name)
    prompt, _ = seed_box(reference)
    rows = {}
    for step in steps:
        result = segment_volume(volume, prompt, model="medsam-lite", axes=3, device="cpu", preset=preset,
                                propagation=PropagationOptions(other_axes_step=step), speed=speed)
        rows[f"k={step}"] = {"seconds": result.seconds, "slices_visited": result.slices_visited,
                             "slices_encoded": result.slices_encoded, "visited_per_axis": result.visited_per_axis,
                             "skipped_axes": result.skipped_axes, "dice": dice(result.mask, reference)}
        print(f"{name} k={step}: " + json.dumps(rows[f"k={step}"]), file=sys.stderr, flush=True)
    base = rows[f"k={steps[0]}"]
    for row in rows.values():
        row["time_vs_first"] = row["seconds"] / base["seconds"]
        row["dice_change"] = row["dice"] - base["dice"]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--steps", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", type=pathlib.Path, default=REPO / ".cache" / "speed-benchmark" / "weights",
                        help="weights folder holding the converted-model cache")
    parser.add_argument("--json", type=pathlib.Path)
    options = parser.parse_args(argv)
    os.environ["MEMSEG_WEIGHTS_DIR"] = str(options.weights)
    import torch

    from MemSegLogic.engines import load_engine

    torch.set_num_threads(options.threads)
    speed = SpeedOptions(backend=options.backend, threads=options.threads)
    load_engine("medsam-lite", torch.device("cpu"), backend=options.backend, precision="fp32")  # converted, compiled
    results = {name: run_case(name, options.steps, speed) for name in options.cases}
    print(f"| case ({options.backend}, {options.threads} threads) | k | seconds | × vs k={options.steps[0]} | "
          "slices visited (K / I / J) | encoded | 3D Dice | Δ Dice |\n|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        for key, r in rows.items():
            per_axis = " / ".join(str(r["visited_per_axis"].get(a, "–")) for a in "KIJ")
            print(f"| {name} | {key[2:]} | {r['seconds']:.1f} | {1 / r['time_vs_first']:.2f} | {per_axis} | "
                  f"{r['slices_encoded']} | {r['dice']:.4f} | {r['dice_change']:+.4f} |")
    if options.json:
        options.json.write_text(json.dumps({"backend": options.backend, "precision": "fp32",
                                            "threads": options.threads, "prompt": "box", "fusion": "weighted",
                                            "cases": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
