"""PNG snapshots of a result: the three orthogonal slices through a point, shown as Slicer does.

Slices are shown in radiological convention (patient right on the screen's left; anterior up in
axial views, superior up in coronal and sagittal views) with square millimetre pixels, so a
thick-slice CT does not look squashed. Oblique volumes are shown along their closest RAS axes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

PREDICTION_RGB = (255, 140, 30)
REFERENCE_RGB = (60, 220, 90)
SEED_RGB = (255, 230, 0)


def _ras_permutation(ijk_to_ras: np.ndarray):
    """For each RAS axis: the IJK axis closest to it and whether that axis runs backwards."""
    directions = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    ijk_for_ras = [int(np.argmax(np.abs(directions[r]))) for r in range(3)]
    if len(set(ijk_for_ras)) != 3:  # strongly oblique: fall back to IJK order
        ijk_for_ras = [0, 1, 2]
    flips = [directions[r, ijk_for_ras[r]] < 0 for r in range(3)]
    return ijk_for_ras, flips


def to_ras_order(array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> np.ndarray:
    """Reorder a KJI array to [R, A, S] indexing, increasing toward Right, Anterior, Superior."""
    ijk_for_ras, flips = _ras_permutation(ijk_to_ras)
    ijk = np.transpose(array_kji, (2, 1, 0))
    out = np.transpose(ijk, ijk_for_ras)
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=axis)
    return out


def orthogonal_views(image_u8, layers, ijk_to_ras, point_ijk, box_ijk=None, height: int = 320) -> Image.Image:
    """Axial, coronal and sagittal views through ``point_ijk`` side by side.

    ``layers``: list of (mask KJI, RGB, filled) drawn over the image; ``box_ijk``: two corners of
    the seed box, drawn on the view whose plane contains it."""
    ijk_for_ras, flips = _ras_permutation(ijk_to_ras)
    spacing_ras = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)[ijk_for_ras]
    shape_ras = np.array(image_u8.shape[::-1])[ijk_for_ras]

    def to_ras_index(ijk):
        index = np.asarray(ijk, dtype=float)[ijk_for_ras]
        return np.where(flips, shape_ras - 1 - index, index)

    volume = to_ras_order(image_u8, ijk_to_ras)
    overlays = [(to_ras_order(mask, ijk_to_ras), rgb, filled) for mask, rgb, filled in layers]
    centre = np.rint(to_ras_index(point_ijk)).astype(int)
    boxes = None if box_ijk is None else np.array([to_ras_index(c) for c in box_ijk])
    # view: (fixed RAS axis, RAS axis along screen x, RAS axis along screen y, flip x, flip y)
    views = [(2, 0, 1, True, True), (1, 0, 2, True, True), (0, 1, 2, False, True)]
    panels = []
    for fixed, x_axis, y_axis, flip_x, flip_y in views:
        def plane(array):
            index = [slice(None)] * 3
            index[fixed] = int(np.clip(centre[fixed], 0, array.shape[fixed] - 1))
            frame = array[tuple(index)]  # remaining axes in increasing order
            frame = frame.T if x_axis > y_axis else frame  # -> (x, y)
            frame = frame.T  # -> rows = y, cols = x
            if flip_x:
                frame = frame[:, ::-1]
            if flip_y:
                frame = frame[::-1, :]
            return frame

        rgb = np.repeat(plane(volume)[..., None], 3, axis=2).astype(np.float32)
        for mask, colour, filled in overlays:
            region = plane(mask) > 0
            edge = region & ~_eroded(region)
            if filled:
                rgb[region] = 0.6 * rgb[region] + 0.4 * np.array(colour)
            rgb[edge] = colour
        panel = Image.fromarray(rgb.astype(np.uint8))
        # square millimetres: scale each screen axis by its spacing
        width_mm = panel.width * spacing_ras[x_axis]
        height_mm = panel.height * spacing_ras[y_axis]
        size = (max(1, int(round(height * width_mm / height_mm))), height)
        panel = panel.resize(size, Image.NEAREST)
        if boxes is not None and np.allclose(boxes[0, fixed], boxes[1, fixed]):
            draw = ImageDraw.Draw(panel)
            xs = _screen(boxes[:, x_axis], shape_ras[x_axis], flip_x, size[0])
            ys = _screen(boxes[:, y_axis], shape_ras[y_axis], flip_y, size[1])
            draw.rectangle([min(xs), min(ys), max(xs), max(ys)], outline=SEED_RGB, width=2)
        panels.append(panel)
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), height), (0, 0, 0))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + 8
    return canvas


def _screen(indices, length, flip, pixels):
    indices = np.asarray(indices, dtype=float)
    if flip:
        indices = length - 1 - indices
    return (indices + 0.5) * pixels / length


def _eroded(region: np.ndarray) -> np.ndarray:
    padded = np.pad(region, 1)
    return (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
