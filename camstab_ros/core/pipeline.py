"""A whole take through the stabiliser: validation -> smoother -> one output per input.

The same path serves `camstab smooth`, `camstab evaluate`, `camstab bench` and offline
bag smoothing. Invalid measurements (see `validation`) are not fed to the smoother; their
output rows hold the previous estimate (the next one for leading rows), so every input
pose keeps exactly one output pose at its own timestamp.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from camstab_ros.core.smoother import stack
from camstab_ros.core.validation import MeasurementValidator


@dataclass
class TakeResult:
    p: np.ndarray                 # (N, 3) one estimate per input row
    q: np.ndarray                 # (N, 4)
    dropped: dict                 # invalid input rows by reason
    dropped_rows: np.ndarray      # indices of the invalid input rows
    renormalized: int             # non-unit quaternions renormalised
    stats: dict                   # the smoother's counters (outliers, resets, coasted)
    us_per_update: np.ndarray = field(default=None)  # per-call cost when timed


def stabilize_take(smoother, t, p, q, timed=False, progress=None):
    """Validate and smooth a take; raises ValueError when no input row is valid.

    timed: run `update()` pose by pose and record each call's cost in microseconds
    (offline methods are timed as one `smooth()` call divided by the pose count).
    progress: optional wrapper for the row iterator (e.g. a tqdm progress bar).
    """
    t = np.asarray(t, dtype=float)
    validator = MeasurementValidator()
    valid = np.zeros(len(t), dtype=bool)
    q_unit = np.zeros((len(t), 4))
    for i in range(len(t)):
        reason, unit = validator.check(t[i], p[i], q[i])
        if reason is None:
            valid[i], q_unit[i] = True, unit
    if not valid.any():
        raise ValueError('no valid pose in the input: '
                         + ', '.join(f'{n} {r}' for r, n in validator.dropped.items()))
    tv, pv, qv = t[valid], np.asarray(p, dtype=float)[valid], q_unit[valid]
    smoother.reset()
    costs = None
    if timed and smoother.causal:
        rows = zip(tv, pv, qv)
        estimates, costs = [], np.empty(len(tv))
        for i, row in enumerate(progress(rows) if progress else rows):
            start = time.perf_counter()
            estimate = smoother.update(*row)
            costs[i] = (time.perf_counter() - start) * 1e6
            if estimate is not None:
                estimates.append(estimate)
        estimates += smoother.flush()
        _, out_p, out_q = stack(estimates)
    else:
        start = time.perf_counter()
        _, out_p, out_q = smoother.smooth(tv, pv, qv, progress=progress)
        if timed:
            costs = np.full(len(tv), (time.perf_counter() - start) * 1e6 / len(tv))
    if len(out_p) != len(tv):
        raise RuntimeError(f'{smoother.name} returned {len(out_p)} estimates '
                           f'for {len(tv)} measurements')
    # Invalid rows hold the estimate of the nearest earlier valid row (later, if none).
    source = np.maximum.accumulate(np.where(valid, np.arange(len(t)), -1))
    source[source < 0] = np.argmax(valid)
    index_in_valid = np.cumsum(valid) - 1
    rows = index_in_valid[source]
    return TakeResult(out_p[rows], out_q[rows], dict(validator.dropped),
                      np.flatnonzero(~valid), validator.renormalized,
                      smoother.stats.as_dict(), costs)
