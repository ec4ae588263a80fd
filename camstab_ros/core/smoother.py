"""
The one smoother interface (methods are created by name in `methods`).

Every method (classical or learned) subclasses `Smoother`:
- `reset()` forgets all state;
- `update(t, position, quaternion)` takes one measurement and returns an `Estimate`, or
  None while a delayed method (fixed-lag, offline) has nothing to emit yet;
- `flush()` returns the estimates still held back at the end of a take;
- `smooth(t, p, q)` processes a whole take and equals feeding `update()` pose by pose
  followed by `flush()`.
Inputs are validated before they reach a smoother (see `validation`); a smoother only
renormalises the quaternion and keeps it in the hemisphere of the previous one.
"""
from dataclasses import dataclass
import math

from camstab_ros.core.params import coerce_all
import numpy as np


@dataclass
class Estimate:
    """A smoothed pose at time t (seconds); covariance is 6x6 over (x, y, z, rx, ry, rz)."""

    t: float
    position: np.ndarray
    quaternion: np.ndarray
    covariance: np.ndarray = None


@dataclass
class SmootherStats:
    """Events a smoother counts for diagnostics."""

    outliers: int = 0
    resets: int = 0
    coasted: int = 0

    def as_dict(self):
        return dict(self.__dict__)


class Smoother:
    """
    Base class: subclasses set `name`, `PARAMS` and implement `_reset` and `_update`.

    Capabilities the stabiliser and the tools read:
    - `causal`: estimates use no later measurement (else: offline only);
    - `batched`: `smooth()` is a vectorised fast path, not a loop over `update()`;
    - `fallback` / `model_status`: a learned method that could not load its model and
      runs `kalman` instead says so here.
    A method that uses the tracker's measured noise feeds its own `NoiseMeter`, unless the
    pipeline attaches its meter (`attach_noise_meter`), which it then reads and keeps over
    resets. The pipeline feeds that meter before each `update()`; `smooth()` feeds it
    itself, pose by pose (the pipeline restarts it first, as after a gap).
    """

    name = ''
    causal = True
    batched = False
    description = ''
    PARAMS = {}
    fallback = False
    model_status = 'no model (classical method)'
    noise_meter = None

    def __init__(self, **params):
        try:
            given = coerce_all(self.PARAMS, params)
        except ValueError as exc:
            raise type(exc)(f'{self.name}: {exc}') from None
        self.params = {key: spec.default for key, spec in self.PARAMS.items()}
        self.params.update(given)
        self.stats = SmootherStats()
        self._last_q = None
        self._reset()

    @property
    def delay_frames(self):
        """How many frames late the estimates come out (0 for causal filters)."""
        return 0

    def reset(self):
        self._last_q = None
        self._reset()

    def attach_noise_meter(self, meter):
        """Read the tracker's noise from `meter`, fed by its owner (the next take on)."""
        self.noise_meter = meter
        self.reset()

    def update(self, t, position, quaternion):
        # Scalar arithmetic on one 4-vector: several times cheaper than the array helpers
        # in `quaternion` on this per-pose hot path.
        q = np.asarray(quaternion, dtype=float)
        norm = math.sqrt(float(q @ q))
        if not norm > 1e-9 or not math.isfinite(norm):
            raise ValueError('zero-length or non-finite quaternion')
        q = q / norm
        if self._last_q is not None and float(q @ self._last_q) < 0.0:
            q = -q
        self._last_q = q
        return self._update(float(t), np.asarray(position, dtype=float), q)

    def flush(self):
        return []

    def smooth(self, t, p, q, progress=None):
        """
        Smooth a whole take: arrays t (N,), p (N, 3), q (N, 4) -> the same shapes.

        progress: optional wrapper for the row iterator (e.g. a tqdm progress bar). An
        attached noise meter is fed each row before its update().
        """
        rows = zip(t, p, q)
        if self.noise_meter is not None:
            rows = _feeding(self.noise_meter, rows)
        estimates = [self.update(*row) for row in (progress(rows) if progress else rows)]
        estimates = [e for e in estimates if e is not None]
        estimates += self.flush()
        return stack(estimates)

    def _reset(self):
        raise NotImplementedError

    def _update(self, t, position, quaternion):
        raise NotImplementedError


def _feeding(meter, rows):
    """Yield rows (t, position, quaternion), feeding each to meter first."""
    for row in rows:
        meter.update(*row)
        yield row


def stack(estimates):
    """Estimates -> arrays (t (N,), p (N, 3), q (N, 4))."""
    if not estimates:
        return np.zeros(0), np.zeros((0, 3)), np.zeros((0, 4))
    return (np.array([e.t for e in estimates]),
            np.array([e.position for e in estimates]),
            np.array([e.quaternion for e in estimates]))
