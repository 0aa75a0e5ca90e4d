"""A finetune run's schedule: its epochs and learning-rate drop (torch-free, for ``runs status``).

The finetune stage (``pipeline.stages.finetune``) trains by it; ``joindet runs status`` reads it
without loading torch.
"""

from __future__ import annotations

import math

from joindet.pipeline.config import RunConfig

#: DETReg's low-data finetune schedules: fraction -> (epochs, lr drop epoch) (COCO 1 % and 10 %
#: scripts; the full set uses Deformable DETR's 50 epochs, drop at 40).
DETREG_SCHEDULE: dict[float, tuple[int, int]] = {0.01: (2000, 2000), 0.1: (400, 400), 1.0: (50, 40)}


def finetune_schedule(cfg: RunConfig) -> tuple[int, int]:
    """(epochs, lr drop epoch) of a finetune run.

    ``finetune.epochs > 0``: those epochs, the drop at ``finetune.lr_drop`` (0: no drop). Else
    DETReg's schedule for ``finetune.fraction`` (:data:`DETREG_SCHEDULE`; between its fractions
    the epochs are interpolated log-linearly in the fraction, keeping the drop at the same share
    of the epochs), times ``finetune.epoch_scale``, each rounded up (at least 1). The scaling rule
    for small presets: the tiny preset's 0.01 gives 20 epochs at 1 %, 4 at 10 %, 1 at 100 %.
    """
    ft = cfg.finetune
    if ft.epochs > 0:
        return ft.epochs, ft.lr_drop if ft.lr_drop > 0 else ft.epochs
    points = sorted(DETREG_SCHEDULE)
    f = min(max(ft.fraction, points[0]), points[-1])
    hi = next(p for p in points if p >= f)
    lo = max(p for p in points if p <= f)
    e_lo, d_lo = DETREG_SCHEDULE[lo]
    e_hi, d_hi = DETREG_SCHEDULE[hi]
    w = 0.0 if hi == lo else (math.log(f) - math.log(lo)) / (math.log(hi) - math.log(lo))
    epochs = math.exp((1 - w) * math.log(e_lo) + w * math.log(e_hi))
    share = (1 - w) * d_lo / e_lo + w * d_hi / e_hi
    total = max(1, math.ceil(epochs * ft.epoch_scale - 1e-9))
    drop = max(1, math.ceil(epochs * share * ft.epoch_scale - 1e-9)) if ft.lr_drop == 0 else ft.lr_drop
    return total, min(drop, total)
