"""The ``memseg train-memsam`` subcommand: `add_train_memsam_parser` adds it to the ``memseg`` parser,
`run_train_memsam` runs it. Kept apart from the trainer so that building the parser imports no torch.
"""

from __future__ import annotations

import argparse
import sys

from .datasets import LAYOUTS

__all__ = ["add_train_memsam_parser", "run_train_memsam"]


def add_train_memsam_parser(subparsers) -> argparse.ArgumentParser:
    """The ``train-memsam`` subcommand on an argparse ``add_subparsers()`` object; sets ``run``."""
    parser = subparsers.add_parser(
        "train-memsam", help="train MemSAM on labelled echo loops (CAMUS, EchoNet-Dynamic or Slicer pairs)",
        description="Semi-supervised MemSAM training as in the paper: clips from the first labelled frame to the "
                    "last, one click on the first, loss on the labelled first/last frames (--semi, default) or on "
                    "every labelled frame (--full). Writes OUTDIR/memsam_best.pth and memsam_last.pth (official "
                    "MemSAM layout, each with a .sha256), the training state to resume from, and history.json.")
    parser.add_argument("data", help="training data folder")
    parser.add_argument("-o", "--output", required=True, help="output folder for checkpoints")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto", help="data layout (default: detected)")
    parser.add_argument("--validation", help="separate validation data folder (same layout)")
    parser.add_argument("--split", help='JSON file {"train": [...], "val": [...]} of patient or loop names')
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="fraction of patients held out for validation when there is no split (default 0.2)")
    parser.add_argument("--init", help="Meta SAM ViT-B weights (a path, or sam-vit-b to fetch them) or a MemSAM "
                                       "checkpoint to fine-tune; default: random weights (only useful for tests)")
    parser.add_argument("--epochs", type=int, default=100, help="total epochs (default 100, as the reference on CAMUS)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--clip-length", type=int, default=10, help="frames per clip (default 10)")
    supervision = parser.add_mutually_exclusive_group()
    supervision.add_argument("--semi", dest="semi", action="store_true", default=True,
                             help="loss on the clip's first and last (labelled) frames only (default)")
    supervision.add_argument("--full", dest="semi", action="store_false", help="loss on every labelled clip frame")
    parser.add_argument("--no-augment", action="store_true", help="no rotation/zoom/gamma/contrast augmentation")
    parser.add_argument("--steps-per-epoch", type=int, help="clips per epoch (default: one per training loop)")
    parser.add_argument("--camus-ed-es-only", action="store_true", help="CAMUS: keep only the ED and ES labels")
    parser.add_argument("--label-value", type=int, help="Slicer pairs: the label that is the target (default: any)")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUTDIR from its last epoch")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    parser.add_argument("--no-amp", action="store_true", help="full precision on CUDA too (default: bf16/fp16 autocast)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(run=run_train_memsam)
    return parser


def run_train_memsam(args) -> int:
    """Handler of ``memseg train-memsam``: progress on stderr, one line per epoch, a summary at the end."""
    import threading

    from ..app.cli import StderrProgress
    from .memsam_trainer import EpochRecord, train_memsam

    quiet = getattr(args, "quiet", False)
    progress = StderrProgress(quiet)

    def print_epoch(record: EpochRecord) -> None:
        if not quiet:
            dice = "" if record.val_dice is None else f", validation Dice {record.val_dice:.4f}"
            interior = "" if record.val_dice_interior is None else f" (interior frames {record.val_dice_interior:.4f})"
            progress.bar.write(f"epoch {record.epoch}: train loss {record.train_loss:.4f}{dice}{interior}, "
                               f"{record.steps} steps in {record.seconds:.0f} s", file=sys.stderr)

    try:
        result = train_memsam(
            args.data, args.output, layout=args.layout, validation=args.validation, split=args.split,
            val_fraction=args.val_fraction, init=args.init, resume=args.resume, epochs=args.epochs, lr=args.lr,
            clip_length=args.clip_length, semi=args.semi, augment=not args.no_augment,
            steps_per_epoch=args.steps_per_epoch, device=args.device, amp=not args.no_amp, seed=args.seed,
            camus_ed_es_only=args.camus_ed_es_only, label_value=args.label_value, progress=progress,
            cancel=threading.Event(), on_epoch=print_epoch)
    finally:
        progress.close()
    best = (f"best {result.best_checkpoint} (epoch {result.best_epoch}, Dice {result.best_score:.4f})"
            if result.best_checkpoint else "no validation loops, so no best checkpoint")
    print(f"{result.output}: {len(result.history)} epochs on {result.device} ({result.precision}); last "
          f"{result.last_checkpoint}; {best}")
    return 0
