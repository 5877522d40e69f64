"""Choosing the compute device and the precision that goes with it."""

from __future__ import annotations

import contextlib

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
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def out_of_memory_error(device) -> DeviceError:
    return DeviceError(
        f"the {device.type.upper()} device ran out of memory: close other programs using it, "
        "use a smaller model or crop the volume, or run with device='cpu'")


@contextlib.contextmanager
def out_of_memory_as_device_error(device):
    """Within this block, the framework's out-of-memory errors become one clear `DeviceError`."""
    try:
        yield
    except RuntimeError as error:
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
