"""`memseg serve`: MemSeg's segmentation behind a small versioned HTTP API (FastAPI on uvicorn).

    GET    /v1/info                        MemSeg and API version, device, GPU, models and their state
    POST   /v1/jobs/volume                 multipart: image (NRRD), request (JSON) -> 202 {"id", ...}
    POST   /v1/jobs/cine                   multipart: frames (NRRD), request (JSON) -> 202 {"id", ...}
    GET    /v1/jobs/{id}                   state, fraction, message (and error)
    GET    /v1/jobs/{id}/result            the result's JSON summary
    GET    /v1/jobs/{id}/result/mask       the mask as compressed NRRD (probability: .../result/probability)
    DELETE /v1/jobs/{id}                   cancel (the job stops at its next slice)

Uploads are multipart: the image stays binary (no base64) and its JSON request travels beside it
without a header-size limit (a mask prompt can be tens of kB). Every error is JSON
``{"error": "..."}``. The server reads nothing but the uploads: models are its own registered ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from typing import Optional

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import MemSegError
from . import protocol
from .jobs import DONE, FINISHED, JobQueue, QueueFullError
from .tokens import token_matches

VOLUME_FIELDS = {"ijk_to_ras", "prompts", "model", "axes", "device", "preset", "threshold", "propagation", "speed"}
CINE_FIELDS = {"ijk_to_ras", "index_values", "index_name", "index_unit", "prompt", "model", "device", "threshold",
               "memory_frames", "deep_update_every", "seed", "speed"}


def create_app(token: Optional[str] = None, workers: int = 1, device: str = "auto", max_upload_mb: float = 1024,
               job_time_limit: Optional[float] = 3600, result_ttl: float = 600, upload_timeout: float = 300) -> FastAPI:
    """The API; ``token``: every request needs ``Authorization: Bearer <token>`` (None: loopback use only)."""
    from ..runtime.devices import resolve_device

    queue = JobQueue(workers=workers, ttl=result_ttl, time_limit=job_time_limit)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(queue.shutdown)  # running jobs are cancelled, then the workers joined

    # No /docs nor /openapi.json: nothing is served that the token does not guard.
    app = FastAPI(title="MemSeg server", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.queue = queue
    app.state.api_version = protocol.API_VERSION
    app.state.device = str(resolve_device(device))  # a wrong --device fails at start, not at the first job
    max_upload_bytes = int(max_upload_mb * (1 << 20))

    def authorize(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token_matches(given.strip(), token):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    async def read_upload(request: Request, file_field: str) -> tuple:
        """(file bytes, request JSON) of a multipart upload, within the size and time limits."""
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise HTTPException(411, "send the upload with a Content-Length header")
        if int(length) > max_upload_bytes:
            raise HTTPException(413, f"the upload is {int(length) / (1 << 20):.1f} MB; this server accepts at most "
                                     f"{max_upload_bytes / (1 << 20):g} MB (memseg serve --max-upload-mb)")
        try:
            form = await asyncio.wait_for(request.form(max_files=1, max_fields=4), timeout=upload_timeout)
        except asyncio.TimeoutError:
            raise HTTPException(408, f"the upload took longer than {upload_timeout:g} s") from None
        except HTTPException:
            raise
        except Exception as error:  # the multipart parser's own errors
            raise HTTPException(400, f"malformed multipart upload: {error}") from None
        upload, spec = form.get(file_field), form.get("request")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, f"the upload has no '{file_field}' file part (NRRD bytes)")
        if not isinstance(spec, str):
            raise HTTPException(400, "the upload has no 'request' part (JSON)")
        try:
            spec = json.loads(spec)
        except ValueError as error:
            raise HTTPException(400, f"the 'request' part is not valid JSON: {error}") from None
        if not isinstance(spec, dict):
            raise HTTPException(400, "the 'request' part must be a JSON object")
        return await upload.read(), spec

    router = APIRouter(prefix=protocol.API_PREFIX, dependencies=[Depends(authorize)])

    @router.get("/info")
    def info():
        return server_info(app)

    @router.post("/jobs/volume", status_code=202)
    async def submit_volume(request: Request):
        data, spec = await read_upload(request, "image")
        model, run = await run_in_threadpool(volume_job, data, spec, app.state.device)
        return submit(app, "volume", model, run)

    @router.post("/jobs/cine", status_code=202)
    async def submit_cine(request: Request):
        data, spec = await read_upload(request, "frames")
        model, run = await run_in_threadpool(cine_job, data, spec, app.state.device)
        return submit(app, "cine", model, run)

    @router.get("/jobs/{job_id}")
    def job_status(job_id: str):
        return find_job(app, job_id).status()

    @router.delete("/jobs/{job_id}")
    def cancel_job(job_id: str):
        find_job(app, job_id)
        return app.state.queue.cancel(job_id).status()

    @router.get("/jobs/{job_id}/result")
    def job_result(job_id: str):
        job = finished_job(app, job_id)
        return {"id": job.id, "kind": job.kind, "summary": protocol.summary_of(job.result),
                "parts": [f"{protocol.API_PREFIX}/jobs/{job.id}/result/{part}" for part in ("mask", "probability")]}

    @router.get("/jobs/{job_id}/result/{part}")
    async def job_result_part(job_id: str, part: str):
        job = finished_job(app, job_id)
        if part not in ("mask", "probability"):
            raise HTTPException(404, f"no result part {part!r}: use mask or probability")
        data = await run_in_threadpool(result_nrrd, job.result, part)
        return Response(data, media_type=protocol.NRRD_MEDIA_TYPE)

    app.include_router(router)
    _add_error_handlers(app)
    return app


def server_info(app: FastAPI) -> dict:
    from .. import __version__
    from ..runtime import checkpoints

    models = [{"name": c.name, "engine": c.engine, "state": checkpoints.checkpoint_state(c),
               "image_size": c.image_size, "description": c.description} for c in checkpoints.list_checkpoints()]
    memsam = checkpoints.weights_dir() / checkpoints.MEMSAM_FILENAME
    models.append({"name": checkpoints.MEMSAM_DEFAULT, "engine": "memsam",
                   "state": checkpoints.PRESENT if memsam.is_file() else checkpoints.MISSING, "image_size": None,
                   "description": "the server's own MemSAM weights (memsam.pth in its weights folder)"})
    queue = app.state.queue
    return {"memseg_version": __version__, "api_version": app.state.api_version, "device": app.state.device,
            "gpu": gpu_info(app.state.device), "models": models, "workers": queue.workers, "jobs": queue.counts()}


def gpu_info(device: str) -> Optional[dict]:
    if not device.startswith("cuda"):
        return None
    import torch

    properties = torch.cuda.get_device_properties(torch.device(device))
    return {"name": properties.name, "memory_bytes": int(properties.total_memory)}


def submit(app: FastAPI, kind: str, model: str, run) -> dict:
    try:
        job = app.state.queue.submit(kind, model, run)
    except QueueFullError as error:
        raise HTTPException(503, str(error)) from None
    return job.status()


def find_job(app: FastAPI, job_id: str):
    job = app.state.queue.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r} on this server (unknown, or its result expired)")
    return job


def finished_job(app: FastAPI, job_id: str):
    job = find_job(app, job_id)
    if job.state != DONE:
        why = job.error or job.message if job.state in FINISHED else "it is not finished"
        raise HTTPException(409, f"job {job_id} has no result: {job.state} ({why})")
    return job


def _checked_fields(spec: dict, allowed: set, what: str) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"unknown field(s) in the {what} request: {', '.join(unknown)}")


def _server_model(spec: dict, default: str) -> str:
    """A model the server has: a registered name (or MemSAM's own "memsam"), never a path."""
    from ..runtime.checkpoints import MEMSAM_DEFAULT, get_checkpoint

    model = spec.get("model", default)
    if not isinstance(model, str):
        raise ValueError("model must be the name of a model the server has (see GET /v1/info)")
    if model != MEMSAM_DEFAULT:
        get_checkpoint(model)  # CheckpointError naming the known models
    return model


def volume_job(data: bytes, spec: dict, server_device: str):
    """(model, run) of a volume job; bad input raises here, before it is queued."""
    from ..runtime.checkpoints import DEFAULT_MODEL
    from ..volume3d.segment import PropagationOptions, SpeedOptions, segment_volume

    _checked_fields(spec, VOLUME_FIELDS, "volume")
    volume = protocol.volume_from_nrrd(data, spec.get("ijk_to_ras"), "image")
    prompts = [protocol.prompt_from_json(p) for p in spec.get("prompts") or []]
    for prompt in prompts:
        prompt.check(volume)
    model = _server_model(spec, DEFAULT_MODEL)
    device = spec.get("device") or "auto"
    run = functools.partial(
        segment_volume, volume, prompts, model=model, axes=spec.get("axes", 3),
        device=server_device if device == "auto" else device, preset=spec.get("preset"),
        threshold=spec.get("threshold", 0.5),
        propagation=protocol.options_from_json(PropagationOptions, spec.get("propagation"), "propagation option"),
        speed=protocol.options_from_json(SpeedOptions, spec.get("speed"), "speed option"))
    return model, lambda progress, cancel: run(progress=progress, cancel=cancel)


def cine_job(data: bytes, spec: dict, server_device: str):
    """(model, run) of a cine job; bad input raises here, before it is queued."""
    from ..cine.cine import Cine
    from ..cine.segment import segment_sequence
    from ..runtime.checkpoints import MEMSAM_DEFAULT
    from ..volume3d.segment import SpeedOptions

    _checked_fields(spec, CINE_FIELDS, "cine")
    grid = protocol.volume_from_nrrd(data, spec.get("ijk_to_ras"), "frames")
    cine = Cine(grid.array, grid.ijk_to_ras, tuple(spec.get("index_values") or ()),
                spec.get("index_name") or "frame", spec.get("index_unit") or "")
    prompt = protocol.prompt_from_json(spec.get("prompt"))
    model = _server_model(spec, MEMSAM_DEFAULT)
    device = spec.get("device") or "auto"
    run = functools.partial(
        segment_sequence, cine, prompt, model=model, device=server_device if device == "auto" else device,
        threshold=spec.get("threshold"), memory_frames=spec.get("memory_frames"),
        deep_update_every=spec.get("deep_update_every"), seed=spec.get("seed", 1234),
        speed=protocol.options_from_json(SpeedOptions, spec.get("speed"), "speed option"))
    return model, lambda progress, cancel: run(progress=progress, cancel=cancel)


def result_nrrd(result, part: str) -> bytes:
    """A volume or cine result's mask (uint8) or probability (float32) on the input's grid."""
    from ..core.volume import Volume

    if part == "mask":
        array = result.mask if hasattr(result, "mask") else result.masks
    else:
        array = result.probability
    return protocol.volume_to_nrrd(Volume(array, result.ijk_to_ras))


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": "..."}`` (and its MemSeg type where it has one)."""

    def error_response(status: int, message: str, error_type: Optional[str] = None, headers=None) -> JSONResponse:
        content = {"error": message}
        if error_type:
            content["error_type"] = error_type
        return JSONResponse(content, status_code=status, headers=headers)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        return error_response(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error):
        return error_response(400, "; ".join(str(e.get("msg")) for e in error.errors()) or "malformed request")

    @app.exception_handler(MemSegError)
    async def memseg_error(request, error):
        return error_response(400, str(error), type(error).__name__)

    @app.exception_handler(ValueError)
    async def value_error(request, error):
        return error_response(400, str(error), "ValueError")


def run_server(app: FastAPI, host: str, port: int) -> None:
    """Serve until interrupted, with uvicorn's time limits on idle connections and shutdown."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, timeout_keep_alive=5, timeout_graceful_shutdown=10,
                            limit_concurrency=64, log_level="warning", access_log=False)
    uvicorn.Server(config).run()
