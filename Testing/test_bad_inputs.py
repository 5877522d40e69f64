"""What MemSeg refuses, tried as users get it wrong: a catalogue of bad inputs and faults.

Every case runs the real entry point (the `memseg` command line in-process, or the Python API)
in a folder of real files, and asserts the exit status (or exception type), a message that names
the problem, that no file there changed (SHA-256 before and after: inputs and pre-existing
outputs alike), and that no output or partial file was left behind. The signal cases run the
command in a child process and interrupt it while it is writing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import threading
import warnings
from typing import Callable, Optional, Sequence

import numpy as np
import pytest

from MemSegLogic import InvalidVolumeError, MemSegWarning, Prompt, Volume, segment_sequence, segment_volume
from MemSegLogic.app.cli import main
from MemSegLogic.cine import Cine, frame_prompt
from MemSegLogic.errors import CheckpointError, DeviceError, InvalidPromptError, MemSegError
from MemSegLogic.volume3d import SpeedOptions

# The test volume: 6 x 32 x 32 voxels of 2 x 2 x 3 mm, RAS = (2i, 2j, 3k): a box from RAS (10, 10)
# to (30, 30) on RAS S = 6 is IJK (5..15, 5..15) on K = 2.
SPACING = (2.0, 2.0, 3.0)
BOX = "10,10,6,30,30,6"


def _volume_array(rng) -> np.ndarray:
    array = rng.integers(0, 60, (6, 32, 32)).astype(np.int16)
    array[:, 8:24, 8:24] += 400  # an object the offline model can find
    return array


def _sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: pathlib.Path) -> dict:
    """Every file under ``folder`` with its hash (folders as entries of their own)."""
    return {str(p.relative_to(folder)): (_sha(p) if p.is_file() else "folder")
            for p in sorted(folder.rglob("*")) if not p.is_symlink() or p.exists()}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A folder as a user has it: a CT, a cine loop, an existing result, and files that are not
    what their names say. The CLI runs with this folder as its working directory."""
    rng = np.random.default_rng(7)
    Volume(_volume_array(rng), np.diag([*SPACING, 1.0])).write(tmp_path / "ct.nrrd")
    frames = rng.integers(0, 50, (5, 24, 24)).astype(np.uint8)
    frames[:, 6:18, 6:18] += 150
    Cine(frames, np.diag([0.5, 0.5, 1.0, 1.0])).write(tmp_path / "cine.seq.nrrd")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(frames[:1]), str(tmp_path / "one-frame.nrrd"))  # time last, T = 1
    (tmp_path / "existing.seg.nrrd").write_bytes(b"the user's earlier result")
    (tmp_path / "existing.seq.nrrd").write_bytes(b"the user's earlier cine result")
    (tmp_path / "empty.nrrd").write_bytes(b"")
    (tmp_path / "notes.nrrd").write_text("not an image at all\n")
    (tmp_path / "text.pth").write_text("a text file, not a PyTorch checkpoint\n")
    (tmp_path / "folder.nrrd").mkdir()
    Volume(rng.integers(0, 9, (1, 32, 32)).astype(np.int16)).write(tmp_path / "flat.nrrd")
    Volume(np.full((6, 32, 32), 7, np.int16)).write(tmp_path / "constant.nrrd")
    nan = _volume_array(rng).astype(np.float32)
    nan[2, 3, 4] = np.nan
    Volume(nan, np.diag([*SPACING, 1.0])).write(tmp_path / "nan.nrrd")
    Volume(_volume_array(rng), np.diag([1e6, 1e6, 1e6, 1.0])).write(tmp_path / "huge.nrrd")
    Volume(np.stack([_volume_array(rng)] * 3, axis=-1).astype(np.uint8)).write(tmp_path / "rgb.nrrd")
    four_d = rng.integers(0, 99, (3, 4, 16, 16)).astype(np.int16)  # (T, K, J, I): 3D+t
    sitk.WriteImage(sitk.GetImageFromArray(four_d, isVector=False), str(tmp_path / "heart4d.nrrd"))
    os.symlink(tmp_path / "ct.nrrd", tmp_path / "link-to-ct.nrrd")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclasses.dataclass
class Case:
    """One bad input: ``argv`` for the CLI, or ``call`` for the API; what must come back."""

    id: str
    message: str  # a phrase the one-line message must contain (case-insensitive)
    argv: Sequence[str] = ()
    call: Optional[Callable] = None
    raises: type = MemSegError
    env: dict = dataclasses.field(default_factory=dict)


def _seg(*extra):
    return ["segment", "ct.nrrd", "--box", BOX, "--model", "medsam-lite", "--axes", "1", *extra]


def _echo(*extra, source="cine.seq.nrrd", output="out.seq.nrrd"):
    return ["echo", source, "--box", "4,4,20,20", "--model", "medsam-lite", "-o", output, *extra]


def _ct() -> Volume:
    return Volume.read("ct.nrrd")


def _box() -> Prompt:
    return Prompt.from_box((5, 5, 2), (15, 15, 2))


CLI_CASES = [
    # -- outputs that must never be written ---------------------------------------------------------
    Case("output-is-the-input", "never overwrites its input", _seg("-o", "ct.nrrd")),
    Case("output-is-the-input-by-another-path", "never overwrites its input", _seg("-o", "./sub/../ct.nrrd")),
    Case("output-is-a-link-to-the-input", "never overwrites its input",
         ["segment", "link-to-ct.nrrd", "--box", BOX, "-o", "ct.nrrd"]),
    Case("output-is-the-input-even-with-overwrite", "never overwrites its input", _seg("-o", "ct.nrrd", "--overwrite")),
    Case("echo-output-is-the-input", "never overwrites its input", _echo(output="cine.seq.nrrd", )),
    Case("output-type-unknown", "unsupported type", _seg("-o", "out.png")),
    Case("output-header-pair-refused", "unsupported type", _seg("-o", "out.nhdr")),
    Case("output-parent-is-a-file", "is a file, not a folder", _seg("-o", "ct.nrrd/out.nrrd")),
    Case("output-is-a-folder", "existing folder", _seg("-o", "folder.nrrd")),
    Case("output-exists", "exists already", _seg("-o", "existing.seg.nrrd")),
    Case("echo-output-exists", "exists already", _echo(output="existing.seq.nrrd")),
    Case("echo-output-type-unknown", "unsupported type", _echo(output="out.nii.gz")),
    Case("segment-name-only-control-characters", "empty once control characters",
         _seg("-o", "out.seg.nrrd", "--segment-name", "\n\t")),
    # -- inputs that are not images -------------------------------------------------------------------
    Case("input-missing", "no such file", ["segment", "nowhere.nrrd", "--box", BOX, "-o", "out.nrrd"]),
    Case("input-empty-file", "empty file", ["segment", "empty.nrrd", "--box", BOX, "-o", "out.nrrd"]),
    Case("input-text-named-nrrd", "cannot read", ["segment", "notes.nrrd", "--box", BOX, "-o", "out.nrrd"]),
    Case("input-2d", "2d", ["segment", "flat.nrrd", "--box", "5,5,0,15,15,0", "-o", "out.nrrd"]),
    Case("input-constant", "constant", ["segment", "constant.nrrd", "--box", "5,5,2,15,15,2", "-o", "out.nrrd"]),
    Case("input-nan", "nan", ["segment", "nan.nrrd", "--box", BOX, "-o", "out.nrrd"]),
    Case("input-absurd-spacing", "spacing", ["segment", "huge.nrrd", "--point", "5e6,5e6,2e6", "-o", "out.nrrd"]),
    Case("input-rgb", "rgb", ["segment", "rgb.nrrd", "--box", "5,5,2,15,15,2", "-o", "out.nrrd"]),
    # -- prompts --------------------------------------------------------------------------------------
    Case("no-prompt", "empty prompt", ["segment", "ct.nrrd", "-o", "out.nrrd"]),
    Case("only-negative-points", "only negative points", ["segment", "ct.nrrd", "--negative", "20,20,6", "-o", "out.nrrd"]),
    Case("box-outside", "outside the volume", ["segment", "ct.nrrd", "--box", "-90,10,6,-60,30,6", "-o", "out.nrrd"]),
    Case("box-zero-size", "zero size", ["segment", "ct.nrrd", "--box", "20,20,6,20,20,6", "-o", "out.nrrd"]),
    Case("box-is-a-line", "is a line", ["segment", "ct.nrrd", "--box", "10,20,6,30,20,6", "-o", "out.nrrd"]),
    Case("box-not-on-one-slice", "on one slice", ["segment", "ct.nrrd", "--box", "10,10,0,30,30,12", "-o", "out.nrrd"]),
    Case("point-malformed", "needs 3", ["segment", "ct.nrrd", "--point", "1,2", "-o", "out.nrrd"]),
    # -- options ----------------------------------------------------------------------------------
    Case("encode-batch-zero", "at least 1", _seg("-o", "out.nrrd", "--encode-batch", "0")),
    Case("threads-zero", "at least 1", _seg("-o", "out.nrrd", "--threads", "0")),
    Case("input-size-too-small", "at least 16", _seg("-o", "out.nrrd", "--input-size", "8")),
    Case("absent-slices-negative", "at least 0", _seg("-o", "out.nrrd", "--absent-slices", "-1")),
    Case("threshold-out-of-range", "strictly between", _seg("-o", "out.nrrd", "--threshold", "1.5")),
    Case("preset-unknown", "invalid choice", _seg("-o", "out.nrrd", "--preset", "bone-ish")),
    Case("model-unknown", "unknown model", ["segment", "ct.nrrd", "--box", BOX, "--model", "nosuch", "-o", "out.nrrd"]),
    Case("model-not-3d", "not a 3d segmenter", ["segment", "ct.nrrd", "--box", BOX, "--model", "sam-vit-b", "-o", "o.nrrd"]),
    Case("model-weights-missing-offline", "are not in",
         ["segment", "ct.nrrd", "--box", BOX, "--model", "medsam2-pretrain", "-o", "out.nrrd"],
         env={"MEMSEG_OFFLINE": "1"}),
    Case("device-cuda-without-gpu", "cuda was requested", _seg("-o", "out.nrrd", "--device", "cuda")),
    Case("device-unknown", "unknown device", _seg("-o", "out.nrrd", "--device", "tpu")),
    Case("not-enough-memory", "needs about", _seg("-o", "out.nrrd"), env={"MEMSEG_MEMORY_BYTES": "1e6"}),
    Case("memory-setting-malformed", "not a number", _seg("-o", "out.nrrd"), env={"MEMSEG_MEMORY_BYTES": "lots"}),
    Case("weights-dir-is-a-file", "is a file", ["weights", "list"], env={"MEMSEG_WEIGHTS_DIR": "ct.nrrd"}),
    Case("weights-delete-without-name", "name the checkpoint", ["weights", "delete"]),
    Case("weights-verify-unknown", "1 of 1 checkpoints failed", ["weights", "verify", "nosuch"]),
    # -- cine loops -------------------------------------------------------------------------------
    Case("echo-3d-plus-t-without-plane", "--plane k,index", _echo(source="heart4d.nrrd")),
    Case("echo-plane-malformed", "axis,index", _echo("--plane", "X,1")),
    Case("echo-plane-outside", "outside the volumes", _echo("--plane", "K,9", source="heart4d.nrrd")),
    Case("echo-points-on-two-frames", "one frame",
         ["echo", "cine.seq.nrrd", "--point", "10,10,0", "--point", "12,12,3", "-o", "out.seq.nrrd"]),
    Case("echo-frame-outside", "frame 9 is outside the sequence", _echo("--frame", "9")),
    Case("echo-one-frame", "has one frame", _echo(source="one-frame.nrrd")),
    Case("echo-memory-frames-zero", "at least 1", _echo("--memory-frames", "0")),
    Case("echo-memory-frames-zero-shot", "leave memory_frames out", _echo("--memory-frames", "4")),
    Case("echo-text-file-as-checkpoint", "not a loadable memsam checkpoint",
         ["echo", "cine.seq.nrrd", "--box", "4,4,20,20", "--model", "text.pth", "-o", "out.seq.nrrd"]),
    Case("echo-checkpoint-missing", "no memsam weights",
         ["echo", "cine.seq.nrrd", "--box", "4,4,20,20", "--model", "gone.pth", "-o", "out.seq.nrrd"]),
]

API_CASES = [
    Case("api-volume-none", "got nonetype", call=lambda: segment_volume(None, _box(), model="medsam-lite"),
         raises=InvalidVolumeError),
    Case("api-volume-array", "wrap an array", call=lambda: segment_volume(np.zeros((4, 8, 8)), _box()),
         raises=InvalidVolumeError),
    Case("api-cancel-not-an-event", "threading.event",
         call=lambda: segment_volume(_ct(), _box(), model="medsam-lite", cancel=True), raises=ValueError),
    Case("api-progress-not-callable", "progress must be a function",
         call=lambda: segment_volume(_ct(), _box(), model="medsam-lite", progress=5), raises=ValueError),
    Case("api-threshold-text", "must be a number",
         call=lambda: segment_volume(_ct(), _box(), model="medsam-lite", threshold="0.5"), raises=ValueError),
    Case("api-matrix-nan", "nan or infinite",
         call=lambda: Volume(np.ones((4, 8, 8)), np.full((4, 4), np.nan)), raises=InvalidVolumeError),
    Case("api-matrix-text", "4x4 matrix of numbers",
         call=lambda: Volume(np.ones((4, 8, 8)), "identity"), raises=InvalidVolumeError),
    Case("api-cine-matrix-nan", "nan or infinite",
         call=lambda: Cine(np.ones((3, 8, 8)), np.full((4, 4), np.nan)), raises=InvalidVolumeError),
    Case("api-array-not-numpy", "numpy array", call=lambda: Volume([[[1, 2]]]), raises=InvalidVolumeError),
    Case("api-speed-option-zero", "positive whole number", call=lambda: SpeedOptions(encode_batch=0), raises=ValueError),
    Case("api-frames-none", "got nonetype", call=lambda: segment_sequence(None, frame_prompt(0, box=(2, 2, 9, 9))),
         raises=InvalidVolumeError),
    Case("api-cine-prompt-on-a-slice", "frame (axis k = time)",
         call=lambda: segment_sequence("cine.seq.nrrd", Prompt.from_points([(5, 5, 5)], axis="I"), model="medsam-lite"),
         raises=InvalidPromptError),
    Case("api-memsam-text-checkpoint", "not a loadable memsam checkpoint",
         call=lambda: segment_sequence("cine.seq.nrrd", frame_prompt(0, box=(4, 4, 20, 20)), model="text.pth"),
         raises=CheckpointError),
    Case("api-device-unknown", "unknown device",
         call=lambda: segment_volume(_ct(), _box(), model="medsam-lite", device="gpu0"), raises=DeviceError),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_refuses_with_one_line_and_changes_nothing(case, workspace, monkeypatch, capsys):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    before = _snapshot(workspace)
    try:
        status = main(list(case.argv))
    except SystemExit as exit:  # argparse's own usage errors
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.startswith("memseg")]
    assert lines and case.message.lower() in lines[-1].lower(), err
    assert "Traceback" not in err
    assert _snapshot(workspace) == before  # no input touched, no output or partial file written


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_raises_memseg_errors_and_changes_nothing(case, workspace):
    before = _snapshot(workspace)
    with pytest.raises(case.raises) as raised:
        case.call()
    assert case.message.lower() in str(raised.value).lower()
    assert _snapshot(workspace) == before


def test_catalogue_size():
    assert len(CLI_CASES) + len(API_CASES) >= 45
    assert len({c.id for c in CLI_CASES + API_CASES}) == len(CLI_CASES) + len(API_CASES)


# -- the ones that work but deserve a word ------------------------------------------------------------
def test_corrupt_payload_values_are_named_by_slice():
    """What a damaged gzip payload looks like: a few voxels of ±2e9 in an otherwise CT-like volume."""
    array = _volume_array(np.random.default_rng(1)).astype(np.int32)
    array[3, 4, 5], array[4, 10, 10] = 2_000_000_000, -2_000_000_000
    with pytest.warns(MemSegWarning, match=r"far outside its own range.*K slice 3, 4"):
        Volume(array, np.diag([*SPACING, 1.0])).check_segmentable()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same volume without them passes silently
        Volume(_volume_array(np.random.default_rng(1)), np.diag([*SPACING, 1.0])).check_segmentable()


def test_sheared_geometry_is_said():
    matrix = np.diag([*SPACING, 1.0])
    matrix[0, 1] = 1.0  # the J axis leans towards R
    with pytest.warns(MemSegWarning, match="sheared"):
        Volume(_volume_array(np.random.default_rng(2)), matrix).check_segmentable()


def test_cli_prints_warnings_as_one_line(workspace, capsys):
    array = _volume_array(np.random.default_rng(3)).astype(np.int32)
    array[2, 1, 1] = 2_000_000_000
    Volume(array, np.diag([*SPACING, 1.0])).write(workspace / "damaged.nrrd")
    assert main(["segment", "damaged.nrrd", "--box", BOX, "--model", "medsam-lite", "--axes", "1",
                 "-o", "damaged-mask.nrrd"]) == 0
    err = capsys.readouterr().err
    assert "memseg: warning: the volume holds 1 values far outside" in err and "Traceback" not in err
    assert (workspace / "damaged-mask.nrrd").is_file()


def test_segment_name_with_a_newline_is_cleaned(workspace):
    import slicerio

    assert main(_seg("-o", "named.seg.nrrd", "--segment-name", "left\nlung")) == 0
    assert [s["name"] for s in slicerio.read_segmentation("named.seg.nrrd")["segments"]] == ["left lung"]


def test_overwrite_replaces_only_when_asked(workspace):
    before = _sha(workspace / "existing.seg.nrrd")
    assert main(_seg("-o", "existing.seg.nrrd")) == 2
    assert _sha(workspace / "existing.seg.nrrd") == before
    assert main(_seg("-o", "existing.seg.nrrd", "--overwrite")) == 0
    assert _sha(workspace / "existing.seg.nrrd") != before
    assert not [p for p in workspace.iterdir() if "partial" in p.name]


def test_weights_verify_reports_every_file_and_list_shows_corrupt(workspace, monkeypatch, capsys):
    from MemSegLogic.runtime.checkpoints import Checkpoint, register_checkpoint, sha256_of, unregister_checkpoint

    monkeypatch.setenv("MEMSEG_WEIGHTS_DIR", str(workspace / "weights"))
    (workspace / "weights").mkdir()
    for name in ("good", "bad"):
        (workspace / "weights" / f"{name}.pt").write_bytes(name.encode())
    register_checkpoint(Checkpoint("test-bad", "medsam2", "bad.pt", "0" * 64, 256, "corrupt on purpose", "test"))
    register_checkpoint(Checkpoint("test-good", "medsam2", "good.pt", sha256_of(workspace / "weights" / "good.pt"),
                                   256, "fine", "test"))
    try:
        assert main(["weights", "verify", "test-bad", "test-good"]) == 2
        printed = capsys.readouterr()
        assert "memseg: test-bad: FAILED" in printed.err and "test-good: OK" in printed.out
        assert main(["weights", "list"]) == 0
        listing = capsys.readouterr().out
        assert [line.split()[3] for line in listing.splitlines() if line.startswith("test-bad")] == ["corrupt"]
    finally:
        unregister_checkpoint("test-bad")
        unregister_checkpoint("test-good")


def test_internal_errors_are_one_line(workspace, monkeypatch, capsys):
    """A bug must still not show a traceback: a stand-in engine failure (named as such) is one line."""
    from MemSegLogic.volume3d import propagation

    def broken(*args, **kwargs):
        raise KeyError(101)  # what torch.load raised on a text file before it was caught

    monkeypatch.setattr(propagation, "propagate_volume", broken)
    assert main(_seg("-o", "out.nrrd")) == 2
    err = capsys.readouterr().err
    assert "memseg: internal error (KeyError: 101)" in err and "Traceback" not in err
    assert not (workspace / "out.nrrd").exists()


# -- interrupted while writing ------------------------------------------------------------------------
_SLOW_WRITE = r"""
import sys, time
import slicerio
from MemSegLogic.app.cli import main

real_write = slicerio.write_segmentation

def slow_write(path, segmentation):  # a stand-in for a large write: the real one, then a pause
    real_write(path, segmentation)
    print("WRITING", flush=True)
    # In short steps, as a real write keeps returning to Python: a signal that the OS hands to one
    # of the runtimes' worker threads (OpenVINO's, PyTorch's) reaches Python's handler only when the
    # main thread runs Python again, so one 60-s sleep would hold it for the whole minute.
    for _ in range(600):
        time.sleep(0.1)

slicerio.write_segmentation = slow_write
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_during_write_leaves_the_old_file_and_no_partial(workspace, sig, status):
    before = _snapshot(workspace)
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, "-q", *_seg("-o", "existing.seg.nrrd", "--overwrite")],
                             cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    timer = threading.Timer(300, child.kill)  # never hang the suite
    timer.start()
    try:
        assert child.stdout.readline().strip() == "WRITING"
        assert any("partial" in p.name for p in workspace.iterdir())  # caught mid-write
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
    finally:
        timer.cancel()
    assert child.returncode == status, err
    assert "interrupted; no output was written or changed" in err and "Traceback" not in err
    assert _snapshot(workspace) == before


def test_options_a_model_ignores_are_said(workspace, capsys):
    assert main(_seg("-o", "batched.nrrd", "--encode-batch", "4")) == 0
    assert "memseg: warning: encode_batch and compile_encoder apply to MedSAM-2 models; medsam-lite ignores them" \
        in capsys.readouterr().err


def test_cpu_out_of_memory_is_the_same_clear_error():
    """PyTorch's CPU allocator and numpy say "out of memory" their own ways; users get one message."""
    import torch

    from MemSegLogic.runtime.devices import out_of_memory_as_device_error

    for error in (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 2147483648 bytes"), MemoryError()):
        with pytest.raises(DeviceError, match="the computer ran out of memory: close other programs, segment one axis"):
            with out_of_memory_as_device_error(torch.device("cpu")):
                raise error
    with pytest.raises(RuntimeError, match="something else"):  # other failures keep their own message
        with out_of_memory_as_device_error(torch.device("cpu")):
            raise RuntimeError("something else")


def test_two_writers_of_one_output_leave_one_whole_file(tmp_path):
    """Two runs writing the same output at once: the file is one of the two, whole, and no
    partial file is left (each writer has its own hidden partial)."""
    from MemSegLogic.io.atomic import replace_atomically

    target = tmp_path / "mask.nii.gz"
    started = threading.Barrier(2)

    def write(content):
        def slowly(partial):
            partial.write_bytes(content[: len(content) // 2])
            started.wait(timeout=30)  # both are half-way before either finishes
            with open(partial, "ab") as stream:
                stream.write(content[len(content) // 2:])
        replace_atomically(target, slowly)

    contents = [bytes([n]) * 100_000 for n in (1, 2)]
    writers = [threading.Thread(target=write, args=(c,)) for c in contents]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert target.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]
