"""Training MemSAM on labelled echo loops (``memseg train-memsam``).

* `datasets`: the neutral record `LabelledCine` and the CAMUS / EchoNet-Dynamic / Slicer readers;
* `clips`: clip sampling, clicks and augmentation as the reference's data loader;
* `losses`: the reference's BCE + Dice loss and the validation Dice;
* `checkpointing`: atomic checkpoint files (official MemSAM layout + ``.sha256``) and the resume state;
* `memsam_trainer`: `train_memsam`, `evaluate_memsam`, `build_training_model`;
* `command`: the ``train-memsam`` subcommand (`add_train_memsam_parser`, `run_train_memsam`).

Names are imported on first use, so that ``memseg --help`` does not import torch.
"""

import importlib

_EXPORTS = {
    "CineSource": "datasets",
    "LabelledCine": "datasets",
    "TrainingDataError": "datasets",
    "read_dataset": "datasets",
    "EpochRecord": "memsam_trainer",
    "TrainingCancelled": "memsam_trainer",
    "TrainingError": "memsam_trainer",
    "TrainingOptions": "memsam_trainer",
    "TrainingResult": "memsam_trainer",
    "ValidationScores": "memsam_trainer",
    "build_training_model": "memsam_trainer",
    "evaluate_memsam": "memsam_trainer",
    "split_sources": "memsam_trainer",
    "train_memsam": "memsam_trainer",
    "add_train_memsam_parser": "command",
    "run_train_memsam": "command",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
