"""The cohort manifest: a CSV file with one case a row, read and checked before any work starts.

Columns (header names, any order; empty cells mean "not given"):

    image             volume file or DICOM series folder (required)
    case              name of the case and of its output ``<case>.seg.nrrd`` (default: the image's name)
    point, negative   RAS points ``R,A,S``, several separated by ``;`` (as `memseg segment --point`)
    box               two opposite RAS corners ``R,A,S,R,A,S`` on one slice
    axis              I, J or K: the slice axis of the prompt (default: from the box or the seed_labelmap, else K)
    seed_labelmap     a labelmap on the image's grid marking the object on one slice (instead of points/box)
    model             checkpoint name (default medsam-lite)
    preset, axes, threshold, and any field of `PropagationOptions` / `SpeedOptions` (fusion, memory,
    absent_slices, crop, input_size...): the options of `segment_volume`, as columns or in
    options           a JSON object with the same names
    segment_name      name of the segment in the output
    reference         a labelmap or .seg.nrrd on the image's grid to score the result against
    reference_segment the segment of a .seg.nrrd reference (needed when it holds several)
    seed_segment      likewise for a .seg.nrrd seed_labelmap

Relative paths are relative to the manifest's folder. Every problem of every row is collected
and reported at once, each with its line number, so a cohort is fixed in one pass.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import re
from typing import Dict, List, Optional, Tuple

from ..core.metrics import check_threshold
from ..errors import MemSegError
from ..runtime.checkpoints import DEFAULT_MODEL, VOLUME_ENGINES, get_checkpoint
from ..volume3d.segment import PropagationOptions, SpeedOptions


class ManifestError(MemSegError, ValueError):
    """The manifest cannot be run as written; the message names each row and column at fault."""


PROPAGATION_FIELDS = {field.name: field.type for field in dataclasses.fields(PropagationOptions)}
SPEED_FIELDS = {field.name: field.type for field in dataclasses.fields(SpeedOptions)}
# segment_volume's own keyword options, then those it takes through the two option classes
OPTION_TYPES = {"preset": "str", "axes": "int", "threshold": "float", **PROPAGATION_FIELDS, **SPEED_FIELDS}
COLUMNS = ("case", "image", "point", "negative", "box", "axis", "seed_labelmap", "seed_segment", "model", "options",
           "segment_name", "reference", "reference_segment") + tuple(OPTION_TYPES)

_CASE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the manifest, checked; paths absolute. Coordinates stay RAS: they become IJK
    only against the volume, where the case runs."""

    row: int  # line of the manifest file (the header is line 1)
    name: str
    image: pathlib.Path
    point: Tuple[Tuple[float, float, float], ...] = ()
    negative: Tuple[Tuple[float, float, float], ...] = ()
    box: Optional[Tuple[Tuple[float, float, float], Tuple[float, float, float]]] = None
    axis: Optional[str] = None
    seed_labelmap: Optional[pathlib.Path] = None
    seed_segment: Optional[str] = None
    model: str = DEFAULT_MODEL
    options: Tuple[Tuple[str, object], ...] = ()  # (name, value) pairs of OPTION_TYPES, sorted
    segment_name: str = "MemSeg"
    reference: Optional[pathlib.Path] = None
    reference_segment: Optional[str] = None

    @property
    def output_name(self) -> str:
        return f"{self.name}.seg.nrrd"

    def inputs(self) -> List[pathlib.Path]:
        """The files the case reads: an output must never be one of them."""
        return [path for path in (self.image, self.seed_labelmap, self.reference) if path is not None]

    def segment_volume_options(self) -> Dict[str, object]:
        """Keyword arguments of `segment_volume` besides the volume and the prompt."""
        options = dict(self.options)
        propagation = {name: options.pop(name) for name in list(options) if name in PROPAGATION_FIELDS}
        speed = {name: options.pop(name) for name in list(options) if name in SPEED_FIELDS}
        return {"model": self.model, **options, "propagation": PropagationOptions(**propagation),
                "speed": SpeedOptions(**speed)}


def read_manifest(path) -> List[Case]:
    """The manifest's cases, or `ManifestError` listing every problem found."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise ManifestError(f"manifest {path} {'is a folder' if path.is_dir() else 'does not exist'}: "
                            "give a CSV file with one case a row")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:  # utf-8-sig: spreadsheets add a BOM
            reader = csv.DictReader(stream)
            header = [name.strip() for name in reader.fieldnames or []]
            rows = [(reader.line_num, row) for row in reader]
    except (UnicodeDecodeError, csv.Error) as error:
        raise ManifestError(f"manifest {path} is not a readable CSV file: {error}") from None
    _check_header(path, header)
    problems, cases = [], []
    for line, row in rows:
        cells = {(name or "").strip(): (value or "").strip() for name, value in row.items() if name is not None}
        if None in row:  # more cells than the header has columns
            problems.append(f"line {line}: {len(row[None])} cell(s) beyond the header's {len(header)} columns")
            continue
        if not any(cells.values()):
            continue  # blank lines in a spreadsheet export
        row_problems = []
        case = _case(line, cells, path.parent.absolute(), row_problems)
        problems += [f"line {line}: {problem}" for problem in row_problems]
        if case is not None and not row_problems:
            cases.append(case)
    problems += _duplicate_names(cases)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ManifestError(f"manifest {path.name}: " + "; ".join(shown))
    if not cases:
        raise ManifestError(f"manifest {path.name} has no cases: add one row per image below the header")
    return cases


def _check_header(path: pathlib.Path, header: List[str]) -> None:
    if not header:
        raise ManifestError(f"manifest {path.name} is empty: the first line names the columns, e.g. image,box,reference")
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise ManifestError(f"manifest {path.name}: unknown column(s) {', '.join(repr(n) for n in unknown)}; "
                            f"known columns: {', '.join(COLUMNS)}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ManifestError(f"manifest {path.name}: column(s) {', '.join(repeated)} appear more than once")
    if "image" not in header:
        raise ManifestError(f"manifest {path.name} has no 'image' column: each row needs the image to segment")


def _case(line: int, cells: Dict[str, str], folder: pathlib.Path, problems: List[str]) -> Optional[Case]:
    image = _path(cells, "image", folder, problems, required=True)
    seed = _path(cells, "seed_labelmap", folder, problems)
    reference = _path(cells, "reference", folder, problems)
    point = _points(cells.get("point", ""), "point", problems)
    negative = _points(cells.get("negative", ""), "negative", problems)
    box = _box(cells.get("box", ""), problems)
    axis = cells.get("axis", "").upper() or None
    if axis is not None and axis not in ("I", "J", "K"):
        problems.append(f"axis must be I, J or K, got {cells['axis']!r}")
    if not any(cells.get(column) for column in ("seed_labelmap", "point", "box")):
        problems.append("no prompt: give point and/or box (RAS), or a seed_labelmap")
    if cells.get("seed_labelmap") and any(cells.get(column) for column in ("point", "negative", "box")):
        problems.append("give either a seed_labelmap or points/box, not both")
    model = cells.get("model") or DEFAULT_MODEL
    try:
        checkpoint = get_checkpoint(model)
        if checkpoint.engine not in VOLUME_ENGINES:
            problems.append(f"model {model} is a {checkpoint.engine} model, not a 3D segmenter")
    except MemSegError as error:
        problems.append(str(error))
    options = _options(cells, problems)
    name = cells.get("case") or (image.name.split(".")[0] if image is not None else "")
    if cells.get("case") and _CASE_NAME.search(name):
        problems.append(f"case name {name!r} may hold only letters, digits, '.', '_' and '-' (it names the output file)")
    name = _CASE_NAME.sub("_", name) or f"line{line}"
    if image is None or problems:
        return None
    return Case(row=line, name=name, image=image, point=point, negative=negative, box=box, axis=axis, seed_labelmap=seed,
                seed_segment=cells.get("seed_segment") or None, model=model, options=options,
                segment_name=cells.get("segment_name") or "MemSeg", reference=reference,
                reference_segment=cells.get("reference_segment") or None)


def _path(cells, column: str, folder: pathlib.Path, problems: List[str], required: bool = False):
    text = cells.get(column, "")
    if not text:
        if required:
            problems.append(f"{column} is empty")
        return None
    path = pathlib.Path(text).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.exists():
        problems.append(f"{column} {text} does not exist" + (f" (looked in {path.parent})" if path != pathlib.Path(text) else ""))
        return None
    return path


def _numbers(text: str, count: int, what: str, problems: List[str]):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        problems.append(f"{what} needs {count} comma-separated numbers, got {text!r}")
        return None
    return values


def _points(text: str, column: str, problems: List[str]) -> tuple:
    points = [_numbers(part.strip(), 3, f"{column} (R,A,S)", problems) for part in text.split(";") if part.strip()]
    return tuple(p for p in points if p is not None)


def _box(text: str, problems: List[str]):
    if not text:
        return None
    values = _numbers(text, 6, "box (R,A,S,R,A,S: two opposite corners)", problems)
    return None if values is None else (values[:3], values[3:])


def _options(cells: Dict[str, str], problems: List[str]) -> tuple:
    """Option columns and the options JSON, each value checked against its type."""
    given = {name: cells[name] for name in OPTION_TYPES if cells.get(name)}
    if cells.get("options"):
        try:
            extra = json.loads(cells["options"])
        except json.JSONDecodeError as error:
            problems.append(f"options is not valid JSON ({error.msg} at character {error.pos}): {cells['options']!r}")
            extra = {}
        if not isinstance(extra, dict):
            problems.append(f"options must be a JSON object such as {{\"axes\": 1}}, got {cells['options']!r}")
            extra = {}
        for name, value in extra.items():
            if name not in OPTION_TYPES:
                problems.append(f"options: unknown option {name!r}; known: {', '.join(OPTION_TYPES)}")
            elif name in given:
                problems.append(f"option {name} is given both as a column and in options")
            else:
                given[name] = value
    options = {}
    for name, value in given.items():
        parsed = _typed(value, OPTION_TYPES[name])
        if parsed is _INVALID:
            problems.append(f"{name} must be {_TYPE_WORDS[_base_type(OPTION_TYPES[name])]}, got {value!r}")
        else:
            options[name] = parsed
    if "threshold" in options:
        try:
            check_threshold(options["threshold"])
        except ValueError as error:
            problems.append(str(error))
    if options.get("axes", 3) not in (1, 3):
        problems.append(f"axes must be 1 or 3, got {options['axes']}")
    return tuple(sorted(options.items()))


_INVALID = object()
_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a name"}


def _base_type(annotation) -> str:
    text = str(annotation)
    return next((name for name in ("bool", "int", "float") if name in text), "str")


def _typed(value, annotation):
    """``value`` (a cell's text or a JSON value) as the option's type, or `_INVALID`."""
    kind = _base_type(annotation)
    if isinstance(value, str):
        text = value.strip()
        if kind == "bool":
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower(), _INVALID)
        if kind == "str":
            return text
        try:
            number = float(text)
        except ValueError:
            return _INVALID
    elif isinstance(value, bool):
        return value if kind == "bool" else _INVALID
    elif isinstance(value, (int, float)):
        number = value
    else:
        return _INVALID
    if kind == "int":
        return int(number) if float(number).is_integer() else _INVALID
    return float(number) if kind == "float" else _INVALID


def _duplicate_names(cases: List[Case]) -> List[str]:
    lines: Dict[str, List[int]] = {}
    for case in cases:
        lines.setdefault(case.name.lower(), []).append(case.row)
    return [f"lines {', '.join(map(str, rows))}: the same case name {name!r} (one output each): set a distinct 'case'"
            for name, rows in lines.items() if len(rows) > 1]
