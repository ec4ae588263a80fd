"""
The tracker-noise meter: an online estimate of a tracker's noise from its stream alone.

Method (chosen by measurement, docs/design/noise_meter.md): per axis of position and of
the accumulated body-frame rotation, the 4th divided difference of the last five samples,
scaled to unit gain for white noise. It cancels any motion up to cubic in time, and its
divided-difference weights handle jittery stamps and dropouts exactly. Its scale is
tracked by a log-domain running median (robust to spikes and to bursts of violent
motion, which are also gated out at 4 sigma unless they persist, so that a real rise of
the noise is followed). Against the candidates measured (3rd and 6th differences with a
winsorised variance, innovation covariance matching) it has the lowest motion floor per
cost: on a locked-off take it reads within +-25% of white noise from 0.02 to 5 mm at
25-240 Hz, and converges in about 0.3 s (p90 under 1.4 s).

What it reads is the white, high-frequency part of the noise: the part a causal filter
can remove without lag. Coloured noise that wanders over tens of frames lies in the band
of real camera motion and cannot be told from it during motion. At low rates, fast real
motion (8-12 Hz hand tremor at 25 Hz) adds a floor to the reading (0.67 mm / 0.06 deg on
simulated handheld at 25 Hz, 0.075 mm / 0.008 deg at 60 Hz, under 0.005 mm at 240 Hz).

The total noise, coloured part included, can only be seen while the camera holds still:
the meter also cuts the stream into HOLD_BLOCK_S blocks, and a block whose quarters' means
move slower than DESIGN.md's "still" (5 mm/s and 0.5 deg/s) is a hold: the median of
the robust spreads (median absolute deviations) of the last HOLD_BLOCKS holds is the
total reading (within -15% of AR(1) noise wandering over 0.5 s; exact on white noise). On
a take without holds there is no total reading.
"""
from collections import deque
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.metrics import STILL_SPEED_M_S, STILL_SPEED_RAD_S
import numpy as np


ORDER = 4
# Median of |N(0, sigma)| over sigma.
MAD_PER_SIGMA = 0.6745
# Samples whose median starts the scale.
STARTUP_SAMPLES = 5
# Time constant of the running median, in seconds of stream time.
TIME_CONSTANT_S = 2.0
# A difference beyond this many sigmas is a spike or a burst of motion (not counted)...
GATE_SIGMA = 4.0
# ...unless more than this share of the last second was gated: then the noise has risen.
MAX_GATED_SHARE = 0.3
# Hold blocks: length (s), parts whose means must move slower than the still speeds
# (m/s, rad/s), blocks kept.
HOLD_BLOCK_S = 4.0
HOLD_PARTS = 4
STILL_SPEED = (STILL_SPEED_M_S, STILL_SPEED_RAD_S)
HOLD_BLOCKS = 8
_GATE_MAD = GATE_SIGMA / MAD_PER_SIGMA


class NoiseMeter:
    """Per-axis white-noise sigma of position (m) and rotation (rad) from a pose stream."""

    def __init__(self):
        """Start empty: readings are None until STARTUP_SAMPLES differences were seen."""
        self.reset()

    def reset(self):
        """Forget everything, the reading included."""
        self.restart()
        self._startup = []          # the first |z| values, per axis
        self._mad = None            # the running median of |z|, per axis
        self._gated = 0.0           # running share of gated samples
        self._count = 0
        self._holds = deque(maxlen=HOLD_BLOCKS)  # (position, rotation) spreads of holds

    def restart(self):
        """Start the differences afresh (a gap or a clock step), keeping the reading."""
        self._window = deque(maxlen=ORDER + 1)  # the last (t, six values)
        self._angle = None          # accumulated body-frame rotation vector (rad)
        self._last_q = None
        self._block_t, self._block = [], []     # the samples of the current hold block

    @property
    def ready(self):
        """Tell whether the meter has a reading."""
        return self._mad is not None

    @property
    def position_sigma_m(self):
        """Return the position noise, mean of the three axes' sigmas in m (None: no reading)."""
        return self._group_sigma(0)

    @property
    def rotation_sigma_deg(self):
        """Return the rotation noise, mean of the three axes' sigmas in deg (None: no reading)."""
        sigma = self._group_sigma(3)
        return None if sigma is None else math.degrees(sigma)

    def total_sigmas(self):
        """Return the total (position m, rotation rad) sigmas seen on holds, or None."""
        if not self._holds:
            return None
        return tuple(float(np.median(column)) for column in zip(*self._holds))

    def sigmas(self):
        """Return (position sigma in m, rotation sigma in rad); call only when ready."""
        return self._group_sigma(0), self._group_sigma(3)

    def reading(self):
        """Return the reading as text, e.g. '0.48 mm / 0.021 deg' (or 'measuring')."""
        if not self.ready:
            return 'measuring'
        text = f'{self.position_sigma_m * 1e3:.3g} mm / {self.rotation_sigma_deg:.3g} deg'
        total = self.total_sigmas()
        if total is not None:
            text += (f' (on holds, coloured part included: {total[0] * 1e3:.3g} mm / '
                     f'{math.degrees(total[1]):.3g} deg)')
        return text

    def update(self, t, position, quaternion):
        """Take one valid measurement (stamps increasing, unit quaternion)."""
        # Python floats: scalar arithmetic on NumPy scalars costs several times as much.
        t = float(t)
        position, q = _floats(position), tuple(_floats(quaternion))
        if self._last_q is None:
            self._angle = (0.0, 0.0, 0.0)
        else:
            sx, sy, sz = quat.log_relative(self._last_q, q)
            ax, ay, az = self._angle
            self._angle = (ax + sx, ay + sy, az + sz)
        self._last_q = q
        window = self._window
        values = (*position, *self._angle)
        window.append((t, values))
        if len(window) == ORDER + 1:
            self._measure(window)
        self._block_t.append(t)
        self._block.append(values)
        if t - self._block_t[0] >= HOLD_BLOCK_S:
            self._hold_block(np.array(self._block_t), np.array(self._block))
            self._block_t, self._block = [], []

    def update_take(self, t, p, q):
        """
        Take a stretch of valid measurements (arrays t (N,), p (N, 3), unit q (N, 4)).

        The reading is update()'s pose by pose (equal to 1e-9, tested), the differences
        computed with NumPy for the offline fast path. The stretch starts afresh
        (restart()), as after a gap.
        """
        self.restart()
        t, p, q = (np.asarray(a, dtype=float) for a in (t, p, q))
        n = len(t)
        if n == 0:
            return
        relative = quat.multiply(quat.conjugate(q[:-1]), q[1:])
        relative[relative[:, 3] < 0.0] *= -1.0  # the shorter way, as log_relative
        angle = np.vstack([np.zeros((1, 3)), np.cumsum(quat.log_map(relative), axis=0)])
        values = np.hstack([p, angle])
        if n > ORDER:
            rows = np.arange(ORDER, n)[:, None] - ORDER + np.arange(ORDER + 1)  # (m, 5)
            times = t[rows]
            gaps = times[:, :, None] - times[:, None, :]
            gaps[:, np.arange(ORDER + 1), np.arange(ORDER + 1)] = 1.0
            weights = 1.0 / np.prod(gaps, axis=2)
            weights /= np.linalg.norm(weights, axis=1, keepdims=True)
            z = np.abs(np.einsum('mk,mka->ma', weights, values[rows]))
            for row, dt in zip(z.tolist(), np.diff(t)[ORDER - 1:].tolist()):
                self._track(row, dt)
        for k in range(max(n - ORDER - 1, 0), n):
            self._window.append((float(t[k]), tuple(values[k].tolist())))
        start = 0
        for stop in range(1, n + 1):
            if t[stop - 1] - t[start] >= HOLD_BLOCK_S:
                self._hold_block(t[start:stop], values[start:stop])
                start = stop
        self._block_t, self._block = t[start:].tolist(), [tuple(v) for v in values[start:]]
        self._last_q = tuple(q[-1].tolist())
        self._angle = tuple(angle[-1].tolist())

    def _hold_block(self, t, values):
        """Keep the spreads of a block of samples (t (n,), values (n, 6)) if it is a hold."""
        if len(t) < 2 * ORDER * HOLD_PARTS:
            return
        # Still: the means of its HOLD_PARTS parts move slower than STILL_SPEED.
        parts = np.array_split(np.arange(len(t)), HOLD_PARTS)
        means = np.array([values[rows].mean(axis=0) for rows in parts])
        times = np.array([t[rows].mean() for rows in parts])
        speeds = np.diff(means, axis=0) / np.diff(times)[:, None]
        for group in (0, 1):
            if np.max(np.linalg.norm(speeds[:, 3 * group:3 * group + 3], axis=1)) > \
                    STILL_SPEED[group]:
                return
        # The spread about the median, robust to spikes: median |deviation| / MAD_PER_SIGMA.
        spread = np.median(np.abs(values - np.median(values, axis=0)), axis=0) / MAD_PER_SIGMA
        self._holds.append((float(spread[:3].mean()), float(spread[3:].mean())))

    def _measure(self, window):
        times = [t for t, _ in window]
        w0, w1, w2, w3, w4 = _unit_weights(times)
        z = [abs(w0 * a + w1 * b + w2 * c + w3 * d + w4 * e)
             for a, b, c, d, e in zip(*[values for _, values in window])]
        self._track(z, times[-1] - times[-2])

    def _track(self, z, dt):
        """Move the running median towards the differences z (6) of one sample."""
        self._count += 1
        if self._mad is None:
            self._startup.append(z)
            if len(self._startup) >= STARTUP_SAMPLES:
                self._mad = [max(sorted(column)[len(column) // 2], 1e-300)
                             for column in zip(*self._startup)]
                self._startup = []
            return
        mads = self._mad
        gated = False
        for za, mad in zip(z, mads):
            if za > _GATE_MAD * mad:
                gated = True
                break
        self._gated += min(dt, 1.0) * ((1.0 if gated else 0.0) - self._gated)
        if gated and self._gated <= MAX_GATED_SHARE:
            return
        # The running median in the log domain: log(mad) moves by +-step.
        step = 0.5 * max(1.5 * dt / TIME_CONSTANT_S, 2.0 / self._count)
        up, down = math.exp(step), math.exp(-step)
        self._mad = [mad * (up if za > mad else down) for za, mad in zip(z, mads)]

    def _group_sigma(self, start):
        if self._mad is None:
            return None
        return sum(self._mad[start:start + 3]) / (3 * MAD_PER_SIGMA)


def _floats(values):
    """Return a sequence of numbers (an array, list or tuple) as a list of Python floats."""
    return values.tolist() if isinstance(values, np.ndarray) else [float(v) for v in values]


# Unit-gain divided-difference weights by the frame intervals (in microseconds): a tracker
# at a steady rate needs one computation, not one per pose.
_WEIGHTS = {}
_WEIGHTS_MAX = 4096


def _unit_weights(times):
    """Return the 4th divided-difference weights of times, scaled to unit white gain."""
    key = tuple(round((b - a) * 1e6) for a, b in zip(times, times[1:]))
    weights = _WEIGHTS.get(key)
    if weights is None:
        weights = []
        for i, ti in enumerate(times):
            product = 1.0
            for j, tj in enumerate(times):
                if j != i:
                    product *= ti - tj
            weights.append(1.0 / product)
        norm = math.sqrt(sum(w * w for w in weights))
        weights = [w / norm for w in weights]
        if len(_WEIGHTS) >= _WEIGHTS_MAX:
            _WEIGHTS.clear()
        _WEIGHTS[key] = weights
    return weights


# Below this rate a moving camera's motion leaks into the white reading (see the module
# docstring); the stabilisers then trust the reading less, by (rate / it)^2.
MOTION_FLOOR_RATE_HZ = 60.0


def trusted_sigma(sigma, interval_s, speed, group):
    """
    Return the white sigma a smoother may use.

    That is `sigma` while the camera holds still, or at MOTION_FLOOR_RATE_HZ and above;
    scaled down by (rate / MOTION_FLOOR_RATE_HZ)^2 while it moves faster than
    STILL_SPEED[group] (m/s or rad/s) at a lower rate.

    At 25 Hz the reading of a fast handheld move is its tremor and non-cubic motion, up to
    thirty times a fine tracker's noise (0.05 deg against 0.002 deg on the real TUM-VI
    takes), and a filter that believed it would smooth the real motion away. While the
    camera holds, the reading is the tracker's: a 25 Hz locked-off shot is smoothed as
    hard as a 60 Hz one.
    """
    if speed <= STILL_SPEED[group]:
        return sigma
    rate_ratio = 1.0 / (interval_s * MOTION_FLOOR_RATE_HZ)
    return sigma * min(rate_ratio, 1.0) ** 2


# The tracker noise the fixed parameters of `ema` and `one_euro` were tuned for (the
# simulation's default tracker): per-axis std of position (m) and orientation (rad).
REFERENCE_NOISE = (0.0005, math.radians(0.02))
NOISE_SCALING = ('auto', 'off')


class NoiseScale:
    """
    The measured tracker noise over REFERENCE_NOISE, per group.

    For smoothers whose parameters were set for the reference tracker (`noise_scaling`
    'auto').

    `update()` feeds the meter; `ratios()` returns (position, orientation) ratios, or
    None while the meter has no reading (the smoother then passes measurements through).
    """

    def __init__(self, meter=None):
        """Read `meter` (fed by its owner), else feed a meter of its own."""
        self.meter = meter or NoiseMeter()
        self._feeds = meter is None

    def update(self, t, position, quaternion):
        """Take one measurement (before `ratios()` for it)."""
        if self._feeds:
            self.meter.update(t, position, quaternion)

    def ratios(self, interval_s, speed_p, speed_r):
        """
        Return (trusted sigma / reference) for position and orientation, or None.

        interval_s: the frame interval; speed_p, speed_r: the camera's speeds (m/s, rad/s)
        as the smoother sees them (`trusted_sigma`).
        """
        if not self.meter.ready:
            return None
        sigma_p, sigma_r = self.meter.sigmas()
        return (max(trusted_sigma(sigma_p, interval_s, speed_p, 0), 1e-12) / REFERENCE_NOISE[0],
                max(trusted_sigma(sigma_r, interval_s, speed_r, 1), 1e-12) / REFERENCE_NOISE[1])
