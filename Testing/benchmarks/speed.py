"""Speed of MemSeg against stock SAM 2, on the same data, weights and device, in one run.

    python Testing/benchmarks/speed.py --preset cpu            # this README's CPU figures
    python Testing/benchmarks/speed.py --preset gpu            # 512x512x200 CT on CUDA
    python Testing/benchmarks/speed.py --preset smoke          # seconds; what CI runs

Rows (each in its own process, so peak memory is the row's own; model loading is timed apart):

- ``sam2-stock``: Meta's `SAM2VideoPredictor` as a user would run it: the seed axis' slices
  exported as JPEGs (timed apart), ``init_state`` on the folder, the box on the seed slice,
  ``propagate_in_video`` forward and backward. The baseline of every ratio.
- ``memseg-naive6``: six directions the plain way: every slice of the three axes, one slice
  encoded at a time, no early stop, no crop.
- ``memseg-axes3`` / ``memseg-axes1``: MemSeg's defaults (early stop, crop, slices encoded in
  batches ahead of the memory loop).
- ``lite-axes1`` / ``lite-axes3``: LiteMedSAM with its real weights (the CPU engine), with Dice,
  its encoder on PyTorch; ``-openvino``: the same on OpenVINO fp32 (``time_vs_torch``: the ratio
  to the PyTorch row of the same run), ``-openvino-auto``: OpenVINO's own precision (bf16 where
  the CPU has it). The first conversion is in ``load_s``, not in the wall time. ``lite-click-…``:
  the same from one click at the reference's deepest point on the seed slice instead of the box.
  Each lite row also times ``first_result_s``: from the call to the seed slice's mask reaching the
  preview callback, what a user sees first.
- ``memsam-10`` / ``memsam-100``: MemSAM over a 10- and a 100-frame cine (pydicom's real echo
  loop, repeated to length), prompted on frame 0; the second of two calls (the engine is kept).

MedSAM-2 and MemSAM run random weights in the official formats: the work per slice is a trained
model's. Where the object is decides how many slices a run visits, and random weights do not know:
the MedSAM-2 rows take it from the reference mask (``ReferenceExtentEngine``: the model runs in
full on every slice it visits; the early stop, the crop and the seeds of the other axes see the
reference there), i.e. the slice counts of a model that finds the object exactly.

Prints a Markdown table and writes JSON (``--json``) with device, GPU, driver, dtype and versions.
Not a test: it measures; CI runs ``--preset smoke`` only to keep the command working.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
for entry in (REPO, REPO / "Testing"):  # run from a checkout, installed or not
    sys.path.insert(0, str(entry))

ROWS = ("sam2-stock", "memseg-naive6", "memseg-axes3", "memseg-axes1", "lite-axes1", "lite-axes3",
        "lite-axes1-openvino", "lite-axes3-openvino", "lite-axes3-openvino-auto", "lite-click-axes1", "lite-click-axes3",
        "lite-click-axes3-openvino", "memsam-10", "memsam-100")
BASELINE = "sam2-stock"
SAM2_CONFIG = "configs/sam2/sam2_hiera_t.yaml"  # MedSAM2_pretrain's (Hiera-T, SAM 2.0)
RANDOM_SAM2 = "bench-sam2-random"


@dataclasses.dataclass(frozen=True)
class Preset:
    volume: str  # "phantom", "chest" (slicerio CTChest4 right lung), "lung-clinical" (pyradiomics lung1 at 512x512x200)
    input_size: int  # MedSAM-2 input (1024 = MedSAM2_pretrain's own; smaller: the CPU option)
    memsam_tiny: bool
    rows: tuple = ROWS


PRESETS = {
    "smoke": Preset("phantom", 128, memsam_tiny=True,
                    rows=("sam2-stock", "memseg-naive6", "memseg-axes3", "memseg-axes1", "lite-axes1",
                          "lite-click-axes1", "memsam-10")),
    "cpu": Preset("chest", 512, memsam_tiny=False),
    # the laptop target: one axis through a 256 x 256 x 100 volume
    "cpu-target": Preset("phantom-large", 512, memsam_tiny=False,
                         rows=("sam2-stock", "memseg-axes1", "lite-axes1", "lite-axes1-openvino")),
    "gpu": Preset("lung-clinical", 1024, memsam_tiny=False),
}


# -- data --------------------------------------------------------------------------------------
def load_volume(kind: str, cache: pathlib.Path):
    """(Volume, reference mask KJI, intensity preset)."""
    if kind == "phantom":
        return phantom((12, 48, 48), (0.9, 0.9, 2.5))
    if kind == "phantom-large":
        return phantom((100, 256, 256), (0.8, 0.8, 2.0))
    if kind == "chest":
        from MemSegLogic.app.samples import load_chest_ct

        volume, segments = load_chest_ct()
        return volume, segments["right lung"], "ct-chest"
    if kind == "lung-clinical":
        return _clinical_lung(cache)
    raise ValueError(f"unknown volume {kind!r}")


def phantom(shape_kji, spacing_ijk):
    """(Volume, reference, preset): a bright ellipsoid over 3/4 of the slices, in noise."""
    from MemSegLogic import Volume

    k, j, i = (np.arange(n) / n for n in shape_kji)
    reference = (((k[:, None, None] - 0.5) / 0.375) ** 2 + ((j[None, :, None] - 0.5) / 0.25) ** 2
                 + ((i[None, None, :] - 0.46) / 0.21) ** 2) <= 1
    array = (60 * np.random.default_rng(0).random(shape_kji) + 140 * reference).astype(np.float32)
    return Volume(array, np.diag(list(spacing_ijk) + [1.0])), reference.astype(np.uint8), None


def _clinical_lung(cache: pathlib.Path):
    """pyradiomics' lung1 CT (512 x 512, 5 mm slices) resampled along K to 200 slices, the size
    of a clinical chest CT; its tumour label resampled with nearest neighbours."""
    import SimpleITK as sitk

    from MemSegLogic import Volume
    from MemSegLogic.app.samples import fetch_pyradiomics_data, load_pyradiomics_case

    saved = cache / "lung1-512x512x200.npz"
    if not saved.exists():
        volume, label = load_pyradiomics_case(fetch_pyradiomics_data(REPO / ".cache" / "test-data"), "lung1")
        slices = 200
        scale = volume.array.shape[0] / slices
        ijk_to_ras = volume.ijk_to_ras.copy()
        ijk_to_ras[:3, 2] *= scale
        ijk_to_ras[:3, 3] += volume.ijk_to_ras[:3, 2] * (scale - 1) / 2  # same extent, centres moved

        def resample(array, interpolator):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((1.0, 1.0, 1.0))
            size = (array.shape[2], array.shape[1], slices)
            return sitk.GetArrayFromImage(sitk.Resample(
                image, size, sitk.Transform(), interpolator, (0.0, 0.0, (scale - 1) / 2), (1.0, 1.0, scale)))

        array = resample(volume.array.astype(np.float32), sitk.sitkLinear)
        reference = resample(label.astype(np.uint8), sitk.sitkNearestNeighbor)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(saved, array=array, reference=reference, ijk_to_ras=ijk_to_ras)
    stored = np.load(saved)
    return Volume(stored["array"], stored["ijk_to_ras"]), stored["reference"], "ct-chest"


def echo_frames(count: int) -> np.ndarray:
    """pydicom's real colour echo loop (30 frames, 240 x 320) in grey, repeated to ``count`` frames."""
    from pydicom.data import get_testdata_file

    from MemSegLogic.cine import Cine, memsam_range

    cine = Cine.read(get_testdata_file("examples_ybr_color.dcm"))
    gray = cine.gray()
    return memsam_range(gray[np.arange(count) % len(gray)])


# -- the reference-extent device -----------------------------------------------------------------
def reference_extent(reference: np.ndarray):
    """Make `propagate_volume` learn where the object is from ``reference`` (see module doc):
    returns the engine class to use, after hooking `run_pass` to hand each pass its frames."""
    from MemSegLogic.core.geometry import frame_spacing, slice_stack
    from MemSegLogic.engines.medsam2 import MedSAM2Engine
    from MemSegLogic.volume3d import propagation

    class ReferenceExtentEngine(MedSAM2Engine):
        """Random weights run in full on every visited slice; what they found is replaced by
        the reference (a benchmark stand-in for a trained model, never used for accuracy)."""

        reference_frames = None

        def propagate(self, frames, seeds, monitor, absent_slices=None, memory=None):
            result = super().propagate(frames, seeds, monitor, absent_slices=absent_slices, memory=memory)
            visited = result.visited
            result.logits[visited] = np.where(self.reference_frames[visited], 12.0, -12.0)
            return result

        def _object_present(self, state, frame_index, logits):
            return bool(self.reference_frames[frame_index].any())

    original = propagation.run_pass
    marks = (reference > 0).astype(np.uint8) * 255

    def run_pass(engine, image, spacing_ijk, axis, seeds, window, monitor, absent_slices=None, memory=None,
                 square_pixels=True, *more, **options):
        stack = slice_stack(marks, axis)
        frames = (window or propagation.Window.whole(stack.shape)).crop(stack)
        grid = propagation.SquarePixels(frames.shape[1:],
                                        frame_spacing(spacing_ijk, axis) if square_pixels else (1.0, 1.0))
        engine.reference_frames = grid.frames(frames) > 127
        return original(engine, image, spacing_ijk, axis, seeds, window, monitor, absent_slices, memory, square_pixels,
                        *more, **options)

    propagation.run_pass = run_pass
    return ReferenceExtentEngine


# -- one row, in its own process ---------------------------------------------------------------------
def run_row(row: str, preset: Preset, device_name: str, work: pathlib.Path, options) -> dict:
    import torch

    from MemSegLogic.runtime.devices import resolve_device, set_cpu_threads

    device = resolve_device(device_name)
    set_cpu_threads(options.threads)
    if row.startswith("memsam"):
        return _memsam_row(int(row.split("-")[1]), preset, device, work)
    volume, reference, intensity = load_volume(preset.volume, work)
    from MemSegLogic.app.demo import seed_box

    prompt, seed_slice = seed_box(reference)
    started = time.perf_counter()
    if row == "sam2-stock":
        figures = _stock_row(volume, intensity, prompt, seed_slice, preset, device, work)
    elif row.startswith("memseg"):
        figures = _memseg_row(row, volume, reference, intensity, prompt, preset, device, work, options)
    else:
        figures = _lite_row(row, volume, reference, intensity, prompt, device)
    figures["voxels"] = list(volume.array.shape)
    figures.setdefault("process_s", time.perf_counter() - started)
    if device.type == "cuda":
        figures["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return figures


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _counting_encoder(predictor) -> list:
    """Counts the frames the image encoder sees (the stock predictor has no counter of its own)."""
    counted = [0]
    encode = predictor.forward_image

    def forward_image(images):
        counted[0] += len(images)
        return encode(images)

    predictor.forward_image = forward_image
    return counted


def _start_gpu_peak(device):
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _stock_row(volume, intensity, prompt, seed_slice, preset, device, work) -> dict:
    import torch
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor

    from MemSegLogic.core.intensity import DEFAULT_PRESET, to_uint8
    from MemSegLogic.engines.medsam2 import sam2_overrides
    from MemSegLogic.runtime.devices import autocast

    started = time.perf_counter()
    predictor = build_sam2_video_predictor(SAM2_CONFIG, str(work / "weights" / "sam2-random.pt"), device=str(device),
                                           hydra_overrides_extra=sam2_overrides(preset.input_size))
    _sync(device)
    load_s = time.perf_counter() - started
    counted = _counting_encoder(predictor)
    started = time.perf_counter()
    image = to_uint8(volume.array, intensity or DEFAULT_PRESET)
    folder = pathlib.Path(tempfile.mkdtemp(dir=work))
    for k, frame in enumerate(image):  # the seed axis (K) as the JPEG folder stock SAM 2 reads
        Image.fromarray(frame, mode="L").save(folder / f"{k:05d}.jpg", quality=95)
    export_s = time.perf_counter() - started
    box = np.array([prompt.box[0, 0], prompt.box[0, 1], prompt.box[1, 0], prompt.box[1, 1]], dtype=np.float32)
    _start_gpu_peak(device)
    started = time.perf_counter()
    visited = set()
    with torch.inference_mode(), autocast(device):
        state = predictor.init_state(str(folder))
        predictor.add_new_points_or_box(state, seed_slice, 1, box=box)
        for reverse in (False, True):
            for frame, _, masks in predictor.propagate_in_video(state, start_frame_idx=seed_slice, reverse=reverse):
                masks[0, 0].float().cpu().numpy()  # the mask a user keeps, on the host like ours
                visited.add(frame)
    _sync(device)
    return {"wall_s": time.perf_counter() - started, "load_s": load_s, "export_s": export_s,
            "slices_visited": len(visited), "slices_encoded": counted[0]}


def _memseg_row(row, volume, reference, intensity, prompt, preset, device, work, options) -> dict:
    from MemSegLogic.core.intensity import DEFAULT_PRESET, to_uint8
    from MemSegLogic.engines.memory_bank import memory_banks
    from MemSegLogic.runtime.checkpoints import get_checkpoint
    from MemSegLogic.volume3d.fusion import fuse
    from MemSegLogic.volume3d.propagation import propagate_volume

    engine_class = reference_extent(reference)
    naive = row == "memseg-naive6"
    started = time.perf_counter()
    checkpoint = dataclasses.replace(get_checkpoint(RANDOM_SAM2), image_size=preset.input_size)
    engine = engine_class(checkpoint, work / "weights" / "sam2-random.pt", device,
                          encode_batch=1 if naive else options.encode_batch, compile_encoder=options.compile)
    _sync(device)
    load_s = time.perf_counter() - started
    _start_gpu_peak(device)
    started = time.perf_counter()
    image = to_uint8(volume.array, intensity or DEFAULT_PRESET)
    seeds = {prompt.slice_index: prompt.to_slice_prompt()}
    passes = propagate_volume(engine, image, volume.spacing, prompt.axis, seeds, axes=1 if row == "memseg-axes1" else 3,
                              absent_slices=0 if naive else None, crop=not naive, memory=memory_banks("self-sorting"))
    fuse([p.probability for p in passes], "weighted", 0.5, [p.axis for p in passes], volume.spacing, passes[0].seeds)
    _sync(device)
    return {"wall_s": time.perf_counter() - started, "load_s": load_s, "slices_encoded": engine.slices_encoded,
            "slices_visited": sum(p.slices_visited for p in passes), "encode_batch": engine.predictor.encode_batch,
            "skipped_axes": passes.skipped}


def lite_row_parts(row: str) -> tuple:
    """lite[-click]-axes{1,3}[-{backend}[-{precision}]] -> (click, axes, [backend, precision])."""
    parts = row.split("-")[1:]
    click = parts[0] == "click"
    axes, *variant = parts[1:] if click else parts
    return click, int(axes[-1]), variant


def _lite_row(row, volume, reference, intensity, prompt, device) -> dict:
    from MemSegLogic import segment_volume
    from MemSegLogic.app.demo import seed_clicks
    from MemSegLogic.core.metrics import dice
    from MemSegLogic.engines import load_engine
    from MemSegLogic.volume3d import SpeedOptions

    click, axes, variant = lite_row_parts(row)
    if click:  # one positive click at the reference's deepest point, where a user clicks
        prompt, _ = seed_clicks(reference)
    backend = variant[0] if variant else "torch"
    precision = variant[1] if len(variant) > 1 else "fp32"
    speed = SpeedOptions(backend=backend, precision=precision)
    started = time.perf_counter()
    load_engine("medsam-lite", device, backend=backend, precision=precision)  # kept by the engine cache
    load_s = time.perf_counter() - started
    _start_gpu_peak(device)
    first_shown = []  # when the seed slice reached the preview: what a user sees first
    started = time.perf_counter()
    result = segment_volume(volume, prompt, model="medsam-lite", axes=axes, device=str(device), preset=intensity,
                            speed=speed, preview=lambda update: first_shown or first_shown.append(time.perf_counter()))
    return {"wall_s": result.seconds, "load_s": load_s, "slices_visited": result.slices_visited,
            "slices_encoded": result.slices_encoded, "dice": dice(result.mask, reference),
            "first_result_s": first_shown[0] - started}


def _memsam_row(frames_count: int, preset: Preset, device, work) -> dict:
    from MemSegLogic.core.prompt import SlicePrompt
    from MemSegLogic.engines.memsam import load_memsam_engine

    frames = echo_frames(frames_count)
    seed = SlicePrompt(0, np.array([[150.0, 110.0]]), np.array([1]), None)  # inside the left ventricle
    path = work / "weights" / ("memsam-tiny.pth" if preset.memsam_tiny else "memsam.pth")
    started = time.perf_counter()
    engine = load_memsam_engine(path, device)
    load_s = time.perf_counter() - started
    engine.segment(frames[:2], seed)  # warm-up: first-call allocations are not the steady state
    before = engine.slices_encoded
    _start_gpu_peak(device)
    _sync(device)
    started = time.perf_counter()
    engine.segment(frames, seed)
    _sync(device)
    return {"wall_s": time.perf_counter() - started, "load_s": load_s, "slices_visited": frames_count,
            "slices_encoded": engine.slices_encoded - before, "voxels": list(frames.shape)}


# -- the parent: data, weights, rows, table ---------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process' peak resident memory. Linux' VmHWM starts afresh at exec; ru_maxrss keeps the
    parent's peak across it (every row would show at least the parent's)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def prepare(preset: Preset, work: pathlib.Path) -> None:
    """Random weights in the official formats, written once into the work folder."""
    from random_weights import save_random_memsam, save_random_sam2

    weights = work / "weights"
    if not (weights / "sam2-random.pt").exists():
        save_random_sam2(weights / "sam2-random.pt", SAM2_CONFIG, 1024)
    name = "memsam-tiny.pth" if preset.memsam_tiny else "memsam.pth"
    if any(r.startswith("memsam") for r in preset.rows) and not (weights / name).exists():
        save_random_memsam(weights / name, tiny=preset.memsam_tiny)


def register_random_sam2(work: pathlib.Path) -> None:
    from MemSegLogic.runtime.checkpoints import Checkpoint, register_checkpoint, sha256_of

    path = work / "weights" / "sam2-random.pt"
    register_checkpoint(Checkpoint(
        name=RANDOM_SAM2, engine="medsam2", filename=path.name, sha256=sha256_of(path), config=SAM2_CONFIG,
        image_size=1024, license="benchmark", description="random weights (timing only)"), replace=True)


def environment(device_name: str, preset_name: str, preset: Preset, options) -> dict:
    import sam2
    import torch

    from MemSegLogic.runtime.devices import resolve_device

    device = resolve_device(device_name)
    info = {"preset": preset_name, "device": str(device), "python": platform.python_version(),
            "torch": torch.__version__, "sam2": getattr(sam2, "__version__", _version("sam2")),
            "numpy": np.__version__, "openvino": _version("openvino"),
            "cpu": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
            "threads": options.threads or torch.get_num_threads(),
            "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32",
            "volume": preset.volume, "medsam2_input_px": preset.input_size, "memsam": "tiny" if preset.memsam_tiny
            else "ViT-B (official size)", "encode_batch": options.encode_batch, "compile": options.compile}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda, driver=_nvidia_driver())
    return info


def _version(distribution: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _nvidia_driver() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def with_ratios(rows: dict) -> dict:
    """slices/s and the ratios to the stock baseline's wall time, for the volume rows."""
    base = rows.get(BASELINE)
    for name, figures in rows.items():
        if "error" in figures:
            continue
        figures["slices_per_s"] = figures["slices_visited"] / figures["wall_s"]
        figures["encoded_per_s"] = figures["slices_encoded"] / figures["wall_s"]
        if base and "error" not in base and not name.startswith("memsam"):
            figures["time_vs_stock"] = figures["wall_s"] / base["wall_s"]
        torch_row = None
        if name.startswith("lite-"):  # the same prompt and axes on PyTorch
            click, axes, _ = lite_row_parts(name)
            torch_row = rows.get(f"lite{'-click' if click else ''}-axes{axes}")
        if torch_row is not None and torch_row is not figures and "error" not in torch_row:
            figures["time_vs_torch"] = figures["wall_s"] / torch_row["wall_s"]
    return rows


def table(rows: dict) -> str:
    lines = ["| row | wall s | × stock | × torch | slices visited | slices encoded | visited/s | encoded/s | "
             "peak RSS MB | peak GPU MB | load s | first result s | Dice |", "|" + "---|" * 13]

    def cell(figures, key, fmt):
        return fmt.format(figures[key]) if key in figures else "–"

    for name, f in rows.items():
        if "error" in f:
            lines.append(f"| {name} | failed: {f['error']} |" + " |" * 11)
            continue
        lines.append(" | ".join([f"| {name}", cell(f, "wall_s", "{:.2f}"), cell(f, "time_vs_stock", "{:.2f}"),
                                 cell(f, "time_vs_torch", "{:.2f}"),
                                 cell(f, "slices_visited", "{}"), cell(f, "slices_encoded", "{}"),
                                 cell(f, "slices_per_s", "{:.2f}"), cell(f, "encoded_per_s", "{:.2f}"),
                                 cell(f, "peak_rss_mb", "{:.0f}"), cell(f, "peak_gpu_mb", "{:.0f}"),
                                 cell(f, "load_s", "{:.1f}"), cell(f, "first_result_s", "{:.2f}"),
                                 cell(f, "dice", "{:.4f}")]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rows", help=f"comma-separated subset of {', '.join(ROWS)}")
    parser.add_argument("--encode-batch", type=int, help="MemSeg's encode batch (default: the device's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile MemSeg's image encoder")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    parser.add_argument("--work", type=pathlib.Path, default=REPO / ".cache" / "speed-benchmark")
    parser.add_argument("--json", type=pathlib.Path, help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    preset = PRESETS[options.preset]
    work = options.work / options.preset
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MEMSEG_WEIGHTS_DIR"] = str(work / "weights")

    if options.child:
        register_random_sam2(work)
        figures = run_row(options.child, preset, options.device, work, options)
        figures["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(figures))
        return 0

    rows = options.rows.split(",") if options.rows else list(preset.rows)
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}: choose from {', '.join(ROWS)}")
    prepare(preset, work)
    load_volume(preset.volume, work)  # resampled once, before any row is timed
    results = {}
    for row in rows:
        command = [sys.executable, __file__, "--child", row, "--preset", options.preset, "--device", options.device,
                   "--work", str(options.work)] + sum(
            ([flag, str(value)] for flag, value in (("--encode-batch", options.encode_batch),
                                                    ("--threads", options.threads)) if value), [])
        command += ["--compile"] if options.compile else []
        print(f"… {row}", file=sys.stderr, flush=True)
        completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if completed.returncode:
            results[row] = {"error": (completed.stderr.strip().splitlines() or ["?"])[-1]}
            print(completed.stderr[-3000:], file=sys.stderr)
        else:
            results[row] = json.loads(completed.stdout.strip().splitlines()[-1])
    report = {"environment": environment(options.device, options.preset, preset, options), "rows": with_ratios(results)}
    print(table(report["rows"]))
    print(json.dumps(report["environment"]))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report, indent=2))
    return 1 if any("error" in figures for figures in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
