"""
Kalman-family smoothers: `kalman` (causal), `fixed_lag` (`delay_frames` late), `rts` (offline).

Model, discretised over each measurement's own interval (so 24-240 Hz and jittery stamps
are handled exactly) with filterpy's continuous white-noise Q:
- position: per axis [p, v] ('cv', white acceleration noise) or [p, v, a] ('ca', white
  jerk noise) of spectral density `process_noise`;
- orientation: the same model on a small rotation vector r in the body frame of a
  reference quaternion (error state: q = q_ref * exp(r)). After every step r is folded
  into q_ref and set to 0, so the filtered angle stays small and never wraps.
The three axes of a group (position, orientation) share F, Q and H, hence one n x n
covariance and one gain per group: states have shape (2 groups, n, 3 axes) and
covariances (2, n, n). Estimate.covariance is diagonal: per-axis variances of position
(m^2) and of the body-frame rotation error r (rad^2).

The tracker's noise: with `measurement_noise_m` / `_deg` 0 ('auto', the default) the
measurement noise R of a group is the noise meter's white reading (below 60 Hz, while the
camera moves, trusted less: noise_meter.trusted_sigma); until the meter has a reading the
filter restarts at every measurement (passes them through). The process noise is stated
for the reference tracker and scales with R / R_ref, so any tracker sees the same trade-off.

Robustness rules, applied to each measurement in this order:
1. The first measurement, or one after a gap longer than `dropout_timeout_s`, (re)starts
   the filter there (a restart after a gap counts in stats.resets). A shorter gap is
   bridged by predicting over it (stats.coasted counts intervals longer than 2.5 times the
   recent mean interval). Timestamps must increase (ValueError otherwise).
2. A group is out of gate when its innovation exceeds both `gate_sigma` Mahalanobis
   distances and `gate_motion_ratio` times the decaying peak of its recent innovations (a
   moving camera widens its own gate), or its distance from the prediction exceeds
   `reset_jump_m` / `reset_jump_deg`.
3. Up to `gate_max_consecutive` measurements in a row with a group out of gate go out as
   measured in that group (no worse than the raw input: a causal filter cannot tell a
   spike from a whip pan's first frame) while the group's state coasts. When the next
   measurement is back in the gate they were spikes (stats.outliers) and never touched the
   state; fixed_lag and rts, which have not emitted them yet, replace them by the state.
4. The next measurement still out of gate is a persistent change (a re-localisation jump,
   or motion the model did not expect, like a whip pan): each out-of-gate group restarts
   at it, its rate taken from this and the previous measurement (stats.resets), and the
   gate's envelope learns the jump.
fixed_lag and rts add a Rauch-Tung-Striebel backward pass to the same forward pass. It
stops at every restart (of either group), so a take is smoothed as independent segments
and nothing is smeared across a jump.
"""
from collections import deque
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.noise_meter import (MOTION_FLOOR_RATE_HZ, NoiseMeter, REFERENCE_NOISE,
                                          trusted_sigma)
from camstab_ros.core.params import ParamSpec
from camstab_ros.core.smoother import Estimate, Smoother, stack
from filterpy.common import Q_continuous_white_noise
import numpy as np


POS, ROT = 0, 1
MODEL_ORDER = {'cv': 2, 'ca': 3}
# Prior standard deviations of (rate, acceleration) when the filter (re)starts:
# position in m/s and m/s^2, orientation in rad/s and rad/s^2.
START_DERIVATIVE_STD = ((2.0, 20.0), (2.0, 20.0))
# An interval longer than GAP_FACTOR times the running mean interval is a bridged gap.
GAP_FACTOR = 2.5
MEAN_INTERVAL_RATE = 0.05
REFERENCE_VARIANCE = np.array(REFERENCE_NOISE) ** 2
# Smallest measurement variance (m^2, rad^2) taken from the noise meter.
UNMEASURED_VARIANCE = 1e-14
# Time constant of the decaying peak of recent innovations that widens the gate.
GATE_MEMORY_S = 0.5
# Frames per batch when the offline smoother computes its gains (bounds temporary memory).
GAIN_CHUNK = 65536

# Defaults of process_noise, rot_process_noise and maneuver_threshold:
# training/tune_classical.py (the training tracker matrix). The tuned base process noise is
# tiny: the adaptive process noise (maneuver_*) does the work during moves.
KALMAN_PARAMS = {
    'model': ParamSpec('cv', 'motion model per axis: constant velocity or constant '
                       'acceleration', choices=('cv', 'ca')),
    'process_noise': ParamSpec(
        4.462e-9, 'spectral density of the white noise driving position: acceleration (cv) '
        'or jerk (ca), for the reference tracker (0.5 mm), scaled with the measurement '
        'noise; scaled up during moves by the adaptive process noise',
        'm^2/s^3 (cv), m^2/s^5 (ca)', 1e-12, 1e12),
    'rot_process_noise': ParamSpec(
        7.582e-5, 'spectral density of the white noise driving orientation: angular '
        'acceleration (cv) or jerk (ca), for the reference tracker (0.02 deg), scaled with '
        'the measurement noise; scaled up during moves by the adaptive process noise',
        'rad^2/s^3 (cv), rad^2/s^5 (ca)', 1e-12, 1e12),
    'measurement_noise_m': ParamSpec(
        0.0, "tracker position noise, std per axis; 0 or 'auto': measured online from the "
        'stream (the noise meter)', 'm', 1e-7, 1.0, auto=True),
    'measurement_noise_deg': ParamSpec(
        0.0, "tracker orientation noise, std per axis; 0 or 'auto': measured online from "
        'the stream (the noise meter)', 'deg', 1e-6, 10.0, auto=True),
    'gate_sigma': ParamSpec(
        6.0, 'Mahalanobis distance of the innovation (3 degrees of freedom per group) '
        'beyond which a measurement may be an outlier', 'sigma', 1.0, 1e6),
    'gate_motion_ratio': ParamSpec(
        5.0, 'the gate is also never narrower than this multiple of the recent innovations '
        '(their decaying peak): a manoeuvre widens it, a spike in a hold stays outside',
        'x', 1.0, 1e6),
    'gate_max_consecutive': ParamSpec(
        1, 'out-of-gate measurements in a row passed through as measured while the filter '
        'coasts; a jump lasting longer restarts the filter there (back on the track '
        'sooner: they were spikes)', 'frames', 1, 1000),
    'reset_jump_m': ParamSpec(
        0.25, 'a jump from the predicted position beyond this is never smoothed: an outlier '
        'or, when it persists, a re-localisation', 'm', 1e-4, 1e3),
    'reset_jump_deg': ParamSpec(
        30.0, 'a jump from the predicted orientation beyond this is never smoothed',
        'deg', 1e-3, 180.0),
    'dropout_timeout_s': ParamSpec(
        0.5, 'a gap between measurements longer than this restarts the filter; shorter '
        'gaps are bridged by prediction', 's', 0.001, 3600.0),
    'maneuver_rate': ParamSpec(
        0.3, 'adaptive process noise: smoothing rate of the innovation variance that '
        'widens the filter during moves (0: fixed process noise)', '1/frame', 0.0, 1.0),
    'maneuver_threshold': ParamSpec(
        2.819, 'innovation variance, as a multiple of the predicted one, above which the '
        'filter widens', 'x', 1.0, 100.0),
    'maneuver_max_scale': ParamSpec(
        1e9, 'largest factor the adaptive process noise may reach', 'x', 1.0, 1e12),
}


class PoseKalmanFilter:
    """
    The 6-DoF forward filter shared by kalman, fixed_lag and rts.

    After `step()`: `x` (2, n, 3) holds [value, rate(, acceleration)] of position and of
    the orientation error (0 after folding), `P` (2, n, n) their shared per-axis
    covariances and `q` the filtered orientation (x, y, z, w tuple). For the backward pass
    it also keeps the step's transition `F`, predicted covariance `P_pred`, `increment`
    (filtered minus predicted state), `restarted` (per group: a new segment starts) and
    `passed` (per group: the measurement went out as measured while the state coasts).
    `F` is None after a full (re)start. `position` and `output_q` are the estimate to
    emit: the state, or the measurement of a group passed through. `innovation` (2, 3)
    is the measurement minus the prediction (position in the world frame, orientation in
    the body frame; 0 in a group that restarted or passed the measurement through),
    `gain` (2,) the value gain of each group and `variance` (2,) its measurement noise R
    (m^2, rad^2): what the learned `hybrid` reads. `spikes` > 0
    says that the last `spikes` frames before this one were spikes in `spike_groups`: a
    smoother that has not emitted them yet replaces them by the state.
    """

    def __init__(self, params, stats, meter=None):
        """
        Build the filter.

        meter: a NoiseMeter fed by its owner; without one the filter feeds its own (for
        the groups whose measurement noise is 'auto').
        """
        self.stats = stats
        n = self.n = MODEL_ORDER[params['model']]
        row, col = np.indices((n, n))
        lag = np.maximum(col - row, 0)
        factorial = np.array([math.factorial(k) for k in range(n)], dtype=float)
        # F(dt) = F1 * dt**lag and Q(dt) = Q(1) * dt**(2n - 1 - i - j): filterpy's matrices
        # rescaled per step (building them afresh costs ~10 us a call).
        self._f_coef = np.where(col >= row, 1.0 / factorial[lag], 0.0)
        self._f_pow = lag
        density = np.array([params['process_noise'], params['rot_process_noise']])
        self._q_coef = Q_continuous_white_noise(n, 1.0, 1.0)[None] * density[:, None, None]
        self._q_pow = 2 * n - 1 - row - col
        self._noise = MeasuredNoise(params, stats, meter)
        self._r = self._noise.variance  # R (2,), updated in place by the noise reading
        self._start_derivative_var = [[s * s for s in START_DERIVATIVE_STD[g][:n - 1]]
                                      for g in (POS, ROT)]
        self._motion_ratio2 = params['gate_motion_ratio'] ** 2
        self._gate2 = params['gate_sigma'] ** 2
        self._jump2 = (params['reset_jump_m'] ** 2, math.radians(params['reset_jump_deg']) ** 2)
        self._max_run = params['gate_max_consecutive']
        self._maneuver_rate = params['maneuver_rate']
        self._max_scale = params['maneuver_max_scale']
        self._threshold = params['maneuver_threshold']
        self.t = None

    @property
    def variance(self):
        """Return the measurement noise R (2,) in use: position m^2, orientation rad^2."""
        return self._r

    def transition(self, dt):
        """State transition matrix (n, n) over dt seconds; dt may be an array (..., 1, 1)."""
        return self._f_coef * dt ** self._f_pow

    def step(self, t, position, q):
        """
        Filter one measurement: t (s), position (3,), unit quaternion q (4,).

        q is in the hemisphere of the previous one.
        """
        dt = self._noise.advance(self.t, t, position, q, self._speeds)
        self.t = t
        if dt is None:
            self._start(position, q)
            return
        # dt ** k for every power in F and Q, taken from one list (dt ** self._f_pow and
        # dt ** self._q_pow to rounding, at under half the cost).
        powers = np.array([dt ** k for k in range(2 * self.n)])
        F = self._f_coef * powers[self._f_pow]
        x = F @ self.x
        # The process noise is set for the reference tracker and scales with the
        # measurement noise: the filter trades noise against motion alike for any tracker.
        Q = self._q_coef * (self._r / REFERENCE_VARIANCE)[:, None, None] * powers[self._q_pow]
        P_pred = F @ self.P @ F.T + Q
        q_meas = q.tolist()
        y = np.empty((2, 3))
        y[POS] = position - x[POS, 0]
        y[ROT] = quat.log_relative(self.q, q_meas)
        y[ROT] -= x[ROT, 0]
        (a, b, c), (d, e, f) = y.tolist()
        yy_pos, yy_rot = a * a + b * b + c * c, d * d + e * e + f * f
        undo = self._adapt(Q, P_pred, (yy_pos, yy_rot)) if self._maneuver_rate > 0.0 else None
        s = P_pred[:, 0, 0] + self._r
        gain = P_pred[:, :, 0] / s[:, None]
        s_pos, s_rot = s.tolist()
        # The envelope of recent innovations decays over GATE_MEMORY_S.
        decay = math.exp(-dt / GATE_MEMORY_S)
        level = [v * decay for v in self._level]
        out_pos = yy_pos > max(self._gate2 * s_pos, self._motion_ratio2 * level[POS]) \
            or yy_pos > self._jump2[POS]
        out_rot = yy_rot > max(self._gate2 * s_rot, self._motion_ratio2 * level[ROT]) \
            or yy_rot > self._jump2[ROT]
        anchor = [False, False]
        passed = [False, False]
        self.spikes = 0
        if out_pos or out_rot:
            if self._run < self._max_run:
                # A causal filter cannot tell a spike from the first frame of a whip pan
                # (at 25 Hz both are a jump of a degree or more; real takes have both): the
                # frame goes out as measured, no worse than the raw input, while the state
                # coasts on its track until the next measurement tells which it was.
                self._run += 1
                passed = [out_pos, out_rot]
                self._suspects = [a or b for a, b in zip(self._suspects, passed)]
            else:
                self._run = 0
                self._suspects = [False, False]
                self.stats.resets += 1
                anchor = [out_pos, out_rot]
            for group, out in ((POS, out_pos), (ROT, out_rot)):
                if out:
                    gain[group] = 0.0
                    if undo is not None:
                        self._undo_adapt(P_pred, undo, group)
        elif self._run:
            # The jump did not persist: the measurements passed through were spikes.
            self.stats.outliers += self._run
            self.spikes, self._run = self._run, 0
            self.spike_groups, self._suspects = self._suspects, [False, False]
        # The envelope takes every innovation but a suspect's: a jump that persisted was
        # motion, and the gate opens to it.
        for group, yy in ((POS, yy_pos), (ROT, yy_rot)):
            if not passed[group]:
                level[group] = max(level[group], yy)
        self._level = level
        increment = gain[:, :, None] * y[:, None, :]
        self.gain = gain[:, 0]
        x += increment
        P = P_pred - gain[:, :, None] * P_pred[:, None, 0, :]
        if anchor[POS]:
            self._anchor(x, P, POS, position, position - self._previous_position, dt)
        if anchor[ROT]:
            self._anchor(x, P, ROT, 0.0, quat.log_relative(self._previous_q, q_meas), dt)
            self.q = tuple(q_meas)
        else:
            self.q = quat.compose_exp(self.q, x[ROT, 0].tolist())
            x[ROT, 0] = 0.0
        self.x, self.P = x, P
        self.position = position.copy() if passed[POS] else x[POS, 0].copy()
        self.output_q = tuple(q_meas) if passed[ROT] else self.q
        self._previous_position, self._previous_q = position.copy(), q_meas
        self.F, self.P_pred, self.increment = F, P_pred, increment
        # A passed-through frame stands alone: no smoothing links it to its neighbours.
        self.restarted = (anchor[POS] or passed[POS], anchor[ROT] or passed[ROT])
        self.passed = (passed[POS], passed[ROT])
        for group in (POS, ROT):
            if self.restarted[group]:
                y[group] = 0.0
        self.innovation = y

    def _adapt(self, Q, P_pred, yy):
        """
        Apply the adaptive process noise (manoeuvre detection), before gating.

        A running mean of each group's innovation variance per axis is compared with what
        the model predicts; whatever exceeds `maneuver_threshold` times the prediction is
        added to this step's predicted variance (as a multiple of Q, so rate and
        acceleration open up consistently). Each step's contribution is capped at the gate,
        so one spike cannot widen the filter enough to pass it. Returns what `_undo_adapt`
        needs to take the step back for a group that turns out to be an outlier.
        """
        undo = []
        # Python floats: NumPy scalars cost several times as much in this arithmetic.
        predicted, r, q00 = P_pred[:, 0, 0].tolist(), self._r.tolist(), Q[:, 0, 0].tolist()
        for g in (POS, ROT):
            expected = predicted[g] + r[g]
            observed = min(yy[g] / 3.0, self._gate2 * expected)
            undo.append((self._activity[g], None))
            self._activity[g] += self._maneuver_rate * (observed - self._activity[g])
            deficit = self._activity[g] - self._threshold * expected
            if deficit > 0.0:
                widening = (min(1.0 + deficit / q00[g], self._max_scale) - 1.0) * Q[g]
                P_pred[g] += widening
                undo[g] = (undo[g][0], widening)
        return undo

    def _undo_adapt(self, P_pred, undo, group):
        activity, widening = undo[group]
        self._activity[group] = activity
        if widening is not None:
            P_pred[group] -= widening

    def _start(self, position, q):
        self.x = np.zeros((2, self.n, 3))
        self.x[POS, 0] = position
        self.P = self._start_covariance()
        self.q = tuple(q.tolist())
        self._previous_position, self._previous_q = position.copy(), self.q
        self.position, self.output_q = self.x[POS, 0].copy(), self.q
        self._level = [0.0, 0.0]
        self._suspects = [False, False]
        self.spikes = 0
        self.spike_groups = [False, False]
        self.F = self.P_pred = self.increment = None
        self.restarted = (True, True)
        self.passed = (False, False)
        self.innovation = np.zeros((2, 3))
        self.gain = np.ones(2)
        self._run = 0
        self._noise.mean_interval = None
        self._activity = self._r.tolist()

    def _anchor(self, x, P, group, value, change, dt):
        """
        Restart a group at its measurement `value` (two-point start).

        Its rate is `change` / dt from the previous measurement; its acceleration goes back
        to its prior.
        """
        r = self._r[group]
        x[group] = 0.0
        x[group, 0] = value
        x[group, 1] = np.asarray(change) / dt
        P[group] = self._start_covariance()[group]
        P[group, 0, 1] = P[group, 1, 0] = r / dt
        P[group, 1, 1] = 2.0 * r / dt ** 2

    def _start_covariance(self):
        """Prior covariances (2, n, n) of a (re)start at a measurement."""
        return np.stack([np.diag([self._r[g]] + self._start_derivative_var[g])
                         for g in (POS, ROT)])

    def _speeds(self):
        """Return the filter's speeds: position m/s, orientation rad/s."""
        return np.linalg.norm(self.x[:, 1], axis=1).tolist()


class MeasuredNoise:
    """
    A pose filter's measurement noise R per group, its restarts and the mean frame interval.

    `variance` (2,) is R (m^2, rad^2): the configured noise, or for a group whose noise is
    'auto' (0) the noise meter's white reading, trusted less while the camera moves under
    MOTION_FLOOR_RATE_HZ (`trusted_sigma`). `mean_interval` is the running mean frame
    interval (the filter sets it to None when it restarts); an interval longer than
    GAP_FACTOR times it is a bridged gap (stats.coasted). Shared by the Kalman family and
    `imm`.
    """

    def __init__(self, params, stats, meter=None):
        """Read `meter` (fed by its owner); without one, feed a meter of its own."""
        fixed = np.array([params['measurement_noise_m'],
                          math.radians(params['measurement_noise_deg'])]) ** 2
        self._auto = [bool(v == 0.0) for v in fixed]
        self._meter = (meter or NoiseMeter()) if any(self._auto) else None
        self._feeds_meter = meter is None
        self._timeout = params['dropout_timeout_s']
        self.variance = np.where(self._auto, UNMEASURED_VARIANCE, fixed)
        self.stats = stats
        self.mean_interval = None

    def advance(self, previous, t, position, q, speeds):
        """
        Take the measurement at t: the interval to filter over, or None to (re)start there.

        previous: the filter's last stamp (None at its first); speeds(): the filter's
        (position m/s, orientation rad/s) speeds. Feeds the meter if owned and sets R from
        its reading. None: the first measurement, one after a gap longer than
        dropout_timeout_s (counted in stats.resets), or the noise not yet measured (until
        then the filter restarts at every measurement: it passes them through). Raises
        ValueError unless t > previous.
        """
        if previous is not None and not t > previous:
            raise ValueError(f'timestamps must increase: {t!r} after {previous!r}')
        measured = self._read(previous, t, position, q, speeds)
        if previous is None or t - previous > self._timeout or not measured:
            if previous is not None and measured:
                self.stats.resets += 1
            return None
        dt = t - previous
        if self.mean_interval is None:
            self.mean_interval = dt
        elif dt > GAP_FACTOR * self.mean_interval:
            self.stats.coasted += 1
        else:
            self.mean_interval += MEAN_INTERVAL_RATE * (dt - self.mean_interval)
        return dt

    def _read(self, previous, t, position, q, speeds):
        """Feed the meter if owned and set R from its reading; False while it has none."""
        meter = self._meter
        if meter is None:
            return True
        if self._feeds_meter:
            feed_own_meter(meter, previous, t, position, q, self._timeout)
        if not meter.ready:
            return False
        sigma_p, sigma_r = meter.sigmas()
        interval = self.mean_interval
        if interval is not None and interval * MOTION_FLOOR_RATE_HZ > 1.0:
            speed_p, speed_r = speeds()
            sigma_p = trusted_sigma(sigma_p, interval, speed_p, POS)
            sigma_r = trusted_sigma(sigma_r, interval, speed_r, ROT)
        if self._auto[POS]:
            self.variance[POS] = max(sigma_p * sigma_p, UNMEASURED_VARIANCE)
        if self._auto[ROT]:
            self.variance[ROT] = max(sigma_r * sigma_r, UNMEASURED_VARIANCE)
        return True


def feed_own_meter(meter, previous, t, position, q, timeout):
    """Feed a filter's own noise meter, restarting it after a gap longer than timeout (s)."""
    if previous is not None and t - previous > timeout:
        meter.restart()
    meter.update(t, position, q)


def _covariance_6x6(P):
    """Estimate covariance over (x, y, z, rx, ry, rz) from the group covariances P (2, n, n)."""
    return np.diag(np.repeat(P[:, 0, 0], 3))


def _smoother_gain(F, P_prev, P_pred):
    """RTS gain P_prev F^T P_pred^-1 (batched over leading axes; P symmetric)."""
    return np.linalg.solve(P_pred, F @ P_prev).swapaxes(-1, -2)


def _rts_backward(gain, increment, P_f=None, P_pred=None):
    """
    RTS backward pass over frames 0..m-1 (sequences indexed by frame).

    Frame k >= 1 links back to frame k-1 through its smoother gain (zero for a group that
    starts a new segment at k), its increment (filtered minus predicted state) and, for
    the covariances, its predicted covariance. Returns the corrections c (m, 2, n, 3),
    smoothed minus filtered states, and the smoothed covariances (m, 2, n, n), or None
    when P_f and P_pred are not given.
    The orientation charts of neighbouring frames differ by that frame's own small motion;
    carrying corrections across them unchanged is the usual first-order error-state step.
    """
    m = len(gain)
    c = np.zeros((m,) + np.shape(increment[m - 1]))
    P_s = None
    if P_f is not None:
        P_s = np.empty((m,) + np.shape(P_f[m - 1]))
        P_s[m - 1] = P_f[m - 1]
    for k in range(m - 1, 0, -1):
        G = gain[k]
        np.matmul(G, increment[k] + c[k], out=c[k - 1])
        if P_s is not None:
            P_s[k - 1] = P_f[k - 1] + G @ (P_s[k] - P_pred[k]) @ G.swapaxes(-1, -2)
    return c, P_s


class Kalman(Smoother):
    name = 'kalman'
    description = ('constant-velocity / constant-acceleration Kalman filter on the '
                   "tracker's measured noise, with a gate that never rejects real motion, "
                   'coasting through dropouts and restart on re-localisation jumps')
    PARAMS = KALMAN_PARAMS

    def _reset(self):
        self._filter = PoseKalmanFilter(self.params, self.stats, self.noise_meter)

    def _update(self, t, position, quaternion):
        kf = self._filter
        kf.step(t, position, quaternion)
        return Estimate(t, kf.position, np.array(kf.output_q), _covariance_6x6(kf.P))


class _Frame:
    """A forward-filtered frame held for the fixed-lag backward pass."""

    __slots__ = ('t', 'position', 'q', 'state', 'P', 'gain', 'restarted', 'increment',
                 'P_pred')

    def __init__(self, kf, previous):
        self.t, self.position, self.q, self.P = kf.t, kf.position, kf.output_q, kf.P
        self.state = (kf.x[POS, 0].copy(), kf.q)
        self.restarted = list(kf.restarted)
        if kf.F is None:
            self.gain = np.zeros_like(kf.P)
            self.increment = np.zeros_like(kf.x)
            self.P_pred = kf.P
        else:
            self.gain = _smoother_gain(kf.F, previous.P, kf.P_pred)
            self.increment, self.P_pred = kf.increment, kf.P_pred

    def revise(self, groups):
        """Emit the state in `groups`: the measurement passed through was a spike."""
        if groups[POS]:
            self.position = self.state[0]
        if groups[ROT]:
            self.q = self.state[1]
        self.restarted = [r and not g for r, g in zip(self.restarted, groups)]

    def linked_gain(self):
        """Return the smoother gain, zero for a group that starts a new segment here."""
        return np.where(np.array(self.restarted)[:, None, None], 0.0, self.gain)


class FixedLagKalman(Smoother):
    name = 'fixed_lag'
    description = ('Kalman filter + fixed-lag RTS smoothing: each estimate uses delay_frames '
                   'later frames and comes out that many frames late')
    PARAMS = dict(KALMAN_PARAMS, delay_frames=ParamSpec(
        6, 'look-ahead: later frames used to smooth each estimate, which comes out this '
        'many frames late', 'frames', 1, 60))

    @property
    def delay_frames(self):
        return self.params['delay_frames']

    def _reset(self):
        self._filter = PoseKalmanFilter(self.params, self.stats, self.noise_meter)
        self._window = deque()

    def _update(self, t, position, quaternion):
        kf = self._filter
        kf.step(t, position, quaternion)
        for k in range(1, min(kf.spikes, len(self._window)) + 1):
            self._window[-k].revise(kf.spike_groups)
        self._window.append(_Frame(kf, self._window[-1] if self._window else None))
        if len(self._window) <= self.delay_frames:
            return None
        estimate = self._smoothed(1)[0]
        self._window.popleft()
        return estimate

    def flush(self):
        """
        Return the held estimates, smoothed with the frames seen.

        The next update starts a take.
        """
        estimates = self._smoothed(len(self._window)) if self._window else []
        self.reset()
        return estimates

    def _smoothed(self, count):
        """Smoothed Estimates of the oldest `count` held frames."""
        frames = list(self._window)
        c, P_s = _rts_backward([f.linked_gain() for f in frames], [f.increment for f in frames],
                               [f.P for f in frames], [f.P_pred for f in frames])
        return [Estimate(f.t, f.position + c[k, POS, 0],
                         np.array(quat.compose_exp(f.q, c[k, ROT, 0].tolist())),
                         _covariance_6x6(P_s[k]))
                for k, f in enumerate(frames[:count])]


class RauchTungStriebel(Smoother):
    name = 'rts'
    causal = False
    description = ('offline Rauch-Tung-Striebel smoother over a whole take '
                   '(post-production; the quality bound)')
    PARAMS = KALMAN_PARAMS

    def _reset(self):
        self._t, self._p, self._q = [], [], []

    def _update(self, t, position, quaternion):
        if self._t and not t > self._t[-1]:
            raise ValueError(f'timestamps must increase: {t!r} after {self._t[-1]!r}')
        self._t.append(t)
        self._p.append(position.copy())
        self._q.append(quaternion)

    def flush(self):
        """Smooth the buffered take; returns its Estimates and starts a new take."""
        if not self._t:
            return []
        t, p, q, P_s = self._smooth_take(np.array(self._t), np.array(self._p),
                                         np.array(self._q), with_covariance=True)
        self.reset()
        return [Estimate(*row, _covariance_6x6(P)) for row, P in zip(zip(t, p, q), P_s)]

    def smooth(self, t, p, q, progress=None):
        """
        Smooth on the batched path, equal to update() per pose then flush().

        progress optionally wraps the forward pass's frame iterator (e.g. a tqdm progress
        bar).
        """
        q = quat.make_continuous(quat.normalize(q))
        if len(q) and self._last_q is not None and np.dot(q[0], self._last_q) < 0.0:
            q = -q
        t = np.concatenate([self._t, np.asarray(t, dtype=float)])
        p = np.concatenate([np.reshape(self._p, (-1, 3)), np.asarray(p, dtype=float)])
        q = np.concatenate([np.reshape(self._q, (-1, 4)), q])
        if not len(t):
            return stack([])
        result = self._smooth_take(t, p, q, with_covariance=False, progress=progress)[:3]
        self.reset()
        return result

    def _smooth_take(self, t, p, q, with_covariance, progress=None):
        """Forward filter + RTS backward pass: (t, p, q, smoothed covariances or None)."""
        kf = PoseKalmanFilter(self.params, self.stats)
        size, n = len(t), kf.n
        p_f, q_f = np.empty((size, 3)), np.empty((size, 4))
        state_p, state_q = np.empty((size, 3)), np.empty((size, 4))
        P_f = np.empty((size, 2, n, n))
        P_pred = np.broadcast_to(np.eye(n), (size, 2, n, n)).copy()
        increment = np.zeros((size, 2, n, 3))
        dt = np.zeros(size)
        restarted = np.ones((size, 2), dtype=bool)
        rows = range(size)
        for k in (progress(rows) if progress else rows):
            kf.step(t[k], p[k], q[k])
            p_f[k], q_f[k], P_f[k], restarted[k] = kf.position, kf.output_q, kf.P, kf.restarted
            for j in range(max(k - kf.spikes, 0), k):
                # Passed-through spikes: the state instead, linked to their neighbours.
                if kf.spike_groups[POS]:
                    p_f[j] = state_p[j]
                if kf.spike_groups[ROT]:
                    q_f[j] = state_q[j]
                restarted[j] &= ~np.array(kf.spike_groups)
            state_p[k], state_q[k] = kf.x[POS, 0], kf.q
            if kf.F is not None:
                dt[k], P_pred[k], increment[k] = t[k] - t[k - 1], kf.P_pred, kf.increment
        gain = np.zeros_like(P_f)
        for start in range(1, size, GAIN_CHUNK):
            stop = min(start + GAIN_CHUNK, size)
            F = kf.transition(dt[start:stop, None, None])[:, None]
            gain[start:stop] = _smoother_gain(F, P_f[start - 1:stop - 1], P_pred[start:stop])
        gain[restarted] = 0.0
        if with_covariance:
            c, P_s = _rts_backward(gain, increment, P_f, P_pred)
        else:
            del P_f, P_pred  # a one-hour 240 Hz take holds ~120 MB in each
            c, P_s = _rts_backward(gain, increment)
        q_s = quat.multiply(q_f, quat.exp_map(c[:, ROT, 0]))
        return t, p_f + c[:, POS, 0], q_s, P_s
