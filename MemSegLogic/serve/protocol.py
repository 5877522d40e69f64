"""What client and server exchange, in one place: the API version, volumes as compressed NRRD
bytes, prompts and options as JSON, and the job's JSON summaries.

Voxels travel as NRRD (SimpleITK, gzip) so any tool can open an upload; the exact IJK->RAS matrix
travels beside them in the JSON, because NRRD's spacing/direction split can change the last bit
of an oblique matrix, and the volume's spacing steers fusion. Options go by dataclass field name,
so a field added to `PropagationOptions` or `SpeedOptions` passes through without a change here.
Nothing here imports torch: the client needs it.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import pathlib
import tempfile
from typing import Optional

import numpy as np

from ..core.prompt import Prompt
from ..core.volume import Volume
from ..errors import InvalidPromptError, InvalidVolumeError, MemSegError

API_VERSION = 1
API_PREFIX = f"/v{API_VERSION}"
VERSION_HEADER = "MemSeg-API-Version"  # sent by the client on every request; the server checks it
NRRD_MEDIA_TYPE = "application/octet-stream"


class ServerError(MemSegError):
    """The MemSeg server could not be reached, refused the request, or lost the job."""


class InvalidRequestError(ServerError, ValueError):
    """The server refused an argument (a plain ValueError there, e.g. an unknown option)."""


class VersionMismatchError(ServerError):
    """Client and server speak different API versions."""


def version_mismatch_message(server_api: object, server_version: object, client_version: str) -> str:
    return (f"this MemSeg {client_version} speaks server API v{API_VERSION}, the server runs MemSeg {server_version} "
            f"with API v{server_api}: install the same MemSeg version on both sides")


# -- volumes --------------------------------------------------------------------------------------
def volume_to_nrrd(volume: Volume) -> bytes:
    """The volume as gzip-compressed NRRD bytes (LPS on disk, as every NRRD)."""
    import SimpleITK as sitk

    from ..io.volume_io import image_from_volume

    with tempfile.TemporaryDirectory(prefix="memseg-serve-") as folder:
        path = os.path.join(folder, "volume.nrrd")
        sitk.WriteImage(image_from_volume(volume), path, useCompression=True)
        return pathlib.Path(path).read_bytes()


def volume_from_nrrd(data: bytes, ijk_to_ras=None, what: str = "image") -> Volume:
    """A `Volume` from NRRD bytes; ``ijk_to_ras`` (the exact matrix sent beside them) replaces
    the file's once checked to agree with it. Unreadable bytes -> `InvalidVolumeError`."""
    import SimpleITK as sitk

    from ..io.volume_io import volume_from_image

    if not data:
        raise InvalidVolumeError(f"the {what} is empty (0 bytes)")
    with tempfile.TemporaryDirectory(prefix="memseg-serve-") as folder:
        path = os.path.join(folder, "volume.nrrd")
        pathlib.Path(path).write_bytes(data)
        try:
            image = sitk.ReadImage(path, imageIO="NrrdImageIO")
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
            raise InvalidVolumeError(f"the {what} is not a readable NRRD file ({reason})") from None
    volume = volume_from_image(image)
    if ijk_to_ras is None:
        return volume
    exact = matrix_from_json(ijk_to_ras, what)
    scale = max(1.0, float(np.abs(exact).max()))
    if not np.allclose(volume.ijk_to_ras, exact, rtol=0, atol=1e-6 * scale):
        raise InvalidVolumeError(f"the {what}'s NRRD geometry does not match the ijk_to_ras sent with it")
    return Volume(volume.array, exact)


def matrix_to_json(matrix) -> list:
    return [[float(v) for v in row] for row in np.asarray(matrix, dtype=np.float64)]


def matrix_from_json(value, what: str = "image") -> np.ndarray:
    try:
        matrix = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = None
    if matrix is None or matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise InvalidVolumeError(f"the {what}'s ijk_to_ras must be a 4x4 list of numbers")
    return matrix


# -- prompts --------------------------------------------------------------------------------------
def prompt_to_json(prompt: Prompt) -> dict:
    encoded = {"axis": int(prompt.axis), "slice_index": int(prompt.slice_index),
               "points": np.asarray(prompt.points, dtype=np.float64).reshape(-1, 3).tolist(),
               "labels": np.asarray(prompt.labels, dtype=np.int64).reshape(-1).tolist(),
               "box": None if prompt.box is None else np.asarray(prompt.box, dtype=np.float64).tolist()}
    if prompt.mask is not None:  # bits, packed: a 512x512 mask is 32 kB, not a JSON list of 262144 booleans
        mask = np.asarray(prompt.mask, dtype=bool)
        encoded["mask"] = {"shape": list(mask.shape), "bits": base64.b64encode(np.packbits(mask)).decode("ascii")}
    return encoded


def prompt_from_json(value) -> Prompt:
    if not isinstance(value, dict):
        raise InvalidPromptError("each prompt must be a JSON object with axis, slice_index, points, labels, box, mask")
    try:
        mask = None
        if value.get("mask") is not None:
            shape = tuple(int(n) for n in value["mask"]["shape"])
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError("a mask's shape must be two positive numbers")
            bits = np.frombuffer(base64.b64decode(value["mask"]["bits"], validate=True), dtype=np.uint8)
            mask = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        points = np.array(value.get("points") or [], dtype=np.float64).reshape(-1, 3)
        labels = np.array(value.get("labels") or [], dtype=np.int64).reshape(-1)
        box = None if value.get("box") is None else np.array(value["box"], dtype=np.float64).reshape(2, 3)
        axis, slice_index = int(value["axis"]), int(value["slice_index"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidPromptError(f"malformed prompt: {error}") from None
    if axis not in (0, 1, 2) or len(labels) != len(points) or not (np.all(np.isfinite(points)) and
                                                                  (box is None or np.all(np.isfinite(box)))):
        raise InvalidPromptError("malformed prompt: axis must be 0, 1 or 2, one label per point, finite coordinates")
    return Prompt(axis, slice_index, points, labels, box, mask)


# -- options --------------------------------------------------------------------------------------
def options_to_json(options) -> Optional[dict]:
    return None if options is None else dataclasses.asdict(options)


def options_from_json(options_type, value, what: str):
    """``options_type(**value)`` with unknown fields named; None stays None (the defaults)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object of {options_type.__name__} fields")
    known = {field.name for field in dataclasses.fields(options_type)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}: this server knows {', '.join(sorted(known))}")
    return options_type(**value)


# -- results --------------------------------------------------------------------------------------
def summary_of(result) -> dict:
    """A result's scalars and small fields (everything but its arrays), JSON-ready."""
    summary = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if isinstance(value, np.ndarray):
            if field.name == "ijk_to_ras":
                summary[field.name] = matrix_to_json(value)
            continue
        if isinstance(value, dict) and any(isinstance(v, np.ndarray) for v in value.values()):
            continue
        summary[field.name] = list(value) if isinstance(value, tuple) else value
    return summary
