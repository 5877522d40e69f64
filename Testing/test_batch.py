"""`memseg batch` on a real local Ray (2 CPUs, 2 workers) with real medsam-lite weights on a few
slices (2) of slicerio's real chest CT: outputs equal the local call's, a bad case fails alone with
its reason, a re-run does no work for current cases and redoes changed ones, Ctrl-C stops cleanly.
Manifest checks run without Ray."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from MemSegLogic.app.demo import seed_box
from MemSegLogic.batch.manifest import ManifestError, read_manifest
from MemSegLogic.core.metrics import dice
from MemSegLogic.core.volume import Volume

ray = pytest.importorskip("ray")
REPO = pathlib.Path(__file__).resolve().parents[1]


# -- data: 2-slice crops of the real CT (medsam-lite: seconds a slice on 2 shared cores) --------------
def _box_ras(volume: Volume, reference: np.ndarray) -> str:
    """The reference's bounding box on the middle slice as the manifest's R,A,S,R,A,S."""
    prompt, _ = seed_box(reference)
    return ",".join(f"{v:.6f}" for v in volume.ijk_to_ras_points(prompt.box).ravel())


def _write_manifest(path, rows):
    columns = sorted({name for row in rows for name in row}, key=lambda n: (n != "case", n != "image", n))
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, chest_ct):
    """Three cases in three prompt kinds (box, point, seed labelmap) on two crops, and a corrupt image."""
    from MemSegLogic.io.segmentation_io import write_mask

    folder = tmp_path_factory.mktemp("cohort")
    volume, segments = chest_ct
    lung = segments["right lung"]
    a, b = volume.slab(19, 2), volume.slab(23, 2)
    (folder / "images").mkdir()
    a.write(folder / "images" / "chest_a.nrrd")
    b.write(folder / "images" / "chest_b.nrrd")
    a_lung = lung[19:21]
    write_mask(folder / "chest_a_lung.nrrd", a_lung, a.ijk_to_ras)
    seed = np.zeros_like(a_lung)
    seed[1] = a_lung[1]
    write_mask(folder / "chest_a_seed.nrrd", seed, a.ijk_to_ras)
    (folder / "images" / "broken.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 9 9\n")
    _, k = seed_box(lung[23:25])
    rows, cols = np.nonzero(lung[23 + k])
    point = b.ijk_to_ras_points(np.array([[np.median(cols), np.median(rows), k]]))[0]
    box_a = _box_ras(a, a_lung)
    manifest = _write_manifest(folder / "cohort.csv", [  # relative paths: resolved against the manifest's folder
        {"case": "a_box", "image": "images/chest_a.nrrd", "box": box_a, "reference": "chest_a_lung.nrrd",
         "preset": "ct-chest", "axes": "1"},
        {"case": "b_point", "image": "images/chest_b.nrrd", "point": ",".join(f"{v:.6f}" for v in point),
         "options": json.dumps({"preset": "ct-chest", "axes": 1})},
        {"case": "a_seed", "image": "images/chest_a.nrrd", "seed_labelmap": "chest_a_seed.nrrd", "preset": "ct-chest",
         "axes": "1", "segment_name": "right lung"},
        {"case": "broken", "image": "images/broken.nrrd", "box": box_a, "axes": "1"},
    ])
    return {"folder": folder, "manifest": manifest, "a": a, "b": b, "a_lung": a_lung, "seed": seed, "box_a": box_a,
            "point_b": point, "volume": volume}


def _summary(folder) -> dict:
    with open(folder / "summary.csv", newline="") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def _mask(path) -> np.ndarray:
    from MemSegLogic.io.segmentation_io import read_segmentation_file

    segments, _ = read_segmentation_file(path)
    return next(iter(segments.values()))


def _default_sigint():
    """Ctrl-C's default action in the child, even where this test runs with SIGINT ignored (a shell's
    background job): Python then installs its KeyboardInterrupt handler as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- Ctrl-C through the command line (its own local Ray, before the module's one starts) -------------
def test_ctrl_c_stops_cleanly_with_the_summary_so_far(tmp_path, cohort):
    rows = [{"case": f"c{n}", "image": str(cohort["folder"] / "images" / "chest_a.nrrd"), "box": cohort["box_a"],
             "preset": "ct-chest", "axes": "1"} for n in range(2)]
    manifest = _write_manifest(tmp_path / "three.csv", rows)
    output = tmp_path / "out"
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen([sys.executable, "-m", "MemSegLogic", "batch", str(manifest), "-o", str(output),
                                "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 150
    while not list(output.glob("*.seg.nrrd")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    os.kill(process.pid, signal.SIGINT)  # what Ctrl-C sends
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr and "1/2" in stderr  # the progress bar's count
    summary = _summary(output)
    statuses = sorted(row["status"] for row in summary.values())
    assert statuses == ["cancelled", "done"], statuses  # the second case was running: one worker
    done = {name for name, row in summary.items() if row["status"] == "done"}
    assert {p.name for p in output.glob("*.seg.nrrd")} == {f"{name}.seg.nrrd" for name in done}
    assert not [p for p in output.iterdir() if "partial" in p.name]


# -- the cohort on a local Ray with two workers ----------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def first_run(cohort, local_ray, tmp_path_factory):
    from MemSegLogic.batch import run_batch

    output = tmp_path_factory.mktemp("batch-out")
    report = run_batch(cohort["manifest"], output, workers=2, quiet=True)
    return output, report


def test_three_outputs_and_one_failure_with_its_reason(cohort, first_run):
    output, report = first_run
    summary = _summary(output)
    assert {name: row["status"] for name, row in summary.items()} == {
        "a_box": "done", "b_point": "done", "a_seed": "done", "broken": "failed"}
    assert "cannot read" in summary["broken"]["message"] and "broken.nrrd" in summary["broken"]["message"]
    assert "\n" not in summary["broken"]["message"] and "Traceback" not in summary["broken"]["message"]
    assert sorted(p.name for p in output.glob("*.seg.nrrd")) == ["a_box.seg.nrrd", "a_seed.seg.nrrd", "b_point.seg.nrrd"]
    assert not [p for p in output.iterdir() if "partial" in p.name]
    # the reference case is scored: Dice against the file, volume difference in mL
    a_box = _mask(output / "a_box.seg.nrrd")
    assert float(summary["a_box"]["dice"]) == pytest.approx(dice(a_box, cohort["a_lung"]), abs=1e-4)
    assert float(summary["a_box"]["dice"]) > 0.8
    voxel_ml = float(np.prod(cohort["a"].spacing)) / 1000
    assert float(summary["a_box"]["volume_difference_ml"]) == pytest.approx(
        (int(a_box.sum()) - int(cohort["a_lung"].sum())) * voxel_ml, abs=1e-3)
    assert int(summary["a_box"]["voxels"]) == int(a_box.sum())
    assert summary["b_point"]["dice"] == ""  # no reference given
    document = json.loads((output / "summary.json").read_text())
    assert document["counts"] == {"done": 3, "skipped": 0, "failed": 1, "cancelled": 0} and document["workers"] == 2


def test_outputs_equal_the_local_call(cohort, first_run):
    """The box case through `segment_volume` here, its RAS corners mapped as `memseg segment` maps
    them: the same mask, voxel for voxel (one thread, as each of the two workers had one core).
    The seed labelmap's slice is kept as painted, and the lung is found on the other slice."""
    from MemSegLogic import Prompt, SpeedOptions, segment_volume
    from MemSegLogic.runtime.devices import set_cpu_threads

    output, _ = first_run
    threads = set_cpu_threads(None)
    try:
        box = np.array([float(v) for v in cohort["box_a"].split(",")]).reshape(2, 3)
        local = segment_volume(cohort["a"], Prompt.several_from_ras(cohort["a"], box=box), model="medsam-lite",
                               preset="ct-chest", axes=1, speed=SpeedOptions(threads=1))
    finally:
        set_cpu_threads(threads)
    np.testing.assert_array_equal(_mask(output / "a_box.seg.nrrd"), local.mask)
    assert local.mask.sum() > 1000
    seeded = _mask(output / "a_seed.seg.nrrd")
    np.testing.assert_array_equal(seeded[1], cohort["seed"][1])
    assert dice(seeded, cohort["a_lung"]) > 0.8


def test_rerun_skips_current_cases_and_redoes_a_changed_one(cohort, first_run):
    from MemSegLogic.batch import run_batch

    output, _ = first_run
    outputs = {name: output / f"{name}.seg.nrrd" for name in ("a_box", "b_point", "a_seed")}
    before = {name: path.stat().st_mtime_ns for name, path in outputs.items()}
    time.sleep(0.05)  # a rewrite would show a newer modification time
    again = run_batch(cohort["manifest"], output, workers=2, quiet=True)
    summary = _summary(output)
    assert {name: row["status"] for name, row in summary.items()} == {
        "a_box": "skipped", "b_point": "skipped", "a_seed": "skipped", "broken": "failed"}
    assert {name: path.stat().st_mtime_ns for name, path in outputs.items()} == before
    assert again.counts["skipped"] == 3 and summary["a_box"]["dice"] != ""  # the figures of the run that did it

    changed = cohort["volume"].slab(22, 2)  # chest_b now holds other slices
    changed.write(cohort["folder"] / "images" / "chest_b.nrrd")
    third = run_batch(cohort["manifest"], output, workers=2, quiet=True)
    summary = _summary(output)
    assert {name: row["status"] for name, row in summary.items()} == {
        "a_box": "skipped", "b_point": "done", "a_seed": "skipped", "broken": "failed"}, third.records
    after = {name: path.stat().st_mtime_ns for name, path in outputs.items()}
    assert after["a_box"] == before["a_box"] and after["a_seed"] == before["a_seed"]
    assert after["b_point"] > before["b_point"]


def test_a_model_registered_in_the_driver_runs_on_the_workers(cohort, first_run, tmp_path):
    """A checkpoint registered in this process only (a fine-tuned model under its own name) is
    known to the workers, which are processes of their own."""
    import dataclasses

    from MemSegLogic.batch import run_batch
    from MemSegLogic.runtime.checkpoints import get_checkpoint, register_checkpoint, unregister_checkpoint

    register_checkpoint(dataclasses.replace(get_checkpoint("medsam-lite"), name="my-lite"))
    try:
        rows = [{"case": "mine", "image": str(cohort["folder"] / "images" / "chest_a.nrrd"), "box": cohort["box_a"],
                 "model": "my-lite", "preset": "ct-chest", "axes": "1"}]
        report = run_batch(_write_manifest(tmp_path / "mine.csv", rows), tmp_path / "out", quiet=True)
    finally:
        unregister_checkpoint("my-lite")
    assert report.records[0].status == "done", report.records[0].message
    np.testing.assert_array_equal(_mask(tmp_path / "out" / "mine.seg.nrrd"), _mask(first_run[0] / "a_box.seg.nrrd"))


def test_more_gpus_than_the_cluster_has_is_one_clear_error(cohort, local_ray, tmp_path):
    """--gpus-per-worker is a Ray resource: a Ray without GPUs cannot place the worker, which would
    otherwise wait for ever."""
    from MemSegLogic.batch import run_batch
    from MemSegLogic.errors import MemSegError

    if ray.cluster_resources().get("GPU"):
        pytest.skip("this Ray has GPUs")
    rows = [{"case": "c", "image": str(cohort["folder"] / "images" / "chest_a.nrrd"), "box": cohort["box_a"]}]
    with pytest.raises(MemSegError) as error:
        run_batch(_write_manifest(tmp_path / "one.csv", rows), tmp_path / "out", gpus_per_worker=1, quiet=True)
    assert str(error.value) == "1 worker needs 1 GPU (0 in the cluster): use fewer --workers or a smaller --gpus-per-worker"
    assert _summary(tmp_path / "out")["c"]["status"] == "cancelled"


def test_an_output_never_replaces_a_file_it_did_not_write(cohort, local_ray, tmp_path):
    """A file already at a case's output (not from an earlier run) is kept and the case fails saying so."""
    from MemSegLogic.batch import run_batch

    rows = [{"case": "b", "image": str(cohort["folder"] / "images" / "broken.nrrd"), "box": cohort["box_a"]}]
    manifest = _write_manifest(tmp_path / "one.csv", rows)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.seg.nrrd").write_bytes(b"someone's file")
    report = run_batch(manifest, tmp_path / "out", quiet=True)
    assert report.records[0].status == "failed" and "exists already" in report.records[0].message
    assert (tmp_path / "out" / "b.seg.nrrd").read_bytes() == b"someone's file"


# -- manifest checks (no Ray) -----------------------------------------------------------------------------
@pytest.mark.parametrize("rows, message", [
    ([{"image": "x.nrrd", "box": "1,2,3,4,5,3", "colour": "red"}], "unknown column(s) 'colour'"),
    ([{"image": "missing.nrrd", "box": "1,2,3,4,5,3"}], "line 2: image missing.nrrd does not exist"),
    ([{"image": "x.nrrd", "box": "1,2,3,4"}], "line 2: box (R,A,S,R,A,S: two opposite corners) needs 6"),
    ([{"image": "x.nrrd"}], "line 2: no prompt"),
    ([{"image": "x.nrrd", "box": "1,2,3,4,5,3", "seed_labelmap": "x.nrrd"}], "either a seed_labelmap or points/box"),
    ([{"image": "x.nrrd", "point": "1,2,3", "model": "nope"}], "unknown model 'nope'"),
    ([{"image": "x.nrrd", "point": "1,2,3", "axes": "2"}], "axes must be 1 or 3"),
    ([{"image": "x.nrrd", "point": "1,2,3", "options": "{\"fusion\": mean}"}], "options is not valid JSON"),
    ([{"image": "x.nrrd", "point": "1,2,3", "options": "{\"speed\": 2}"}], "unknown option 'speed'"),
    ([{"image": "x.nrrd", "point": "1,2,3", "crop": "maybe"}], "crop must be true or false"),
    ([{"image": "x.nrrd", "point": "1,2,3", "seed": "x.nrrd"}], "seed must be a whole number"),
    ([{"image": "x.nrrd", "point": "1;2;3"}, {"image": "x.nrrd", "point": "1,2,3"}],
     "line 2: point (R,A,S) needs 3"),
    ([{"image": "x.nrrd", "point": "1,2,3"}, {"image": "x.nrrd", "point": "4,5,6"}],
     "lines 2, 3: the same case name 'x'"),
])
def test_manifest_problems_are_named_by_line_and_column(tmp_path, rows, message):
    (tmp_path / "x.nrrd").write_bytes(b"not read while checking the manifest")
    with pytest.raises(ManifestError) as error:
        read_manifest(_write_manifest(tmp_path / "m.csv", rows))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_manifest_paths_and_options(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ct.nii.gz").write_bytes(b"x")
    manifest = _write_manifest(tmp_path / "data" / "m.csv", [
        {"image": "ct.nii.gz", "point": "1,2,3; 4,5,6", "negative": "7,8,9", "crop": "false",
         "options": json.dumps({"input_size": 512, "threshold": 0.4})}])
    monkeypatch.chdir(tmp_path)  # relative to the manifest, not to where memseg runs
    (case,) = read_manifest(manifest)
    assert case.image == tmp_path / "data" / "ct.nii.gz" and case.name == "ct"
    assert case.point == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0)) and case.negative == ((7.0, 8.0, 9.0),)
    options = case.segment_volume_options()
    assert options["threshold"] == 0.4 and options["propagation"].crop is False and options["speed"].input_size == 512


def test_cli_reports_a_bad_manifest_in_one_line(tmp_path, capsys):
    from MemSegLogic.app.cli import main

    manifest = _write_manifest(tmp_path / "m.csv", [{"image": "nowhere.nrrd", "box": "1,2,3,4,5,3"}])
    assert main(["-q", "batch", str(manifest), "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("memseg: error: manifest m.csv: line 2: image nowhere.nrrd does not exist")
    assert "\n" not in error and not (tmp_path / "out").exists()
