"""Training: the step (``step``: a pure loss function; ``literal``: the official structure, the baseline; ``module``:
either as the module DDP wraps), the loop (``loop``: ``train``, ``Trainer``), the optimizer
and learning-rate schedule (``optim``), the mixed-precision policy (``precision``) and the run log (``runlog``).

``python -m toco_fast.train`` is the command line (``toco_fast.cli.train``). Names resolve lazily.
"""
from toco_fast._lazy import export_names, lazy_exports

_EXPORTS = {
    "train": "loop",
    "Trainer": "loop",
    "TrainResult": "loop",
    "NonFiniteLossError": "loop",
    "train_step": "step",
    "literal_train_step": "literal",
    "TrainStepModule": "module",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = export_names(_EXPORTS)
