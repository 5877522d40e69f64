"""The ``memseg`` command line.

    memseg segment CT.nrrd --box R,A,S,R,A,S --model medsam-lite --preset ct-chest -o lung.seg.nrrd
    memseg segment CT.nii.gz --point R,A,S --negative R,A,S --axes 3 --memory self-sorting -o mask.nii.gz
    memseg echo A4C.dcm --point 160,120 -o lv.seq.nrrd        (x,y[,frame] in pixels of a frame)
    memseg weights list | fetch NAME | verify [NAME] | delete NAME
    memseg demo -o demo-output/
    memseg batch cohort.csv -o results/ --workers 2    (a cohort on Ray; README: Cohort runs)
    memseg serve [--host 0.0.0.0]      (then: memseg segment ... --server http://HOST:8765)

For ``segment``, coordinates are RAS millimetres, as Slicer shows them; for ``echo`` (2D+t cine
loops) they are pixel columns and rows of a frame, with an optional frame index. Points on different slices of the prompt's
axis become separate seeds (conditioning slices), the way a user corrects a propagation. Progress goes to stderr; a bad input exits
with status 2 and a one-line reason.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import warnings

from ..errors import MemSegError
from ..runtime import checkpoints


def _triple_list(text: str, count: int, what: str):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{what} needs {count} comma-separated numbers, got {text!r}")
    return values


def _count(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return value
    return parse


def _point(text):
    return _triple_list(text, 3, "a point (R,A,S)")


def _box(text):
    values = _triple_list(text, 6, "a box (R,A,S,R,A,S: two opposite corners)")
    return [values[:3], values[3:]]


class StderrProgress:
    """tqdm bar on stderr driven by `progress(fraction, message)` callbacks."""

    def __init__(self, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, file=sys.stderr, disable=quiet, bar_format="{percentage:3.0f}%|{bar:24}| {elapsed} {desc}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.set_description_str(message, refresh=False)
        self.bar.update(int(fraction * 1000) - self.bar.n)

    def close(self):
        self.bar.close()


def _segment(args) -> int:
    from ..core.prompt import Prompt
    from ..core.volume import Volume
    from ..io.outputs import check_output_path, clean_text
    from ..io.segmentation_io import MASK_SUFFIXES, write_mask
    from ..serve.command import local_or_remote
    from ..volume3d.segment import PropagationOptions, SpeedOptions, segment_volume

    check_output_path(args.output, MASK_SUFFIXES, inputs=[args.input], overwrite=args.overwrite)
    clean_text(args.segment_name, "segment name")
    volume = Volume.read(args.input)
    prompts = Prompt.several_from_ras(volume, positive=args.point or [], negative=args.negative or [],
                                      box=args.box, axis=args.axis)
    propagation = PropagationOptions(fusion=args.fusion, memory=args.memory, shared_memory=args.shared_memory,
                                     absent_slices=args.absent_slices, crop=not args.no_crop,
                                     crop_frames=args.crop_frames, seed=args.seed)
    speed = SpeedOptions(input_size=args.input_size, encode_batch=args.encode_batch, compile_encoder=args.compile,
                         threads=args.threads, backend=args.backend, precision=args.precision)
    progress = StderrProgress(args.quiet)
    try:
        result = local_or_remote(args, segment_volume)(volume, prompts, model=args.model, device=args.device, preset=args.preset,
                                threshold=args.threshold, axes=args.axes, propagation=propagation, speed=speed,
                                progress=progress, cancel=threading.Event())
    finally:
        progress.close()
    write_mask(args.output, result.mask, result.ijk_to_ras, segment_name=args.segment_name)
    if not args.quiet:
        slices = ", ".join(f"{n} {axis}" for axis, n in result.visited_per_axis.items())
        print(f"{args.output}: {int(result.mask.sum())} voxels from {result.slices_visited} slices ({slices}; "
              f"{result.model} on {result.device}, {result.seconds:.1f} s)", file=sys.stderr)
    return 0


def _frame_point(text):
    """x,y or x,y,frame (pixels; frame index)."""
    values = _triple_list(text, 3, "a point (x,y,frame)") if text.count(",") == 2 else \
        _triple_list(text, 2, "a point (x,y or x,y,frame)")
    return values


def _frame_box(text):
    return _triple_list(text, 5, "a box (x0,y0,x1,y1,frame)") if text.count(",") == 4 else \
        _triple_list(text, 4, "a box (x0,y0,x1,y1 or x0,y0,x1,y1,frame)")


def _plane(text):
    axis, _, index = text.partition(",")
    if axis.upper() not in ("I", "J", "K") or not index.strip().lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"a plane is AXIS,INDEX with AXIS one of I, J, K; got {text!r}")
    return axis.upper(), int(index)


def _echo_prompt(args):
    """One frame's prompt from --point/--negative/--box (frames given in them, else --frame)."""
    from ..cine.segment import frame_prompt
    from ..errors import InvalidPromptError

    frame_of = lambda values, n: int(values[n]) if len(values) > n else args.frame  # noqa: E731
    positive, negative = args.point or [], args.negative or []
    frames = {frame_of(p, 2) for p in positive + negative} | ({frame_of(args.box, 4)} if args.box else set())
    if len(frames) > 1:
        raise InvalidPromptError(f"the prompt's points lie on frames {sorted(frames)}: put them all on one frame")
    frame = frames.pop() if frames else args.frame
    return frame_prompt(frame, positive=[p[:2] for p in positive], negative=[p[:2] for p in negative],
                        box=args.box[:4] if args.box else None)


def _echo(args) -> int:
    from ..cine.cine import Cine
    from ..cine.segment import segment_sequence
    from ..io.outputs import check_output_path, clean_text
    from ..serve.command import local_or_remote
    from ..volume3d.segment import SpeedOptions

    check_output_path(args.output, ECHO_OUTPUT_SUFFIXES, inputs=[args.input], overwrite=args.overwrite)
    clean_text(args.segment_name, "segment name")
    output = str(args.output).lower()
    cine = Cine.read(args.input, plane=args.plane)
    progress = StderrProgress(args.quiet)
    try:
        result = local_or_remote(args, segment_sequence)(cine, _echo_prompt(args), model=args.model, device=args.device,
                                  threshold=args.threshold, memory_frames=args.memory_frames,
                                  deep_update_every=args.deep_update_every, seed=args.seed, progress=progress,
                                  cancel=threading.Event(), speed=SpeedOptions(threads=args.threads, backend=args.backend,
                                                                               precision=args.precision))
    finally:
        progress.close()
    if output.endswith(".mrb"):
        try:
            from ..mrml.bundles import writeSequenceBundle
        except ImportError as error:
            raise MemSegError(f"writing .mrb files needs Slicer's MRML libraries (pip install slicer-core): {error}; "
                              "or write a .seq.nrrd mask sequence") from None
        writeSequenceBundle(cine, result, args.output, segmentName=args.segment_name)
    else:
        result.mask_cine().write(args.output)
    if not args.quiet:
        label = " (zero-shot: not trained on cine loops)" if result.zero_shot else ""
        print(f"{args.output}: {cine.n_frames} frames from frame {result.prompt_frame}, "
              f"{int(result.masks.sum())} pixels ({result.model}{label} on {result.device}, {result.seconds:.1f} s)",
              file=sys.stderr)
    return 0


ECHO_OUTPUT_SUFFIXES = (".seq.nrrd", ".seq.mrb", ".mrb")


def _weights(args) -> int:
    if args.action == "list":
        for checkpoint in checkpoints.list_checkpoints():
            state = checkpoints.checkpoint_state(checkpoint, check=True)  # hashed once: corrupt files show
            note = "" if checkpoint.sha256 else f" [{checkpoints.hash_source(checkpoint)}]"
            print(f"{checkpoint.name:24s} {checkpoint.image_size:5d} px  {state:9s} {checkpoint.description}{note}")
        print(f"weights folder: {checkpoints.weights_dir()}")
        return 0
    if args.action == "delete":
        if not args.names:
            raise MemSegError("name the checkpoint to delete, e.g. memseg weights delete medsam2-pretrain")
        for name in args.names:
            print(f"{name}: {'deleted' if checkpoints.delete_checkpoint(name) else 'was not downloaded'}")
        return 0
    names = args.names or ([c.name for c in checkpoints.list_checkpoints() if checkpoints.is_available(c)]
                           if args.action == "verify" else [])
    if not names:
        raise MemSegError("name the checkpoint to fetch, e.g. memseg weights fetch medsam2-pretrain")
    failed = []
    for name in names:  # every name is tried: one bad file does not hide the state of the others
        progress = StderrProgress(args.quiet)
        try:
            path = checkpoints.ensure_checkpoint(name, download=args.action == "fetch", progress=progress)
        except MemSegError as error:
            failed.append(name)
            print(f"memseg: {name}: FAILED: {error}", file=sys.stderr)
            continue
        finally:
            progress.close()
        print(f"{name}: OK ({path})")
    if failed:
        raise MemSegError(f"{len(failed)} of {len(names)} checkpoints failed: {', '.join(failed)}")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    progress = StderrProgress(args.quiet)
    try:
        report = run_demo(args.output, model=args.model, device=args.device, progress=progress)
    finally:
        progress.close()
    print(report.summary())
    return 0


def _batch(args) -> int:
    from ..batch import run_batch
    from ..batch.summary import SUMMARY_CSV

    try:
        report = run_batch(args.manifest, args.output, address=args.address, workers=args.workers,
                           gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                           device=args.device, quiet=args.quiet)
    except (KeyboardInterrupt, _Terminated) as stop:
        print(f"memseg: interrupted: running cases cancelled, finished outputs kept; summary so far in "
              f"{args.output}/{SUMMARY_CSV}", file=sys.stderr)
        return 143 if isinstance(stop, _Terminated) else 130
    print(report.summary(), file=sys.stderr)
    return 1 if report.counts["failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    from ..serve.command import add_remote_arguments, add_serve_parser
    from ..training.command import add_train_memsam_parser

    parser = argparse.ArgumentParser(prog="memseg", description="One-prompt 3D and 2D+t segmentation (MedSAM-2, LiteMedSAM, MemSAM).")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_segment_parser(commands)
    _add_echo_parser(commands)
    for name in ("segment", "echo"):
        add_remote_arguments(commands.choices[name])
    add_train_memsam_parser(commands)
    _add_weights_parser(commands)
    _add_demo_parser(commands)
    _add_batch_parser(commands)
    add_serve_parser(commands)
    return parser


def _add_segment_parser(subparsers) -> None:
    """`memseg segment`: a volume from a seed prompt (RAS coordinates)."""
    from ..core.intensity import PRESET_NAMES
    from ..engines.base import DEFAULT_MEMORY, MEMORY_POLICIES
    from ..runtime.checkpoints import DEFAULT_MODEL
    from ..volume3d.fusion import DEFAULT_FUSION, FUSION_MODES

    segment = subparsers.add_parser("segment", help="segment a volume from a seed prompt")
    segment.add_argument("input", help="volume file (.nrrd, .nii, .nii.gz, .mha) or DICOM series folder")
    segment.add_argument("-o", "--output", required=True, help="output .seg.nrrd, or .nii.gz/.nrrd labelmap")
    segment.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    segment.add_argument("--point", type=_point, action="append", metavar="R,A,S", help="positive point (repeatable)")
    segment.add_argument("--negative", type=_point, action="append", metavar="R,A,S", help="negative point (repeatable)")
    segment.add_argument("--box", type=_box, metavar="R,A,S,R,A,S", help="box: two opposite corners on one slice")
    segment.add_argument("--axis", choices=["I", "J", "K"], help="slice axis of the prompt (default: from the box, else K)")
    segment.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint name (default {DEFAULT_MODEL}; see `memseg weights list`)")
    segment.add_argument("--preset", choices=PRESET_NAMES, help="intensity preset (default: mr percentile clipping)")
    segment.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    segment.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    segment.add_argument("--segment-name", default="MemSeg", help="segment name in a .seg.nrrd output")
    segment.add_argument("--axes", type=int, choices=[1, 3], default=3,
                         help="3: six orientations, fused (default); 1: the prompt's axis, both directions")
    segment.add_argument("--fusion", choices=FUSION_MODES, default=DEFAULT_FUSION,
                         help="how axes are combined: weighted (mean weighted by each slice's resolution and "
                              "the other axes' agreement; default), mean or vote")
    segment.add_argument("--memory", choices=MEMORY_POLICIES, default=DEFAULT_MEMORY,
                         help="MedSAM-2 memory: the self-sorting bank or stock SAM 2 memory")
    segment.add_argument("--shared-memory", action="store_true", help="one memory bank for all passes")
    segment.add_argument("--absent-slices", type=_count(0), default=None,
                         help="stop a direction after this many slices without the object "
                              "(0: never; default: the engine's, 3 for MedSAM-2, 1 for medsam-lite)")
    segment.add_argument("--no-crop", action="store_true", help="later axes visit every slice, not the object's extent")
    segment.add_argument("--crop-frames", action="store_true", help="later axes also crop each frame to the object")
    segment.add_argument("--seed", type=int, default=0, help="random seed of the memory bank's resampling")
    speed = segment.add_argument_group("speed (README: Speed)")
    speed.add_argument("--input-size", type=_count(16), help="run a SAM 2 model at this input size, e.g. 512 on a CPU")
    speed.add_argument("--encode-batch", type=_count(1), help="slices encoded at once (default 8 on CUDA, 1 on CPU)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the image encoder (slow first run)")
    _add_backend_arguments(speed, "medsam-lite's networks run")
    segment.set_defaults(run=_segment)


def _add_backend_arguments(group, what: str) -> None:
    """--threads, --backend, --precision: where and how ``what`` (e.g. "MemSAM's image encoder runs")."""
    from ..engines.backends import BACKENDS, DEFAULT_BACKEND, DEFAULT_PRECISION, PRECISIONS

    group.add_argument("--threads", type=_count(1), help="CPU threads for PyTorch")
    group.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                       help=f"where {what} (default auto: OpenVINO on a CPU when installed)")
    group.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                       help="fp32 (exact, default) or auto (the backend's own: bf16 where the CPU has it)")


def _add_echo_parser(subparsers) -> None:
    """`memseg echo`: a 2D+t cine loop from one prompted frame (pixel coordinates)."""
    echo = subparsers.add_parser("echo", help="segment a 2D+t cine loop (echocardiography) from one prompted frame")
    echo.add_argument("input", help="cine: .seq.nrrd, multi-frame DICOM, or a 3D NRRD/NIfTI with time last")
    echo.add_argument("-o", "--output", required=True,
                      help="OUT.seq.nrrd (a mask per frame), OUT.seq.mrb (Slicer segmentation sequence) or OUT.mrb "
                           "(Slicer scene: the cine and its segmentation sequence in one browser)")
    echo.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    echo.add_argument("--point", type=_frame_point, action="append", metavar="X,Y[,FRAME]",
                      help="positive point: pixel column, row (and frame; default --frame); repeatable")
    echo.add_argument("--negative", type=_frame_point, action="append", metavar="X,Y[,FRAME]", help="negative point")
    echo.add_argument("--box", type=_frame_box, metavar="X0,Y0,X1,Y1[,FRAME]", help="box around the structure")
    echo.add_argument("--frame", type=_count(0), default=0, help="frame of prompts given without one (default 0)")
    echo.add_argument("--plane", type=_plane, metavar="AXIS,INDEX", help="for 3D+t files: the plane to follow")
    echo.add_argument("--model", default="memsam",
                      help="memsam (weights folder's memsam.pth), a MemSAM checkpoint file, or a SAM 2 / "
                           "MedSAM-2 / medsam-lite name for zero-shot propagation")
    echo.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    echo.add_argument("--threshold", type=float, default=None, help="default 0.6 for MemSAM, 0.5 otherwise")
    echo.add_argument("--memory-frames", type=_count(1), default=None, help="MemSAM frames read from memory (default 16)")
    echo.add_argument("--deep-update-every", type=_count(1), default=None,
                      help="refresh MemSAM's sensory memory every k-th frame (default: the reference's seeded draws)")
    echo.add_argument("--seed", type=int, default=1234, help="seed of MemSAM's deep-update draws")
    echo.add_argument("--segment-name", default="MemSeg", help="segment name in a .seq.mrb output")
    _add_backend_arguments(echo.add_argument_group("speed (README: Speed)"), "MemSAM's image encoder runs")
    echo.set_defaults(run=_echo)


def _add_weights_parser(subparsers) -> None:
    """`memseg weights`: list, download, verify or delete checkpoints."""
    weights = subparsers.add_parser("weights", help="list, download, verify or delete model checkpoints")
    weights.add_argument("action", choices=["list", "fetch", "verify", "delete"])
    weights.add_argument("names", nargs="*", help="checkpoint names")
    weights.set_defaults(run=_weights)


def _add_demo_parser(subparsers) -> None:
    """`memseg demo`: the right lung of a real chest CT, scored."""
    demo = subparsers.add_parser("demo", help="segment the right lung of a real chest CT and score it")
    demo.add_argument("-o", "--output", default="memseg-demo", help="output folder (default memseg-demo)")
    demo.add_argument("--model", default=None, help="default: medsam2-pretrain if its weights are present, else medsam-lite")
    demo.add_argument("--device", default="auto")
    demo.set_defaults(run=_demo)


def _add_batch_parser(subparsers) -> None:
    """`memseg batch`: a cohort from a CSV manifest, on Ray (README: Cohort runs)."""
    batch = subparsers.add_parser("batch", help="segment a cohort listed in a CSV manifest, on Ray")
    batch.add_argument("manifest", help="CSV: one case a row (columns image, point/box or seed_labelmap, reference...)")
    batch.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder: CASE.seg.nrrd, summary.csv, summary.json")
    batch.add_argument("--address", default=None, metavar="auto|ray://HOST:PORT",
                       help="an existing Ray cluster: auto (the one this machine is part of) or ray://HOST:PORT; "
                            "default: a local Ray on this machine")
    batch.add_argument("--workers", type=_count(1), default=1, metavar="N", help="actors, each holding a loaded model (default 1)")
    batch.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs each worker reserves (e.g. 1 or 0.5)")
    batch.add_argument("--cpus-per-worker", type=_count(1), default=None, metavar="C",
                       help="CPU cores each worker reserves (default: locally the cores shared out, on a cluster 1)")
    batch.add_argument("--device", default="auto",
                       help="auto (the GPU a worker reserves with --gpus-per-worker; without one Ray hides the GPUs: "
                            "CPU), cuda or cpu")
    batch.set_defaults(run=_batch)


_COORDINATE_OPTIONS = ("--point", "--negative", "--box")  # RAS values may start with a minus


def _attach_negative_coordinates(argv):
    """``--box -120,10,-170,...`` -> ``--box=-120,...``: argparse would take the value for an option."""
    out = []
    for token in argv:
        if out and out[-1] in _COORDINATE_OPTIONS and re.match(r"^-[0-9.]", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every write in progress is undone as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"memseg: warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_negative_coordinates(sys.argv[1:] if argv is None else list(argv)))
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    previous_showwarning, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return args.run(args)
    except (MemSegError, ValueError, OSError) as error:
        print(f"memseg: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as stop:
        print("memseg: interrupted; no output was written or changed", file=sys.stderr)
        return 143 if isinstance(stop, _Terminated) else 130
    except Exception as error:  # a bug: still one line for the user, the details for a report
        print(f"memseg: internal error ({type(error).__name__}: {error}); nothing was written. Please report it "
              "with the command you ran", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous_showwarning
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)


if __name__ == "__main__":
    sys.exit(main())
