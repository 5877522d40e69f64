"""Results while they are computed (`segment_volume(..., preview=...)`): every slice arrives as
soon as its pass has it, in the order the passes reach them, in the volume's own frame; the
collected preview is the final mask where it should be; a cancel after the first slice keeps
nothing."""

import threading

import numpy as np
import pytest

from MemSegLogic import PreviewMask, Prompt, PropagationOptions, SegmentationCancelled, Volume, segment_volume
from MemSegLogic.app.demo import DEMO_PRESET, DEMO_SEGMENT, seed_box
from MemSegLogic.core.geometry import AXIS_NAMES, slice_stack

pytest.importorskip("sam2")


def _ball(shape=(10, 40, 36)):
    k, j, i = np.indices(shape)
    ball = ((k - 5) / 4.0) ** 2 + ((j - 20) / 11.0) ** 2 + ((i - 18) / 9.0) ** 2 < 1
    rng = np.random.default_rng(1)
    ijk_to_ras = np.array([[-0.8, 0, 0, 10], [0, 0.7, 0, -5], [0, 0, 2.5, 30], [0, 0, 0, 1.0]])
    return Volume((rng.normal(0, 20, shape) + 300 * ball).astype(np.float32), ijk_to_ras)


def _check_order(updates, seeds_by_pass):
    """Per pass: its seed slice(s) first, then forward slices in increasing order, then backward
    ones in decreasing order; passes one after another."""
    numbers = [u.pass_number for u in updates]
    assert numbers == sorted(numbers)
    for number, seeds in seeds_by_pass.items():
        indices = [u.index for u in updates if u.pass_number == number]
        assert indices[:len(seeds)] == sorted(seeds)
        rest = indices[len(seeds):]
        forward = [i for i in rest if i > max(seeds)]
        backward = [i for i in rest if i < min(seeds)]
        assert rest == forward + backward
        assert forward == sorted(forward) and backward == sorted(backward, reverse=True)
        assert len(set(indices)) == len(indices)


def test_every_slice_of_every_pass_arrives_in_order_and_in_the_volumes_frame(tiny_sam2_checkpoint):
    volume = _ball()
    updates = []
    result = segment_volume(volume, Prompt.from_points([[18, 20, 5]], box=[[9, 9, 5], [27, 31, 5]]),
                            model=tiny_sam2_checkpoint.name, device="cpu", axes=3,
                            propagation=PropagationOptions(absent_slices=0), preview=updates.append)
    passes = list(result.axis_probability)
    assert passes[0] == "K" and [AXIS_NAMES[u.axis] for u in updates if u.pass_number == 0] == ["K"] * 10
    seeds_by_pass = {0: [5]}
    for number, name in enumerate(passes):
        mine = [u for u in updates if u.pass_number == number]
        assert {AXIS_NAMES[u.axis] for u in mine} == {name}
        assert len(mine) == result.visited_per_axis[name]
        probability = result.axis_probability[name]
        for update in mine:
            # the slice as the pass left it: its probability above 0.5 (NaN outside its window)
            expected = slice_stack(np.nan_to_num(probability, nan=0.0), update.axis)[update.index] > 0.5
            assert update.mask.dtype == bool and update.mask.shape == expected.shape
            np.testing.assert_array_equal(update.mask, expected)
        if number:
            seeds_by_pass[number] = [mine[0].index]
    _check_order(updates, seeds_by_pass)


def test_cancel_after_the_first_slice_keeps_nothing(tiny_sam2_checkpoint):
    volume = _ball()
    cancel = threading.Event()
    updates, preview = [], PreviewMask(volume.shape_kji)

    def first_then_cancel(update):
        updates.append(update)
        preview(update)
        cancel.set()

    with pytest.raises(SegmentationCancelled):
        segment_volume(volume, Prompt.from_points([[18, 20, 5]]), model=tiny_sam2_checkpoint.name, device="cpu",
                       axes=3, preview=first_then_cancel, cancel=cancel)
    assert [(u.pass_number, u.index) for u in updates] == [(0, 5)]
    assert preview.updates == 1 and preview.version == 1


def test_preview_mask_is_thread_safe_and_reports_only_changes():
    preview = PreviewMask((3, 4, 5))
    assert preview.snapshot() is None and preview.version == 0
    from MemSegLogic import SliceUpdate

    preview(SliceUpdate(0, 2, 1, np.ones((4, 5), bool)))
    preview(SliceUpdate(1, 0, 2, np.ones((3, 4), bool)))  # later passes do not change the preview
    version, mask = preview.snapshot()
    assert version == 1 and mask.sum() == 20 and mask[1].all()
    assert preview.snapshot() is None  # nothing new since
    mask[:] = 0  # a snapshot is a copy
    preview(SliceUpdate(0, 2, 0, np.eye(4, 5, dtype=bool)))
    version, mask = preview.snapshot()
    assert version == 2 and mask.sum() == 24
    assert preview.updates == 3


def test_real_ct_preview_streams_the_right_lung_and_ends_as_the_result(chest_ct):
    """Real LiteMedSAM weights on slicerio's chest CT, cut to 9 slices around the seed so it
    stays quick: the seed slice arrives first, then each slice as the pass reaches it, and with
    one axis the collected preview is exactly the returned mask."""
    volume, segments = chest_ct
    reference = segments[DEMO_SEGMENT]
    _, k = seed_box(reference)
    first = k - 4
    part = volume.slab(first, 9)
    prompt, seed = seed_box(reference[first:first + 9])
    assert seed == 4
    updates, preview = [], PreviewMask(part.shape_kji)

    def collect(update):
        updates.append(update)
        preview(update)

    result = segment_volume(part, prompt, model="medsam-lite", device="cpu", preset=DEMO_PRESET, axes=1,
                            propagation=PropagationOptions(absent_slices=0), preview=collect)
    assert [u.index for u in updates] == [4, 5, 6, 7, 8, 3, 2, 1, 0]
    assert all(u.axis == 2 and u.pass_number == 0 for u in updates)
    _, collected = preview.snapshot()
    np.testing.assert_array_equal(collected, result.mask)
    assert collected[4].sum() > 500  # the lung on the seed slice, not an empty frame


def test_slicer_preview_shows_the_seed_slice_while_the_worker_runs(slicer_scene, tiny_sam2_checkpoint):
    """What the MedSAM-2 effect does on each poll (real MRML, the real worker thread): the seed
    slice is in the preview node while the run is still going; the run's end replaces it with
    the result; a cancelled run's preview is removed and the segment was never touched."""
    slicer = pytest.importorskip("slicer")
    from MemSegLogic.mrml import StreamedPreview, removePreview, showPreview, volumeFromNode
    from MemSegLogic.runtime.background import BackgroundTask

    ball = _ball()
    node = slicer.util.addVolumeFromArray(ball.array, ijkToRAS=ball.ijk_to_ras, name="ball")
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)
    organ = segmentation.GetSegmentation().AddEmptySegment("organ", "organ")
    volume = volumeFromNode(node, referenceNode=segmentation)
    prompt = Prompt.from_points([[18, 20, 5]], box=[[9, 9, 5], [27, 31, 5]])

    for cancelled in (False, True):
        streamed = StreamedPreview(PreviewMask(volume.shape_kji), volume.ijk_to_ras, segmentation, organ, interval=0)
        shown = threading.Event()

        def hold_after_first_slice(update, streamed=streamed, shown=shown):
            streamed.mask(update)
            assert shown.wait(30), "the main thread never showed the first slice"

        task = BackgroundTask(segment_volume, volume, prompt, model=tiny_sam2_checkpoint.name, device="cpu", axes=1,
                              propagation=PropagationOptions(absent_slices=0), preview=hold_after_first_slice)
        while not streamed.refresh():  # the effect's poll timer
            assert not task.done, task.result()
        on_view = slicer.util.arrayFromSegmentBinaryLabelmap(streamed.node, "preview", node)
        assert not task.done and on_view[5].any() and not np.delete(on_view, 5, axis=0).any()
        assert not slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, organ, node).any()
        if cancelled:
            task.cancel()
        shown.set()
        if cancelled:
            with pytest.raises(SegmentationCancelled):
                task.result(60)
            removePreview(streamed.node)  # what the effect does on a cancel
            assert streamed.node.GetScene() is None
        else:
            result = task.result(60)
            final = showPreview(result.mask, result.ijk_to_ras, segmentation, organ, streamed.node)
            assert final is streamed.node  # the same node, now holding the whole result
            np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(final, "preview", node),
                                          result.mask)
            removePreview(final)
        assert not slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, organ, node).any()
