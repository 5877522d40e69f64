"""Where an engine's networks run: PyTorch, or OpenVINO on the CPU.

Used by LiteMedSAM's TinyViT encoder and box decoder and MemSAM's ViT-B encoder alike
(`backend_options`, then `openvino_model`). OpenVINO runs them 1.5-2.2x faster than PyTorch eager
on a 2-core CPU (README, "Speed"), with the same fp32 arithmetic. It converts straight from the
PyTorch module (no ONNX exporter), and its reduced precision (bf16 on CPUs that have it) is one
compile option away. Each network is converted at first use from the verified weights and kept in
the weights folder (``converted/<name>``) with a manifest: the weights' SHA-256, the converter's
version and the SHA-256 of each converted file. A cache whose manifest does not match, or whose
files do not hash to it, is rebuilt, never used.
Without OpenVINO installed everything runs on PyTorch, with a one-line note.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import threading
import uuid
import warnings
from typing import Callable, Optional

import numpy as np

from ..errors import MemSegWarning
from ..runtime.checkpoints import sha256_of, weights_dir

BACKENDS = ("auto", "torch", "openvino")
# fp32: the exact path (OpenVINO told to keep f32); auto: the runtime's own default, bf16 on CPUs
# with AVX-512 BF16 / AMX. Not the default: it has not been checked on every real case.
PRECISIONS = ("fp32", "auto")
DEFAULT_BACKEND, DEFAULT_PRECISION = "auto", "fp32"
# Bumped whenever the way MemSeg converts changes: caches of an older scheme are rebuilt.
CONVERSION_SCHEME = 1
MANIFEST = "manifest.json"
MODEL_FILES = ("model.xml", "model.bin")


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def check_precision(precision) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device, note: Optional[Callable[[str], None]] = None) -> str:
    """The backend that will run: "auto" is OpenVINO on the CPU when it is installed, else
    PyTorch (always on CUDA / MPS). A runtime asked for but not installed falls back to PyTorch
    with a `MemSegWarning`; ``note`` hears the same for "auto" (a progress line, not a warning)."""
    check_backend(backend)
    on_cpu = getattr(device, "type", str(device)) == "cpu"
    if backend == "torch" or (backend == "auto" and not on_cpu):
        return "torch"
    if not on_cpu:
        raise ValueError(f"backend {backend!r} runs on the CPU only; the device is {device}: use backend='torch'")
    if openvino_available():
        return "openvino"
    message = "OpenVINO is not installed: the image encoder runs on PyTorch (pip install openvino for a faster CPU)"
    if backend == "auto":
        if note is not None:
            note(message)
    else:
        warnings.warn(message, MemSegWarning, stacklevel=3)
    return "torch"


def backend_options(backend: str, precision: str, device, note: Optional[Callable[[str], None]] = None) -> dict:
    """What makes an engine's encoder differ: the backend that will run (`resolve_backend`, so that
    "auto" and the backend it picks share an engine) and, for OpenVINO, the precision and the CPU
    threads it is compiled for (PyTorch's current count)."""
    resolved = resolve_backend(backend, device, note=note)
    check_precision(precision)
    if resolved != "openvino":
        return {"backend": resolved}
    import torch

    return {"backend": resolved, "precision": precision, "threads": torch.get_num_threads()}


def converter_version() -> str:
    import openvino

    return f"openvino {openvino.__version__}; memseg scheme {CONVERSION_SCHEME}"


def converted_dir() -> pathlib.Path:
    """Where converted models are kept: the weights folder's ``converted`` (weights shipped in a
    package may sit in a read-only site-packages)."""
    return weights_dir() / "converted"


class OpenVINOModel:
    """A network compiled by OpenVINO for the CPU, called like the PyTorch module it came from:
    tensors in, the same output tensor (or tuple of tensors) out."""

    def __init__(self, compiled):
        self._compiled = compiled
        # One call at a time: the compiled model's call shares one inference request (an engine is
        # shared by everything that runs the same model, e.g. a server's requests).
        self._lock = threading.Lock()

    def __call__(self, *inputs):
        import torch

        arrays = [torch.as_tensor(value).detach().cpu().numpy().astype(np.float32, copy=False) for value in inputs]
        with self._lock:
            outputs = self._compiled(arrays)
            # Copies: the runtime reuses its output buffers on the next call.
            tensors = tuple(torch.from_numpy(np.array(outputs[index], dtype=np.float32, copy=True))
                            for index in range(len(self._compiled.outputs)))
        return tensors[0] if len(tensors) == 1 else tensors


def openvino_model(module, example_input, name: str, weights_sha256: str, precision: str = DEFAULT_PRECISION,
                   threads: Optional[int] = None, cache: Optional[pathlib.Path] = None,
                   note: Optional[Callable[[str], None]] = None) -> OpenVINOModel:
    """``module`` (loaded from weights with SHA-256 ``weights_sha256``) compiled by OpenVINO,
    converted once and cached under ``cache / name`` (default: `converted_dir`). ``example_input``
    is a tensor, or a tuple of them for a module with several inputs."""
    import openvino as ov
    import torch

    check_precision(precision)
    folder = (converted_dir() if cache is None else pathlib.Path(cache)) / name
    key = {"weights_sha256": weights_sha256, "converter": converter_version()}
    if not _valid_cache(folder, key):
        if note is not None:
            note(f"converting the {name} for OpenVINO (once for these weights)")
        _convert(module, example_input, folder, key)
    config = {"INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
    if precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(str(folder / MODEL_FILES[0]), "CPU", config)
    return OpenVINOModel(compiled)


def _valid_cache(folder: pathlib.Path, key: dict) -> bool:
    """True only if the manifest names these weights and this converter and every file hashes to it."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or any(manifest.get(name) != value for name, value in key.items()):
            return False
        files = manifest.get("files")
        return isinstance(files, dict) and set(files) == set(MODEL_FILES) and all(
            sha256_of(folder / file) == digest for file, digest in files.items())
    except (OSError, ValueError):
        return False


def _convert(module, example_input, folder: pathlib.Path, key: dict) -> None:
    """Convert into a sibling folder, then move it into place in one rename: a crash, a cancel or
    another process converting at the same time leaves either no cache or a whole one."""
    import openvino as ov
    import torch

    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f"{folder.name}-partial-{uuid.uuid4().hex[:8]}")
    try:
        partial.mkdir()
        # The trace fixes shapes the models check in Python (one slice, one box): that is the
        # intent, so the tracer's warnings about it are not shown to the user.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            model = ov.convert_model(module.eval(), example_input=example_input)
        # compress_to_fp16=False: the default would store the weights in fp16 and lose the fp32 path.
        ov.save_model(model, str(partial / MODEL_FILES[0]), compress_to_fp16=False)
        manifest = {**key, "files": {file: sha256_of(partial / file) for file in MODEL_FILES}}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)  # a stale or corrupt cache: replaced, never read
        try:
            os.replace(partial, folder)
        except OSError:
            if not _valid_cache(folder, key):  # unless another process just put a whole one in place
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)

