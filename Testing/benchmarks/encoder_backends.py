"""LiteMedSAM's image encoder alone, per backend: milliseconds a slice, agreement with PyTorch, memory.

    python Testing/benchmarks/encoder_backends.py                 # 2 threads, median of 7
    python Testing/benchmarks/encoder_backends.py --threads 4 --repeats 11 --json encoder.json

Each backend runs in its own process (so peak RSS is its own) on the same real input: the middle
slice of slicerio's CTChest4, preprocessed as the engine does, with the real medsam-lite weights.
The converted model comes from the weights folder's cache (``--weights``; its first conversion is
timed apart, as ``load_s``). ``max_abs_diff`` is against the PyTorch embedding of the same slice.
Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "Testing" / "benchmarks")]

import numpy as np
from speed import peak_rss_mb  # this folder is on sys.path when run as a script

BACKENDS = ("torch", "openvino-fp32", "openvino-auto")


def _input():
    from MemSegLogic.app.demo import DEMO_PRESET
    from MemSegLogic.app.samples import load_chest_ct
    from MemSegLogic.core.intensity import to_uint8
    from MemSegLogic.models.lite_medsam import preprocess_slice

    volume, _ = load_chest_ct()
    return preprocess_slice(to_uint8(volume.array, DEMO_PRESET)[volume.array.shape[0] // 2])[0]


def run_backend(name: str, repeats: int, reference: pathlib.Path) -> dict:
    import torch

    from MemSegLogic.engines import load_engine

    backend, _, precision = name.partition("-")
    image = _input()
    started = time.perf_counter()
    engine = load_engine("medsam-lite", torch.device("cpu"), backend=backend, precision=precision or "fp32")
    load_s = time.perf_counter() - started
    embedding = engine.encode(image)  # warm-up: first-call allocations are not the steady state
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        embedding = engine.encode(image)
        times.append(time.perf_counter() - started)
    figures = {"ms_per_slice": 1000 * statistics.median(times), "ms_min": 1000 * min(times), "load_s": load_s,
               "threads": torch.get_num_threads()}
    if backend == "torch":
        np.save(reference, embedding.numpy())
    else:
        figures["max_abs_diff"] = float(np.abs(embedding.numpy() - np.load(reference)).max())
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--weights", type=pathlib.Path, default=REPO / ".cache" / "speed-benchmark" / "weights",
                        help="weights folder holding the converted-model cache")
    parser.add_argument("--json", type=pathlib.Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=pathlib.Path, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    os.environ["MEMSEG_WEIGHTS_DIR"] = str(options.weights)
    if options.child:
        import torch

        torch.set_num_threads(options.threads)
        figures = run_backend(options.child, options.repeats, options.reference)
        figures["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        reference = pathlib.Path(folder) / "torch.npy"
        for name in BACKENDS:  # torch first: the others are compared with its embedding
            print(f"… {name}", file=sys.stderr, flush=True)
            completed = subprocess.run(
                [sys.executable, __file__, "--child", name, "--threads", str(options.threads), "--repeats",
                 str(options.repeats), "--weights", str(options.weights), "--reference", str(reference)],
                capture_output=True, text=True)
            if completed.returncode:
                print(completed.stderr[-3000:], file=sys.stderr)
                results[name] = {"error": (completed.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
    base = results["torch"].get("ms_per_slice")
    print(f"| encoder ({options.threads} threads, median of {options.repeats}) | ms / slice | × faster | "
          "max abs diff | peak RSS MB | load s |\n|---|---|---|---|---|---|")
    for name, f in results.items():
        if "error" in f:
            print(f"| {name} | failed: {f['error']} | | | | |")
            continue
        speedup = f"{base / f['ms_per_slice']:.2f}" if base else "–"
        diff = f"{f['max_abs_diff']:.1e}" if "max_abs_diff" in f else "–"
        print(f"| {name} | {f['ms_per_slice']:.0f} | {speedup} | {diff} | {f['peak_rss_mb']:.0f} | {f['load_s']:.1f} |")
    if options.json:
        options.json.write_text(json.dumps({"threads": options.threads, "repeats": options.repeats,
                                            "backends": results}, indent=2))
    return 1 if any("error" in f for f in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
