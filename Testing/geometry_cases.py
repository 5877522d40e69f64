"""IJK->RAS matrices that break naive code: flips, axis permutations, obliquity, anisotropy."""

import numpy as np


def _rotation(axis, degrees):
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    rotation = np.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    return rotation


def _matrix(directions, spacing, origin):
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(directions, dtype=float) * np.asarray(spacing, dtype=float)
    matrix[:3, 3] = origin
    return matrix


GEOMETRIES = {
    "identity": np.eye(4),
    "lps-like-flipped": _matrix(np.diag([-1.0, -1.0, 1.0]), (0.7, 0.7, 2.5), (120.5, 98.25, -40.0)),
    "k-flipped": _matrix(np.diag([1.0, 1.0, -1.0]), (0.8, 0.8, 5.0), (-10.0, 20.0, 300.0)),
    "permuted": _matrix([[0, 0, 1], [1, 0, 0], [0, -1, 0]], (1.5, 0.6, 0.9), (5.0, -7.0, 11.0)),
    "oblique": _matrix(_rotation(0, 17) @ _rotation(2, -31), (0.9, 1.1, 3.0), (-33.3, 12.1, 7.7)),
}


def assert_same_voxels_by_position(actual, expected, atol=1e-3):
    """Every voxel of ``actual`` sits on a voxel centre of ``expected`` holding the same value:
    compares volumes independently of voxel order (readers may reorder slices, e.g. DICOM by
    position, Slicer to a right-handed grid)."""
    assert sorted(actual.shape_kji) == sorted(expected.shape_kji)
    k, j, i = np.indices(actual.shape_kji)
    ras = actual.ijk_to_ras_points(np.stack([i, j, k], axis=-1).reshape(-1, 3))
    ijk = expected.ras_to_ijk(ras)
    index = np.rint(ijk).astype(int)
    assert np.abs(ijk - index).max() < atol
    np.testing.assert_array_equal(expected.array[index[:, 2], index[:, 1], index[:, 0]], actual.array.reshape(-1))


def slice_view_on(scene, volume_node, field_of_view=(250.0, 187.5)):
    """A 400 x 300 slice view (slicer-core) rotated to ``volume_node``'s plane, as a user's view."""
    import slicer

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    view = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    view.SetDimensions(400, 300, 1)
    view.SetFieldOfView(field_of_view[0], field_of_view[1], 1.0)
    view.SetOrientation("Axial")
    view.RotateToVolumePlane(volume_node)
    return view


def view_xy(view, ijk_to_ras, ijk):
    """The view (x, y) where voxel ``ijk`` of a volume with ``ijk_to_ras`` is shown."""
    xy_to_ras = np.array([[view.GetXYToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
    return (np.linalg.inv(xy_to_ras) @ (ijk_to_ras @ np.append(ijk, 1.0)))[:2]
