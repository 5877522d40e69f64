"""Cases per hour of `memseg batch` with 1 and 2 workers on a local Ray (medsam-lite, real CT).

    python Testing/benchmarks/batch_throughput.py                         # README figures: 8 whole-volume cases
    python Testing/benchmarks/batch_throughput.py --cases 4 --slices 4    # a quick sanity figure

The cohort: slicerio's real chest CT (CTChest4), the right and left lungs in turn, each prompted
by the reference's bounding box on its middle axial slice (what a user drags); ``--slices`` crops
each case to that many axial slices around the seed (each pair of cases one slice further, so
the inputs differ). Each worker count runs the whole cohort into a fresh folder through
`run_batch`, as `memseg batch` does: a local Ray started for the run, ``--workers`` actors that
load the model once. Wall time includes starting Ray and loading the model, as a user waits for
them; ``steady`` divides the summed case seconds by the workers instead (the rate of a long
cohort). Prints a Markdown table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from MemSegLogic import __version__
from MemSegLogic.app.demo import seed_box
from MemSegLogic.app.samples import load_chest_ct
from MemSegLogic.batch import run_batch
from MemSegLogic.io.segmentation_io import write_mask

LUNGS = ("right lung", "left lung")


def build_cohort(folder: pathlib.Path, cases: int, slices: int, axes: int) -> pathlib.Path:
    volume, segments = load_chest_ct()
    rows = []
    for n in range(cases):
        name = LUNGS[n % 2]
        reference = segments[name]
        if slices:
            span = np.flatnonzero(reference.any(axis=(1, 2)))
            middle = (span.min() + span.max()) // 2  # around the lung's middle, one slice further every pair of cases
            first = int(np.clip(middle - slices // 2 + n // 2, 0, volume.shape_kji[0] - slices))
            case_volume = volume.slab(first, slices)
            case_reference = reference[first:first + slices]
        else:
            case_volume, case_reference = volume, reference
        image, label = folder / f"case{n:03d}.nrrd", folder / f"case{n:03d}_label.nrrd"
        case_volume.write(image)
        write_mask(label, case_reference, case_volume.ijk_to_ras)
        prompt, _ = seed_box(case_reference)
        box = case_volume.ijk_to_ras_points(prompt.box).ravel()
        rows.append({"case": f"case{n:03d}", "image": image.name, "box": ",".join(f"{v:.6f}" for v in box),
                     "reference": label.name, "preset": "ct-chest", "axes": axes})
    manifest = folder / "cohort.csv"
    with open(manifest, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--slices", type=int, default=0, help="axial slices per case (0: the whole 34-slice CT)")
    parser.add_argument("--axes", type=int, choices=(1, 3), default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=pathlib.Path, default=REPO / "Testing" / "benchmarks" / "results" / "batch-throughput-cpu.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="memseg-batch-bench-") as scratch:
        scratch = pathlib.Path(scratch)
        manifest = build_cohort(scratch, args.cases, args.slices, args.axes)
        for workers in args.workers:
            started = time.perf_counter()
            report = run_batch(manifest, scratch / f"out-{workers}", workers=workers, quiet=True)
            wall = time.perf_counter() - started
            done = [r for r in report.records if r.status == "done"]
            case_seconds = sum(r.seconds for r in done)
            rows.append({"workers": workers, "cases": len(report.records), "done": len(done),
                         "wall_s": round(wall, 1), "cases_per_hour": round(3600 * len(done) / wall, 1),
                         "steady_cases_per_hour": round(3600 * len(done) * workers / case_seconds, 1) if done else None,
                         "mean_case_s": round(case_seconds / len(done), 1) if done else None,
                         "mean_dice": round(float(np.mean([r.dice for r in done])), 4) if done else None,
                         "failed": [f"{r.case}: {r.message}" for r in report.records if r.status == "failed"]})
    print(f"\n{args.cases} cases, {'whole CT' if not args.slices else f'{args.slices} slices each'}, axes={args.axes}, "
          f"medsam-lite on cpu, {os.cpu_count()} cores\n")
    print("| workers | cases done | wall s | cases/hour | steady cases/hour | mean s a case | mean Dice |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['done']}/{row['cases']} | {row['wall_s']} | {row['cases_per_hour']} | "
              f"{row['steady_cases_per_hour']} | {row['mean_case_s']} | {row['mean_dice']} |")
    import ray
    import torch

    document = {"memseg": __version__, "ray": ray.__version__, "torch": torch.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                "cases": args.cases, "slices": args.slices, "axes": args.axes, "model": "medsam-lite", "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1))
    print(f"\n{args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
