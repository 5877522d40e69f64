"""`MemSegClient`: `segment_volume` and `segment_sequence` run on a MemSeg server, with the same
arguments and result types as the local calls, and nothing heavier than ``requests`` and
SimpleITK (both in Slicer): no torch on this side.

    client = MemSegClient("http://gpu-box:8765", token="...")
    client.info()                         # versions, device, GPU, models (raises on a version mismatch)
    result = client.segment_volume(volume, prompts, model="medsam-lite", progress=..., cancel=event)

Progress comes from polling the job; a cancel (the `threading.Event` given, checked by MemSeg's
`Monitor`) cancels the job on the server too. Any failure raises a `MemSegError`: the server's own
error type where it sent one (a bad prompt stays an `InvalidPromptError`), else `ServerError`.
"""

from __future__ import annotations

import json
import time
from typing import Optional, Sequence, Union

import numpy as np

from .. import errors
from ..core.prompt import Prompt
from ..core.volume import Volume
from ..errors import SegmentationCancelled
from ..progress import Monitor, ProgressCallback
from ..runtime.checkpoints import DEFAULT_MODEL, MEMSAM_DEFAULT, PRESENT, VERIFIED
from . import protocol
from .protocol import InvalidRequestError, ServerError, VersionMismatchError

POLL_SECONDS = 0.25


class MemSegClient:
    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 30.0,
                 poll_seconds: float = POLL_SECONDS):
        """url: the server's address, e.g. ``http://gpu-box:8765``; token: its bearer token;
        timeout: seconds for any one request (uploads and downloads included)."""
        import requests

        self.url = url.rstrip("/")
        self.timeout, self.poll_seconds = timeout, poll_seconds
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._checked_version = False

    # -- the server ---------------------------------------------------------------------------------
    def info(self) -> dict:
        """The server's MemSeg and API version, device, GPU (name, memory) and models with their state;
        `VersionMismatchError` when its API is not this client's."""
        from .. import __version__

        try:
            info = self._request("GET", "/info")
        except ServerError as error:
            if getattr(error, "status", None) == 404:
                raise VersionMismatchError(
                    f"{self.url} does not serve MemSeg API v{protocol.API_VERSION} ({error}): is it a MemSeg server "
                    "of the same version?") from None
            raise
        if info.get("api_version") != protocol.API_VERSION:
            raise VersionMismatchError(protocol.version_mismatch_message(
                info.get("api_version"), info.get("memseg_version"), __version__))
        self._checked_version = True
        return info

    # -- the two segmentations ----------------------------------------------------------------------
    def segment_volume(self, volume: Volume, prompts: Union[Prompt, Sequence[Prompt]], model: str = DEFAULT_MODEL,
                       axes: int = 3, device: str = "auto", preset: Optional[str] = None, threshold: float = 0.5,
                       propagation=None, speed=None, progress: Optional[ProgressCallback] = None, cancel=None):
        """`MemSegLogic.segment_volume` on the server; returns a `SegmentationResult` (without the
        per-axis probabilities, which stay on the server)."""
        from ..volume3d.segment import SegmentationResult

        if not isinstance(volume, Volume):
            volume = Volume.read(volume)  # read here: the server never reads paths
        prompts = [prompts] if isinstance(prompts, Prompt) else list(prompts or [])
        spec = {"ijk_to_ras": protocol.matrix_to_json(volume.ijk_to_ras), "model": _model_name(model),
                "prompts": [protocol.prompt_to_json(p) for p in prompts], "axes": axes, "device": device,
                "preset": preset, "threshold": threshold, "propagation": protocol.options_to_json(propagation),
                "speed": protocol.options_to_json(speed)}
        summary, mask, probability = self._run("volume", "image", volume, spec, progress, cancel)
        fields = {k: v for k, v in summary.items() if k in SegmentationResult.__dataclass_fields__}
        fields.update(mask=mask, probability=probability, ijk_to_ras=volume.ijk_to_ras.copy(),
                      seed_slices=tuple(summary.get("seed_slices") or ()))
        return SegmentationResult(**fields)

    def segment_sequence(self, frames, prompt: Union[Prompt, Sequence[Prompt]], model: str = MEMSAM_DEFAULT,
                         device: str = "auto", threshold: Optional[float] = None, memory_frames: Optional[int] = None,
                         deep_update_every: Optional[int] = None, seed: int = 1234,
                         progress: Optional[ProgressCallback] = None, cancel=None, speed=None):
        """`MemSegLogic.segment_sequence` on the server; returns a `SequenceResult`."""
        from ..cine.cine import Cine
        from ..cine.segment import SequenceResult

        cine = frames if isinstance(frames, Cine) else (
            Cine(frames) if isinstance(frames, np.ndarray) else Cine.read(frames))
        prompts = [prompt] if isinstance(prompt, Prompt) else list(prompt or [])
        if len(prompts) != 1:
            raise errors.InvalidPromptError(f"give one prompt on one frame, got {len(prompts)}")
        spec = {"ijk_to_ras": protocol.matrix_to_json(cine.ijk_to_ras), "index_values": list(cine.index_values),
                "index_name": cine.index_name, "index_unit": cine.index_unit,
                "prompt": protocol.prompt_to_json(prompts[0]), "model": _model_name(model), "device": device,
                "threshold": threshold, "memory_frames": memory_frames, "deep_update_every": deep_update_every,
                "seed": seed, "speed": protocol.options_to_json(speed)}
        summary, masks, probability = self._run("cine", "frames", Volume(cine.frames, cine.ijk_to_ras), spec,
                                                progress, cancel)
        fields = {k: v for k, v in summary.items() if k in SequenceResult.__dataclass_fields__}
        fields.update(masks=masks, probability=probability, ijk_to_ras=cine.ijk_to_ras.copy(),
                      index_values=cine.index_values, index_name=cine.index_name, index_unit=cine.index_unit)
        return SequenceResult(**fields)

    # -- one job ------------------------------------------------------------------------------------
    def _run(self, kind: str, part: str, grid: Volume, spec: dict, progress, cancel):
        """Upload, follow, download: (summary, mask, probability), arrays on ``grid``."""
        monitor = Monitor(progress, cancel)
        if not self._checked_version:
            self.info()
        monitor.report(0.0, "uploading")
        files = {part: (f"{part}.nrrd", protocol.volume_to_nrrd(grid), protocol.NRRD_MEDIA_TYPE),
                 "request": (None, json.dumps(spec), "application/json")}
        job = self._request("POST", f"/jobs/{kind}", files=files)
        try:
            while job["state"] not in ("done", "failed", "cancelled"):
                monitor.report(job.get("fraction", 0.0), f"server: {job.get('message', '')}")
                time.sleep(self.poll_seconds)
                job = self._request("GET", f"/jobs/{job['id']}")
        except SegmentationCancelled:
            self._cancel_quietly(job["id"])
            raise
        if job["state"] == "cancelled":
            raise SegmentationCancelled(f"the job was cancelled on the server ({job.get('message')}); nothing was written")
        if job["state"] == "failed":
            raise _error_of(job.get("error_type"), job.get("error") or "the job failed on the server")
        summary = self._request("GET", f"/jobs/{job['id']}/result")["summary"]
        mask = self._download(job["id"], "mask", grid, np.uint8)
        probability = self._download(job["id"], "probability", grid, np.float32)
        return summary, mask, probability

    def _download(self, job_id: str, part: str, grid: Volume, dtype) -> np.ndarray:
        data = self._request("GET", f"/jobs/{job_id}/result/{part}", raw=True)
        try:
            result = protocol.volume_from_nrrd(data, what=f"server's {part}")
        except errors.InvalidVolumeError as error:
            raise ServerError(f"the server sent an unreadable {part}: {error}") from None
        if result.array.shape[:3] != grid.array.shape[:3]:
            raise ServerError(f"the server's {part} has shape {result.array.shape}, the input {grid.array.shape}")
        return np.ascontiguousarray(result.array, dtype=dtype)

    def _cancel_quietly(self, job_id: str) -> None:
        try:
            self._request("DELETE", f"/jobs/{job_id}")
        except errors.MemSegError:
            pass  # the server is gone or the job finished: nothing left to stop

    def _request(self, method: str, path: str, raw: bool = False, **kwargs):
        import requests

        url = self.url + protocol.API_PREFIX + path
        try:
            response = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as error:
            raise ServerError(f"lost the connection to the MemSeg server at {self.url} "
                              f"({_reason(error)}); nothing was written") from None
        except requests.Timeout:
            raise ServerError(f"the MemSeg server at {self.url} did not answer within {self.timeout:g} s") from None
        except requests.RequestException as error:
            raise ServerError(f"cannot talk to the MemSeg server at {self.url}: {error}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            message = body.get("error") if isinstance(body, dict) else None
            message = message or response.text[:200].strip() or response.reason
            if response.status_code in (400, 422) and isinstance(body, dict) and body.get("error_type"):
                raise _error_of(body["error_type"], message)
            error = ServerError(f"the MemSeg server at {self.url} answered {response.status_code}: {message}")
            error.status = response.status_code
            raise error
        return response.content if raw else response.json()


def describe_server(info: dict) -> str:
    """One line for a user about a server's `MemSegClient.info`: version, device and ready models."""
    gpu = info.get("gpu") or {}
    where = gpu.get("name") or info.get("device", "?")
    if gpu.get("memory_bytes"):
        where += f" ({gpu['memory_bytes'] / 2 ** 30:.0f} GB)"
    ready = [m["name"] for m in info.get("models", []) if m.get("state") in (PRESENT, VERIFIED)]
    return (f"MemSeg {info.get('memseg_version', '?')} on {where}; models ready: {', '.join(ready) or 'none yet'}"
            f" (others download on first use)")


def check_connection(url: str, token: Optional[str] = None, timeout: float = 10.0, progress=None, cancel=None) -> str:
    """`describe_server` of the server at ``url``, or the `MemSegError` saying why it cannot be used
    (unreachable, wrong token, another API version). ``progress``/``cancel`` are accepted so a
    worker task can run it."""
    if not url or not url.strip():
        raise InvalidRequestError("give the server's address, e.g. http://gpu-box:8765")
    return describe_server(MemSegClient(url.strip(), token=token or None, timeout=timeout).info())


RUN_HERE, RUN_ON_SERVER = "this computer", "a MemSeg server"  # the choices of Slicer's "Run on" setting


def segmenter(run_on: str = RUN_HERE, server_url: Optional[str] = None, token: Optional[str] = None):
    """What runs a segmentation: this computer (the `MemSegLogic` package) or a `MemSegClient` for
    the server at ``server_url``. Both offer ``segment_volume`` and ``segment_sequence`` with the
    same arguments and results."""
    if run_on == RUN_HERE:
        import MemSegLogic

        return MemSegLogic
    if run_on != RUN_ON_SERVER:
        raise ValueError(f"run_on must be {RUN_HERE!r} or {RUN_ON_SERVER!r}, got {run_on!r}")
    if not server_url or not server_url.strip():
        raise InvalidRequestError("MemSeg is set to run on a MemSeg server, but no server address is set "
                                  "(MemSeg module, Settings)")
    return MemSegClient(server_url.strip(), token=token or None)


def _model_name(model) -> str:
    if not isinstance(model, str):
        raise errors.CheckpointError("a server runs its own models: give a model name (see MemSegClient.info()), "
                                     "not a checkpoint object or file")
    return model


def _reason(error: Exception) -> str:
    text = str(error)
    for reason in ("Connection refused", "Connection reset", "Connection aborted", "RemoteDisconnected"):
        if reason in text:
            return reason.lower()
    return text.splitlines()[0][:120] if text else type(error).__name__


def _error_of(error_type: Optional[str], message: str) -> errors.MemSegError:
    """The MemSeg error the server named (a plain MemSegError subclass), else `ServerError`."""
    cls = getattr(errors, error_type or "", None)
    if error_type == "NothingFoundError":
        return errors.InvalidPromptError(message)  # its frame index stays on the server; the message names it
    if error_type == "ValueError":
        return InvalidRequestError(message)
    if isinstance(cls, type) and issubclass(cls, errors.MemSegError):
        return cls(message)
    return ServerError(message)
