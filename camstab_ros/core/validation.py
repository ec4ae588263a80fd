"""
Measurement validation: the gate between a raw pose and a smoother.

Every rejected measurement is counted by reason, so nodes and commands can report it.
A non-unit (but finite, non-zero) quaternion is renormalised and counted, not dropped.
"""
from collections import Counter

import numpy as np


# Below this norm a quaternion carries no usable rotation.
MIN_QUATERNION_NORM = 1e-6

REASONS = {
    'non_finite': 'NaN or infinite value in time, position or orientation',
    'zero_quaternion': 'zero-length quaternion',
    'stamp_not_increasing': 'timestamp repeats or goes backwards',
}


class MeasurementValidator:
    """Checks measurements in arrival order; `check()` returns (reason or None, unit q)."""

    def __init__(self):
        self.dropped = Counter()
        self.renormalized = 0
        self._last_t = None

    def reset(self):
        """Forget the last timestamp (after a smoother reset on a long gap)."""
        self._last_t = None

    def check(self, t, position, quaternion):
        position = np.asarray(position, dtype=float)
        quaternion = np.asarray(quaternion, dtype=float)
        reason = None
        if not (np.isfinite(t) and np.all(np.isfinite(position))
                and np.all(np.isfinite(quaternion))):
            reason = 'non_finite'
        else:
            norm = float(np.linalg.norm(quaternion))
            if norm < MIN_QUATERNION_NORM:
                reason = 'zero_quaternion'
            elif self._last_t is not None and t <= self._last_t:
                reason = 'stamp_not_increasing'
        if reason is not None:
            self.dropped[reason] += 1
            return reason, None
        if abs(norm - 1.0) > 1e-6:
            self.renormalized += 1
        self._last_t = t
        return None, quaternion / norm


def drop_figures(total_key, counts):
    """
    Return the diagnostics values of drop counts {reason: n}.

    The total comes under total_key, then each reason as 'dropped.<reason>'.
    """
    return {total_key: sum(counts.values()),
            **{f'dropped.{reason}': n for reason, n in counts.items()}}
