"""Choosing the compute device and the precision that goes with it."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

from ..errors import DeviceError


def resolve_device(device="auto"):
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; explicit names are checked."""
    import torch

    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {device!r}: use auto, cuda, mps or cpu") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but this PyTorch has no usable CUDA GPU: use device='auto' or 'cpu'")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("Apple MPS was requested but is not available: use device='auto' or 'cpu'")
    return resolved


def autocast(device):
    """bf16 autocast on CUDA (how SAM 2 and MedSAM-2 run there); full precision elsewhere."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's and MPS' out-of-memory errors, PyTorch's CPU allocator failing, and numpy's MemoryError."""
    import torch

    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text


def out_of_memory_error(device) -> DeviceError:
    if device.type == "cpu":
        return DeviceError(
            "the computer ran out of memory: close other programs, segment one axis (axes=1, CLI --axes 1), "
            "crop the volume to the region of interest, or use a smaller model input size")
    return DeviceError(
        f"the {device.type.upper()} device ran out of memory: close other programs using it, "
        "use a smaller model or crop the volume, or run with device='cpu'")


@contextlib.contextmanager
def out_of_memory_as_device_error(device):
    """Within this block, the framework's out-of-memory errors become one clear `DeviceError`."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        if is_out_of_memory(error):
            raise out_of_memory_error(device) from error
        raise


def run_shrinking_batch(encode, batch: int, device, on_shrink=None):
    """``encode(batch)`` with the largest batch (at most ``batch``) the device has memory for.

    Out of memory, the batch is halved and tried again, down to one item; ``on_shrink(new_batch)``
    hears about each retry (so the caller can say so and keep the smaller size). Returns
    (result, batch used). One item still out of memory raises `out_of_memory_error`."""
    import torch

    while True:
        try:
            return encode(batch), batch
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            error_text = str(error).splitlines()[0] if str(error) else type(error).__name__
        # Out of the except block: the traceback no longer pins the failed batch's tensors.
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if batch == 1:
            raise out_of_memory_error(device) from RuntimeError(error_text)
        batch //= 2
        if on_shrink is not None:
            on_shrink(batch)


def set_cpu_threads(threads) -> int:
    """Threads PyTorch uses on the CPU (None or 0: leave PyTorch's choice). Returns the count in use."""
    import torch

    if threads:
        if int(threads) < 1:
            raise ValueError(f"threads must be a positive count, got {threads}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


# Peak memory of a 3D run on the CPU, per voxel: the input and its 8-bit copy, one float32
# probability per axis, the fused probability and mask, and the per-slice stacks the passes
# resample. Calibrated on a 512x512x300 CT (2.7 GB peak RSS with axes=1 and medsam-lite); three
# axes add two float32 probabilities and the fusion's weights.
BYTES_PER_VOXEL = {1: 27, 3: 40}
RUNTIME_BYTES = 500 << 20  # PyTorch and the model's working memory beyond its weights


def available_memory_bytes() -> Optional[int]:
    """Memory this run may use: ``MEMSEG_MEMORY_BYTES`` if set (a cap on a shared machine), else
    what the system reports available, or None where it cannot tell."""
    configured = os.environ.get("MEMSEG_MEMORY_BYTES")
    if configured:
        try:
            return int(float(configured))
        except ValueError:
            raise DeviceError(f"MEMSEG_MEMORY_BYTES={configured!r} is not a number of bytes") from None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(voxels: int, axes: int, weights_bytes: int, device) -> None:
    """Refuse, before any work, a run whose estimated peak exceeds the memory at hand (CPU and
    Apple MPS, which share the system's memory; CUDA runs shrink their batches instead)."""
    if device.type not in ("cpu", "mps"):
        return
    available = available_memory_bytes()
    if available is None:
        return
    needed = voxels * BYTES_PER_VOXEL.get(axes, BYTES_PER_VOXEL[3]) + 3 * weights_bytes + RUNTIME_BYTES
    if needed > available:
        fewer_axes = " segment one axis (axes=1, CLI --axes 1)," if axes > 1 else ""
        raise DeviceError(
            f"this run needs about {needed / 2**30:.1f} GB of memory and {available / 2**30:.1f} GB is available: "
            f"{fewer_axes} crop the volume to the region of interest (Slicer: Crop Volume), or close other programs")
