"""Clicks in slice views -> the voxel under the cursor, checked against Slicer's own conversion
(`vtkSlicerSegmentEditorLogic.XyToIjk`) on real slice nodes (slicer-core): axial, coronal and
sagittal views of flipped, permuted and oblique volumes (rotated to the volume plane)."""

import numpy as np
import pytest
import vtk
from geometry_cases import GEOMETRIES

slicer = pytest.importorskip("slicer")

SHAPE_KJI = (12, 20, 24)


def _matrix(node_matrix):
    return np.array([[node_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _slice_view(scene, orientation, volume_node):
    """A slice node as Slicer's Red/Yellow/Green views have it, rotated to the volume's planes."""
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    node.SetDimensions(400, 300, 1)
    node.SetFieldOfView(250.0, 187.5, 1.0)
    assert node.SetOrientation(orientation)
    node.RotateToVolumePlane(volume_node)
    return node


def _xy_of(slice_node, ras):
    """The view pixel showing RAS point ``ras`` (which must lie on the displayed plane)."""
    xyz = np.linalg.inv(_matrix(slice_node.GetXYToRAS())) @ np.append(ras, 1.0)
    assert abs(xyz[2]) < 1e-6
    return xyz[:2]


def _slicer_xy_to_ijk(slice_node, xy):
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(SHAPE_KJI[2], SHAPE_KJI[1], SHAPE_KJI[0])
    volume_node = slice_node.GetScene().GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    ijk = [0, 0, 0]
    slicer.vtkSlicerSegmentEditorLogic.XyToIjk([float(v) for v in xy], ijk, slice_node, image)
    return ijk


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_a_click_lands_on_the_voxel_under_the_cursor_in_every_view(slicer_scene, geometry):
    from MemSegLogic.mrml import promptFromSliceView

    ijk_to_ras = GEOMETRIES[geometry]
    node = slicer.util.addVolumeFromArray(np.zeros(SHAPE_KJI, np.int16), ijkToRAS=ijk_to_ras, name="v")
    rng = np.random.default_rng(7)
    axes = []
    for orientation in ("Axial", "Coronal", "Sagittal"):
        view = _slice_view(slicer_scene, orientation, node)
        for _ in range(4):
            target = rng.integers([0, 0, 0], [SHAPE_KJI[2], SHAPE_KJI[1], SHAPE_KJI[0]])
            view.JumpSliceByOffsetting(*(ijk_to_ras @ np.append(target, 1.0))[:3])  # show its slice
            axis = int(np.argmax(np.abs(np.linalg.inv(ijk_to_ras[:3, :3]) @ _matrix(view.GetSliceToRAS())[:3, 2])))
            cursor = target + np.where(np.arange(3) == axis, 0.0, rng.uniform(-0.4, 0.4, 3))  # inside the voxel
            xy = _xy_of(view, (ijk_to_ras @ np.append(cursor, 1.0))[:3])
            prompt = promptFromSliceView(node, view, positiveXY=[xy])
            assert prompt.axis == axis and prompt.slice_index == target[axis]
            np.testing.assert_allclose(prompt.points[0], cursor, atol=1e-6)
            np.testing.assert_array_equal(np.rint(prompt.points[0]), target)
            assert _slicer_xy_to_ijk(view, xy) == list(target)  # Slicer agrees on the voxel
        axes.append(prompt.axis)
    assert sorted(axes) == [0, 1, 2]  # three views, three different volume axes


def test_a_dragged_box_and_negative_clicks_sit_on_the_view_slice(slicer_scene):
    from MemSegLogic.mrml import promptFromSliceView

    ijk_to_ras = GEOMETRIES["k-flipped"]
    node = slicer.util.addVolumeFromArray(np.zeros(SHAPE_KJI, np.int16), ijkToRAS=ijk_to_ras, name="v")
    view = _slice_view(slicer_scene, "Axial", node)
    view.JumpSliceByOffsetting(*(ijk_to_ras @ [0, 0, 5, 1])[:3])
    corners = [_xy_of(view, (ijk_to_ras @ [i, j, 5, 1])[:3]) for i, j in ((3, 4), (15, 12))]
    inside = _xy_of(view, (ijk_to_ras @ [8, 8, 5, 1])[:3])
    prompt = promptFromSliceView(node, view, negativeXY=[inside], boxXY=corners)
    assert (prompt.axis, prompt.slice_index) == (2, 5)
    np.testing.assert_allclose(prompt.box[:, :2], [[3, 4], [15, 12]], atol=1e-6)
    assert list(prompt.labels) == [0]


def test_an_oblique_reformat_is_refused_with_a_way_out(slicer_scene):
    from MemSegLogic.errors import InvalidPromptError
    from MemSegLogic.mrml import promptFromSliceView

    node = slicer.util.addVolumeFromArray(np.zeros(SHAPE_KJI, np.int16), ijkToRAS=np.eye(4), name="v")
    view = _slice_view(slicer_scene, "Axial", node)
    matrix = view.GetSliceToRAS()  # tilt the axial view 10 degrees about R
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    for row, values in ((1, (0, c, -s)), (2, (0, s, c))):
        for col, value in enumerate(values):
            matrix.SetElement(row, col, value)
    view.UpdateMatrices()
    with pytest.raises(InvalidPromptError, match="tilted 10.0 degrees.*Rotate to volume plane"):
        promptFromSliceView(node, view, positiveXY=[[200, 150]])


def test_seed_from_the_segment_slice_a_view_shows(slicer_scene):
    from MemSegLogic.core.geometry import slice_stack
    from MemSegLogic.errors import InvalidPromptError
    from MemSegLogic.mrml import promptFromSegmentSlice

    ijk_to_ras = GEOMETRIES["permuted"]
    node = slicer.util.addVolumeFromArray(np.zeros(SHAPE_KJI, np.int16), ijkToRAS=ijk_to_ras, name="v")
    segmentation = slicer_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)
    organ = segmentation.GetSegmentation().AddEmptySegment("organ", "organ")
    painted = np.zeros(SHAPE_KJI, np.uint8)
    painted[3:9, 5:14, 10] = 1  # on I slice 10 only
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted, segmentation, organ, node)
    for orientation in ("Axial", "Coronal", "Sagittal"):
        view = _slice_view(slicer_scene, orientation, node)
        view.JumpSliceByOffsetting(*(ijk_to_ras @ [10, 7, 5, 1])[:3])
        axis = int(np.argmax(np.abs(np.linalg.inv(ijk_to_ras[:3, :3]) @ _matrix(view.GetSliceToRAS())[:3, 2])))
        if axis == 0:
            prompt = promptFromSegmentSlice(node, segmentation, organ, view)
            assert (prompt.axis, prompt.slice_index) == (0, 10)
            np.testing.assert_array_equal(prompt.mask, slice_stack(painted, 0)[10].astype(bool))
        else:  # a view across the painted slice shows a line of it; another slice shows nothing
            view.JumpSliceByOffsetting(*(ijk_to_ras @ [10, 0, 0, 1])[:3] if axis == 1 else (ijk_to_ras @ [10, 7, 0, 1])[:3])
            with pytest.raises(InvalidPromptError, match="has no voxels on slice"):
                promptFromSegmentSlice(node, segmentation, organ, view)
