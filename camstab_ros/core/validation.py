"""
Measurement validation: the gate between a raw pose and a smoother.

Every value a tracker cannot have is rejected and counted by reason, so nodes and commands
can report it, and nothing that passes can make a smoother raise. A non-unit (but finite,
non-zero) quaternion is renormalised and counted, not dropped; it is scaled by its largest
component before its norm is taken, so no norm overflows (components of 1e300 are a valid
direction).
"""
from collections import Counter
import math

import numpy as np


# Below this norm a quaternion carries no usable rotation.
MIN_QUATERNION_NORM = 1e-6
# Default workspace bound: no camera on a stage is 10 km from its origin on any axis.
DEFAULT_MAX_POSITION_M = 10000.0

REASONS = {
    'non_finite': 'NaN or infinite value in time, position or orientation',
    'zero_quaternion': 'zero-length quaternion',
    'out_of_workspace': 'a position component beyond the workspace bound (max_position_m)',
    'stamp_not_increasing': 'timestamp repeats or goes backwards',
    'stamp_in_future': 'timestamp too far ahead of the receiving clock (max_future_s)',
}
# The reasons that may be a clock step of the tracker rather than a bad pose.
CLOCK_REASONS = ('stamp_not_increasing', 'stamp_in_future')


def unit_quaternion(quaternion):
    """
    Return (unit quaternion (4,), norm) of a finite quaternion, without overflow.

    The norm may be inf for huge components; it only tells a zero or non-unit input.
    Plain float arithmetic: this runs once per pose, where NumPy's per-call overhead
    would cost ten times as much.
    """
    x, y, z, w = (float(c) for c in quaternion)
    scale = max(abs(x), abs(y), abs(z), abs(w))
    if scale == 0.0:
        return None, 0.0
    x, y, z, w = x / scale, y / scale, z / scale, w / scale
    length = math.sqrt(x * x + y * y + z * z + w * w)
    return np.array((x / length, y / length, z / length, w / length)), scale * length


class MeasurementValidator:
    """Check measurements in arrival order and count what is rejected, by reason."""

    def __init__(self, max_position_m=DEFAULT_MAX_POSITION_M):
        """Reject positions with a component beyond +-max_position_m."""
        self.max_position_m = max_position_m
        self.dropped = Counter()
        self.renormalized = 0
        self.last_t = None
        self._unit, self._norm = None, 0.0  # of the last quaternion reason() saw

    def reset(self):
        """Forget the last timestamp: the next stamp may be anything (a clock restart)."""
        self.last_t = None

    def reason(self, t, position, quaternion, future=False):
        """
        Return why a measurement is invalid, or None; nothing is counted.

        future: the caller found the stamp too far ahead of its own clock.
        """
        try:
            t = float(t)
            p = [float(c) for c in position]
            q = [float(c) for c in quaternion]
        except (TypeError, ValueError):
            return 'non_finite'
        if len(p) != 3 or len(q) != 4 or not all(map(math.isfinite, [t] + p + q)):
            return 'non_finite'
        if max(abs(c) for c in p) > self.max_position_m:
            return 'out_of_workspace'
        self._unit, self._norm = unit_quaternion(q)
        if self._norm < MIN_QUATERNION_NORM:
            return 'zero_quaternion'
        if future:
            return 'stamp_in_future'
        if self.last_t is not None and t <= self.last_t:
            return 'stamp_not_increasing'
        return None

    def count(self, reason):
        """Count one measurement dropped for reason; returns the reason."""
        self.dropped[reason] += 1
        return reason

    def accept(self, t):
        """Take the stamp of the measurement reason() just passed; return its unit q."""
        if abs(self._norm - 1.0) > 1e-6:
            self.renormalized += 1
        self.last_t = float(t)
        return self._unit

    def check(self, t, position, quaternion):
        """Validate, count and accept in one call: (reason or None, unit q or None)."""
        reason = self.reason(t, position, quaternion)
        if reason is not None:
            return self.count(reason), None
        return None, self.accept(t)


def drop_figures(total_key, counts):
    """
    Return the diagnostics values of drop counts {reason: n}.

    The total comes under total_key, then each reason as 'dropped.<reason>'.
    """
    return {total_key: sum(counts.values()),
            **{f'dropped.{reason}': n for reason, n in counts.items()}}
