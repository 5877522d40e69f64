"""`memseg serve` and `MemSegClient` against a real uvicorn server on an ephemeral 127.0.0.1 port:
remote results equal local ones (real medsam-lite weights on real CT slices; tiny random MemSAM for
the cine path), the security defaults (token, upload limit, corrupt NRRD), cancel, concurrent
clients, a server killed mid-job, and a version mismatch."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from MemSegLogic import Cine, Prompt, PropagationOptions, Volume, segment_sequence, segment_volume  # noqa: E402
from MemSegLogic.app.demo import seed_box  # noqa: E402
from MemSegLogic.errors import InvalidPromptError, MemSegError, SegmentationCancelled  # noqa: E402
from MemSegLogic.serve import MemSegClient, ServerError, VersionMismatchError  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TOKEN = "test-token-" + "x" * 32
# An oblique grid (rotated 30 degrees about S, 1.25 mm slices): NRRD's spacing/direction split
# changes such a matrix in its last bits, the server must still see it exactly.
_ANGLE = np.deg2rad(30)
OBLIQUE = np.array([[0.8 * np.cos(_ANGLE), -0.8 * np.sin(_ANGLE), 0, -51.3],
                    [0.8 * np.sin(_ANGLE), 0.8 * np.cos(_ANGLE), 0, 12.7],
                    [0, 0, 1.25, -80.1], [0, 0, 0, 1]])


class ThreadedServer:
    """uvicorn serving ``app`` in a background thread of this process, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server():
    from MemSegLogic.serve.app import create_app

    running = ThreadedServer(create_app(token=TOKEN, device="cpu", max_upload_mb=2))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    return MemSegClient(server.url, token=TOKEN, poll_seconds=0.05)


@pytest.fixture(scope="module")
def ct_case(chest_ct):
    """Four real CT slices around the right lung's middle, on an oblique grid, and its box prompt."""
    volume, segments = chest_ct
    _, k = seed_box(segments["right lung"])
    crop = slice(k - 2, k + 2)
    prompt, _ = seed_box(segments["right lung"][crop])
    return Volume(np.ascontiguousarray(volume.array[crop]), OBLIQUE), prompt


def _local_and_remote_volume(client, volume, prompt, **options):
    local = segment_volume(volume, prompt, model="medsam-lite", device="cpu", preset="ct-chest", **options)
    remote = client.segment_volume(volume, prompt, model="medsam-lite", preset="ct-chest", **options)
    return local, remote


@pytest.fixture(scope="module")
def local_ct_result(ct_case):
    volume, prompt = ct_case
    return segment_volume(volume, prompt, model="medsam-lite", device="cpu", preset="ct-chest", axes=1)


def test_remote_volume_job_equals_the_local_call(client, ct_case, local_ct_result):
    volume, prompt = ct_case
    local = local_ct_result
    remote = client.segment_volume(volume, prompt, model="medsam-lite", preset="ct-chest", axes=1)
    assert local.mask.sum() > 100, "the case must segment something for the comparison to mean anything"
    assert remote.mask.dtype == np.uint8 and np.array_equal(remote.mask, local.mask)
    assert np.array_equal(remote.probability, local.probability)
    assert np.array_equal(remote.ijk_to_ras, OBLIQUE)
    assert (remote.model, remote.axes, remote.visited_per_axis) == (local.model, local.axes, local.visited_per_axis)
    assert remote.seed_slices == local.seed_slices and remote.device == "cpu"
    assert np.array_equal(local.fused("mean")[1], local.mask)  # one axis: any fusion is that axis
    with pytest.raises(ValueError, match="server returns the fused result only"):
        remote.fused("mean")


def test_the_exact_matrix_travels_beside_the_nrrd(ct_case):
    from MemSegLogic.serve.protocol import matrix_to_json, volume_from_nrrd, volume_to_nrrd

    data = volume_to_nrrd(ct_case[0])
    assert not np.array_equal(volume_from_nrrd(data).ijk_to_ras, OBLIQUE)  # why the JSON copy is needed
    received = volume_from_nrrd(data, matrix_to_json(OBLIQUE))
    assert np.array_equal(received.ijk_to_ras, OBLIQUE) and np.array_equal(received.array, ct_case[0].array)


def test_options_pass_through_by_field_name(client, ct_case):
    volume, prompt = ct_case
    options = PropagationOptions(fusion="vote", crop=False, absent_slices=0)
    local, remote = _local_and_remote_volume(client, volume, prompt, axes=1, propagation=options)
    assert remote.fusion == "vote" and np.array_equal(remote.mask, local.mask)


def test_info_names_versions_device_and_models(client):
    import MemSegLogic

    info = client.info()
    assert info["api_version"] == 1 and info["memseg_version"] == MemSegLogic.__version__
    assert info["device"] == "cpu" and info["gpu"] is None
    lite = next(m for m in info["models"] if m["name"] == "medsam-lite")
    assert lite["state"] in ("present", "verified")


@pytest.fixture(scope="module")
def memsam_model(tiny_memsam_checkpoint):
    """The tiny random MemSAM registered under a name: a server loads only models it knows."""
    from MemSegLogic.runtime.checkpoints import Checkpoint, register_checkpoint, sha256_of, unregister_checkpoint

    path = pathlib.Path(tiny_memsam_checkpoint)
    checkpoint = register_checkpoint(Checkpoint(
        name="test-memsam-tiny-random", engine="memsam", filename=path.name, sha256=sha256_of(path), image_size=256,
        license="test", description="random weights for tests"), replace=True)
    yield checkpoint.name
    unregister_checkpoint(checkpoint.name)


def test_remote_cine_job_equals_the_local_call(client, memsam_model):
    yy, xx = np.mgrid[:48, :64]
    frames = np.stack([np.where((yy - 24) ** 2 + (xx - 30 - t) ** 2 < 100, 200, 40) + (xx % 7)
                       for t in range(4)]).astype(np.uint8)
    frame_to_ras = np.array([[-0.3, 0, 0, 10.0], [0, -0.3, 0, 5.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    cine = Cine(frames, frame_to_ras, ("0", "0.02", "0.04", "0.06"), "time", "s")
    prompt = Prompt.from_points([(30, 24, 1)], axis="K")
    local = segment_sequence(cine, prompt, model=memsam_model, device="cpu")
    remote = client.segment_sequence(cine, prompt, model=memsam_model)
    assert np.array_equal(remote.masks, local.masks) and np.array_equal(remote.probability, local.probability)
    assert np.array_equal(remote.ijk_to_ras, frame_to_ras)
    assert remote.index_values == cine.index_values and remote.index_unit == "s"
    assert (remote.prompt_frame, remote.threshold, remote.zero_shot) == (1, local.threshold, False)


def test_a_bad_prompt_is_the_same_error_as_locally(client, ct_case):
    volume, _ = ct_case
    outside = Prompt.from_points([(500, 20, 2)], axis="K")
    with pytest.raises(InvalidPromptError) as local:
        segment_volume(volume, outside, model="medsam-lite", device="cpu")
    with pytest.raises(InvalidPromptError) as remote:
        client.segment_volume(volume, outside, model="medsam-lite")
    assert str(remote.value) == str(local.value)


# -- security and malformed input ---------------------------------------------------------------------
def test_token_is_required_and_checked(server, ct_case):
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}):
        response = requests.get(server.url + "/v1/info", headers=headers, timeout=10)
        assert response.status_code == 401 and "token" in response.json()["error"]
    with pytest.raises(ServerError, match="401"):
        MemSegClient(server.url, token="wrong").segment_volume(*ct_case)
    assert requests.get(server.url + "/docs", timeout=10).status_code == 404  # nothing served unguarded


def _upload(server, image: bytes, spec: str = '{"prompts": []}'):
    return requests.post(server.url + "/v1/jobs/volume", headers={"Authorization": f"Bearer {TOKEN}"},
                         files={"image": ("image.nrrd", image), "request": (None, spec)}, timeout=30)


def test_oversized_upload_is_413(server):
    response = _upload(server, os.urandom(3 << 20))
    assert response.status_code == 413 and "at most 2 MB" in response.json()["error"]


def test_corrupt_nrrd_is_400(server, ct_case):
    from MemSegLogic.serve.protocol import volume_to_nrrd

    response = _upload(server, b"NRRD0004\ntype: short\ndimension: 3\nsizes: 9 9\n\n garbage")
    assert response.status_code == 400 and "not a readable NRRD" in response.json()["error"]
    good = volume_to_nrrd(ct_case[0])
    response = _upload(server, good[: len(good) // 2])  # truncated compressed data
    assert response.status_code == 400 and "NRRD" in response.json()["error"]
    response = _upload(server, good, "{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    response = _upload(server, good, '{"prompts": [], "propagation": {"warp_speed": 9}}')
    assert response.status_code == 400 and "warp_speed" in response.json()["error"]
    response = _upload(server, good, '{"prompts": [], "model": "/etc/passwd"}')
    assert response.status_code == 400 and "unknown model" in response.json()["error"]


def test_version_mismatch_is_one_clear_message(server):
    server.app.state.api_version = 2  # stands in for a newer server
    try:
        with pytest.raises(VersionMismatchError) as error:
            MemSegClient(server.url, token=TOKEN).info()
    finally:
        server.app.state.api_version = 1
    message = str(error.value)
    assert "API v1" in message and "API v2" in message and "same MemSeg version" in message and "\n" not in message


# -- jobs: cancel, concurrency ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_case(chest_ct):
    """The whole CT, six orientations, every slice visited: long enough to act on mid-job."""
    volume, segments = chest_ct
    prompt, _ = seed_box(segments["right lung"])
    return volume, prompt, PropagationOptions(crop=False, absent_slices=0)


def test_cancel_mid_job(client, server, slow_case):
    volume, prompt, options = slow_case
    cancel, seen = threading.Event(), []

    def progress(fraction, message):
        seen.append((fraction, message))
        if message.startswith("server:") and fraction > 0.05:  # past loading: propagating
            cancel.set()

    with pytest.raises(SegmentationCancelled):
        client.segment_volume(volume, prompt, propagation=options, progress=progress, cancel=cancel)
    deadline = time.monotonic() + 30
    while server.app.state.queue.counts()["running"]:  # the server stops the job within a slice
        assert time.monotonic() < deadline, "the cancelled job kept running on the server"
        time.sleep(0.1)
    assert server.app.state.queue.counts()["cancelled"] >= 1 and max(f for f, _ in seen) < 0.9


def test_three_concurrent_clients_are_all_served(server, ct_case, local_ct_result):
    volume, prompt = ct_case
    expected = local_ct_result.mask
    results, failures = [None] * 3, []

    def one(index):
        try:
            results[index] = MemSegClient(server.url, token=TOKEN, poll_seconds=0.05).segment_volume(
                volume, prompt, model="medsam-lite", preset="ct-chest", axes=1).mask
        except Exception as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)  # one worker: the three jobs take turns
    assert not any(thread.is_alive() for thread in threads), "a client was never served"
    assert not failures and all(r is not None and np.array_equal(r, expected) for r in results)


# -- a server killed mid-job ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_server_killed_mid_job_is_a_clear_error_and_nothing_is_written(tmp_path, chest_ct, slow_case):
    from MemSegLogic.app.cli import main

    volume, prompt, _ = slow_case
    image = tmp_path / "ct.nrrd"
    volume.write(image)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CONFIG_HOME=str(tmp_path / "config"))
    process = subprocess.Popen([sys.executable, "-m", "MemSegLogic", "serve", "--port", str(port), "--device", "cpu",
                                "--require-token"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        token = _read_new_token(process)
        url = f"http://127.0.0.1:{port}"
        _wait_until(lambda: _get(url, token) is not None, "the server did not start")
        box = volume.ijk_to_ras_points(prompt.box)
        output = tmp_path / "lung.seg.nrrd"
        argv = ["segment", str(image), "-o", str(output), "--box", ",".join(f"{v:.4f}" for v in box.ravel()),
                "--no-crop", "--absent-slices", "0", "--server", url, "--token", token]
        outcome = {}
        runner = threading.Thread(target=lambda: outcome.update(code=main(["-q"] + argv)))
        runner.start()
        _wait_until(lambda: (_get(url, token) or {}).get("jobs", {}).get("running"), "the job never ran")
        time.sleep(1.0)
        process.send_signal(signal.SIGKILL)
        runner.join(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert outcome.get("code") == 2
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["config", "ct.nrrd"]


def test_server_killed_mid_job_message(capsys, tmp_path, slow_case):
    """The same kill as seen through the API: one `ServerError` naming the lost connection."""
    volume, prompt, options = slow_case
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "MemSegLogic", "serve", "--port", str(port), "--device", "cpu"],
                               env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until(lambda: _get(url, None) is not None, "the server did not start")
        killed = threading.Event()

        def progress(fraction, message):
            if message.startswith("server:") and fraction > 0.06 and not killed.is_set():
                killed.set()
                process.send_signal(signal.SIGKILL)

        with pytest.raises(ServerError) as error:
            MemSegClient(url, poll_seconds=0.05).segment_volume(volume, prompt, propagation=options, progress=progress)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert killed.is_set() and "lost the connection" in str(error.value) and "nothing was written" in str(error.value)
    assert isinstance(error.value, MemSegError)


def _read_new_token(process) -> str:
    lines = []
    while True:
        line = process.stderr.readline()
        assert line, f"the server exited: {''.join(lines)}"
        lines.append(line)
        if "new token" in line:
            return process.stderr.readline().strip()


def _get(url, token):
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(url + "/v1/info", headers=headers, timeout=5).json()
    except requests.RequestException:
        return None


def _wait_until(condition, failure: str, seconds: float = 180):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


# -- the client side stays light ------------------------------------------------------------------------
def test_importing_the_client_imports_no_torch_nor_server():
    code = ("import sys, MemSegLogic.serve.client, MemSegLogic.serve; "
            "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_token_file_is_private_and_made_once(tmp_path):
    from MemSegLogic.serve.tokens import load_or_create_token

    path = tmp_path / "memseg" / "server-token"
    token, created = load_or_create_token(path)
    assert created and len(token) >= 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_token(path) == (token, False)
    path.chmod(0o644)
    with pytest.raises(MemSegError, match="readable by other users"):
        load_or_create_token(path)


def test_non_loopback_host_requires_the_token(tmp_path, monkeypatch):
    """``--host 0.0.0.0`` makes (or reads) the token even without --require-token."""
    from MemSegLogic.app.cli import build_parser

    seen = {}
    monkeypatch.setattr("MemSegLogic.serve.app.run_server", lambda app, host, port: seen.update(app=app, host=host))
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--device", "cpu",
                                      "--token-file", str(tmp_path / "token")])
    assert args.run(args) == 0 and seen["host"] == "0.0.0.0" and (tmp_path / "token").is_file()
    running = ThreadedServer(seen["app"])  # served on loopback here, with the token 0.0.0.0 demanded
    try:
        assert requests.get(running.url + "/v1/info", timeout=10).status_code == 401
        token = (tmp_path / "token").read_text().strip()
        assert MemSegClient(running.url, token=token).info()["api_version"] == 1
    finally:
        running.stop()


# -- what the Slicer module's "Run on" setting and Test connection use -------------------------------
def test_connection_check_describes_the_server_or_says_why_not(server):
    from MemSegLogic.errors import MemSegError
    from MemSegLogic.serve import check_connection

    line = check_connection(server.url, TOKEN)
    assert line.startswith("MemSeg ") and " on cpu;" in line and "medsam-lite" in line and "\n" not in line
    for url, token, why in ((server.url, "wrong", "401"), ("http://127.0.0.1:9", TOKEN, "connection"),
                            ("  ", TOKEN, "give the server's address")):
        with pytest.raises(MemSegError, match=why):
            check_connection(url, token, timeout=5)
    server.app.state.api_version = 2
    try:
        with pytest.raises(VersionMismatchError):
            check_connection(server.url, TOKEN)
    finally:
        server.app.state.api_version = 1


def test_segmenter_is_this_computer_without_a_server_and_the_client_with_one(server):
    import MemSegLogic
    from MemSegLogic.errors import MemSegError
    from MemSegLogic.serve import RUN_HERE, RUN_ON_SERVER, segmenter

    assert segmenter() is MemSegLogic and segmenter(RUN_HERE, server.url, TOKEN) is MemSegLogic
    remote = segmenter(RUN_ON_SERVER, f" {server.url} ", TOKEN)
    assert isinstance(remote, MemSegClient) and remote.url == server.url
    assert remote.info()["api_version"] == 1
    with pytest.raises(MemSegError, match="no server address is set"):
        segmenter(RUN_ON_SERVER, "", TOKEN)
    with pytest.raises(ValueError, match="run_on must be"):
        segmenter("the cloud")
