"""3D Dice of one-axis vs six-orientation propagation on real CT/MR, from the same single seed.

    python Testing/benchmarks/accuracy_axes.py [--model medsam-lite] [--device cpu] [--cases ...]
    python Testing/benchmarks/accuracy_axes.py --rescore .cache/accuracy-axes

Cases: both lungs of slicerio's CTChest4 and the pyradiomics lesions (lung1, lung2, brain1,
brain2, breast1). Prompts (``--prompts``), all on the reference's middle axial (K) slice: ``box``,
its bounding box (what a user would drag); ``one-click``, one click at its deepest interior
point (the pixel farthest from its edge); ``three-clicks``, that click plus two background
clicks 5 pixels beside the object. Each case is segmented once with ``axes=1`` and once with ``axes=3``; the
``axes=3`` run is scored with every fusion mode, re-fused from its per-axis probabilities (the
passes do not depend on the fusion). Each case's probabilities, seconds and slice counts are
saved (``--save``, default ``.cache/accuracy-axes``), so ``--rescore`` rebuilds the table from
them after a change to the fusion without running the model again. Prints a Markdown table
(pasted into README "Accuracy") and, with ``--per-slice``, each run's Dice on every slice of the
reference (where a pass ends early, or loses the object, shows there). Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Optional

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout, installed or not

from MemSegLogic import PropagationOptions, segment_volume
from MemSegLogic.app.demo import seed_box, seed_clicks
from MemSegLogic.app.samples import (
    PYRADIOMICS_CASES,
    fetch_pyradiomics_data,
    load_chest_ct,
    load_pyradiomics_case,
)
from MemSegLogic.core.geometry import AXIS_NAMES
from MemSegLogic.core.metrics import dice
from MemSegLogic.volume3d.fusion import FUSION_MODES, fuse

CHEST_CASES = ("CTChest4 right lung", "CTChest4 left lung")
PRESETS = {"lung1": "ct-chest", "lung2": "ct-chest", "brain1": "mr", "brain2": "mr", "breast1": "mr"}
CACHE = REPO / ".cache" / "test-data"
SAVED = REPO / ".cache" / "accuracy-axes"
PROMPTS = {"box": seed_box, "one-click": seed_clicks, "three-clicks": lambda reference: seed_clicks(reference, 2)}


def load_case(name: str):
    """(volume, reference mask, preset)."""
    if name in CHEST_CASES:
        volume, segments = load_chest_ct()
        return volume, segments[name.split(" ", 1)[1]], "ct-chest"
    volume, reference = load_pyradiomics_case(fetch_pyradiomics_data(CACHE), name)
    return volume, reference, PRESETS[name]


def run_case(name: str, model: str, device: str, save: pathlib.Path,
             propagation: Optional[PropagationOptions] = None, prompt_kind: str = "box",
             axes_runs=(1, 3)) -> pathlib.Path:
    """Segment one case with axes=1 and axes=3 (or only those in ``axes_runs``; a run left out
    scores as the other) from one kind of prompt and save what scoring needs. A prompt on which
    the model finds nothing scores 0 (the error is kept)."""
    from MemSegLogic.errors import NothingFoundError

    volume, reference, preset = load_case(name)
    prompt, seed_slice = PROMPTS[prompt_kind](reference)
    runs, errors = {}, {}
    for axes in axes_runs:
        try:
            runs[axes] = segment_volume(volume, prompt, model=model, device=device, preset=preset, axes=axes,
                                        propagation=propagation)
        except NothingFoundError as error:
            errors[f"axes={axes}"] = str(error)
    nothing = np.zeros(reference.shape, np.float32)
    one, six = runs.get(1), runs.get(3)
    if len(axes_runs) == 1:  # the run left out is saved as the one made; the table prints "–" for it
        one, six = (runs.get(axes_runs[0]),) * 2
    timings = {"axes=1 s": one.seconds if one else 0.0, "axes=1 slices": one.slices_visited if one else 0,
               "axes=3 s": six.seconds if six else 0.0, "axes=3 slices": six.slices_visited if six else 0,
               "model": model, "device": device, "skipped": six.skipped_axes if six else {}, "errors": errors,
               "prompt": prompt_kind, "runs": list(axes_runs)}
    save.mkdir(parents=True, exist_ok=True)
    path = save / f"{name.replace(' ', '_')}{'' if prompt_kind == 'box' else '_' + prompt_kind}.npz"
    axis_probability = six.axis_probability if six else {"K": nothing}
    np.savez_compressed(path, case=name, reference=reference, spacing=volume.spacing,
                        axes1=one.probability if one else nothing,
                        seed_axis="K", seed_slices=np.array([seed_slice]),
                        timings=json.dumps(timings), **{f"axis_{a}": p for a, p in axis_probability.items()})
    return path


def per_slice(path: pathlib.Path) -> str:
    """Each run's Dice on every K slice the reference covers (axes=1, then axes=3 weighted)."""
    saved = np.load(path)
    reference = saved["reference"] > 0
    row = score(path)
    names = sorted((key[len("axis_"):] for key in saved.files if key.startswith("axis_")), key=lambda n: n != "K")
    fused = fuse([saved[f"axis_{n}"] for n in names], "weighted", 0.5, [AXIS_NAMES.index(n) for n in names],
                 saved["spacing"], saved["seed_slices"])[1]
    slices = np.flatnonzero(reference.any(axis=(1, 2)))
    lines = [f"{row['case']} ({row.get('prompt', 'box')}), seed K={int(saved['seed_slices'][0])}: Dice per K slice"]
    for label, mask in (("axes=1", saved["axes1"] > 0.5), ("axes=3", fused > 0)):
        if not made(row, label):
            continue
        cells = " ".join(f"{k}:{dice(mask[k], reference[k]):.2f}" for k in slices)
        lines.append(f"  {label}: {cells}")
    return "\n".join(lines)


def score(path: pathlib.Path) -> dict:
    """One table row from a saved case: Dice of axes=1, of axes=3 fused every way, of each axis."""
    saved = np.load(path)
    reference, spacing = saved["reference"], saved["spacing"]
    seed_axis = str(saved["seed_axis"]) if "seed_axis" in saved.files else "K"
    # the seed axis first, as fusion expects; cases saved before the seed was stored: recompute it
    seed_slices = saved["seed_slices"] if "seed_slices" in saved.files else [seed_box(reference)[1]]
    names = sorted((key[len("axis_"):] for key in saved.files if key.startswith("axis_")),
                   key=lambda name: name != seed_axis)
    probabilities = [saved[f"axis_{name}"] for name in names]
    axes = [AXIS_NAMES.index(name) for name in names]
    row = {"case": str(saved["case"]), "prompt": "box", **json.loads(str(saved["timings"])),
           "axes=1": dice(saved["axes1"] > 0.5, reference)}
    for mode in FUSION_MODES:
        row[f"axes=3 {mode}"] = dice(fuse(probabilities, mode, 0.5, axes, spacing, seed_slices)[1], reference)
    for name, probability in zip(names, probabilities):  # each axis alone, where it looked
        row[f"{name} alone"] = dice(np.nan_to_num(probability) > 0.5, reference)
    return row


def made(row: dict, key: str) -> bool:
    """Whether the run a table column shows was made (older results: both were)."""
    return (1 if key == "axes=1" else 3) in row.get("runs", (1, 3))


def table(rows) -> str:
    model, device = rows[0]["model"], rows[0]["device"]
    lines = [f"3D Dice, `{model}` on {device}, prompts on the middle axial slice of the reference "
             "(nothing found = 0; –: run not made):", "",
             "| case | prompt | axes=1 | " + " | ".join(f"axes=3 {m}" for m in FUSION_MODES) + " | K / I / J alone | "
             "slices 1 / 3 | seconds 1 / 3 |",
             "|---|---|---|" + "---|" * len(FUSION_MODES) + "---|---|---|"]
    keys = ["axes=1"] + [f"axes=3 {m}" for m in FUSION_MODES]
    cell = lambda row, key: f"{row[key]:.4f}" if made(row, key) else "–"
    for r in rows:
        alone = " / ".join(f"{r[f'{a} alone']:.3f}" if f"{a} alone" in r else "skipped" for a in "KIJ")
        alone = alone if made(r, "axes=3") else "–"
        slices, seconds = ([f"{r[f'axes={n} {what}']:.0f}" if made(r, f"axes={n}") else "–" for n in (1, 3)]
                           for what in ("slices", "s"))
        lines.append(f"| {r['case']} | {r['prompt']} | " + " | ".join(cell(r, key) for key in keys)
                     + f" | {alone} | {' / '.join(slices)} | {' / '.join(seconds)} |")
    for prompt in dict.fromkeys(r["prompt"] for r in rows):
        mine = [r for r in rows if r["prompt"] == prompt]

        def mean(key):
            values = [r[key] for r in mine if made(r, key)]
            return f"**{np.mean(values):.4f}**" if len(values) == len(mine) else "–"
        lines.append(f"| **mean** | {prompt} | " + " | ".join(mean(key) for key in keys) + " | | | |")
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
    parser.add_argument("--prompts", nargs="*", choices=list(PROMPTS), default=["box"],
                        help="prompt kinds, each a row per case (default: box)")
    parser.add_argument("--axes", nargs="*", type=int, choices=(1, 3), default=[1, 3],
                        help="runs per case (default both; one alone: the other column repeats it)")
    parser.add_argument("--per-slice", action="store_true", help="also print each run's Dice on every slice")
    parser.add_argument("--json", type=pathlib.Path, help="also write the rows (and per-slice Dice) to this file")
    parser.add_argument("--save", type=pathlib.Path, default=SAVED, help="folder for each case's results (.npz)")
    parser.add_argument("--rescore", type=pathlib.Path, metavar="FOLDER",
                        help="score the cases saved in FOLDER instead of running the model")
    args = parser.parse_args(argv)
    if args.rescore:
        paths = sorted(args.rescore.glob("*.npz"))
    else:
        paths = []
        square = {"engine": None, "yes": True, "no": False}[args.square_pixels]
        for name in args.cases:
            for kind in args.prompts:
                started = time.perf_counter()
                propagation = PropagationOptions(crop=not args.no_crop, square_pixels=square,
                                                 crop_frames=args.crop_frames)
                paths.append(run_case(name, args.model, args.device, args.save, propagation, kind, tuple(args.axes)))
                row = score(paths[-1])
                print(f"{name} ({kind}): " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("axes=")
                                                       and isinstance(v, float) and not k.endswith(" s"))
                      + f" ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    order = {name: n for n, name in enumerate(args.cases)}
    kinds = list(PROMPTS)
    rows = sorted((score(path) for path in paths),
                  key=lambda row: (kinds.index(row["prompt"]), order.get(row["case"], len(order))))
    print(table(rows))
    slices = [per_slice(path) for path in paths] if args.per_slice else []
    print("\n".join(slices))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "per_slice": slices}, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
