"""
`imm`: a two-mode interacting multiple model (IMM) filter, hold and move.

The classical answer to "smooth hard on a hold, follow a move without lag" (Blom and
Bar-Shalom's IMM): per group (position, orientation) two constant-velocity Kalman filters
run side by side, one with a small process noise (the camera holds or drifts), one with a
large one (it moves). Every frame the modes' estimates are mixed by the probabilities of
switching between them (a mode lasts `mean_hold_s` / `mean_move_s` on average), each
filter steps on the measurement, and the likelihood of its innovation updates the mode
probabilities; the estimate is the probability-weighted mean. The baseline the learned
`hybrid` is measured against, beside `kalman` (whose adaptive process noise does the same
job with one filter).

As in `kalman`: the three axes of a group share the model; the orientation is a small
body-frame rotation vector about a reference quaternion, folded into it after every step;
the measurement noise R of a group is the noise meter's white reading ('auto', trusted
less while moving under 60 Hz) and the process noise densities, stated for the reference
tracker, scale with R / R_ref, so one setting serves every tracker. Each mode keeps one
2 x 2 covariance per axis, and the mixture's spread between the modes is kept per axis:
the cross-axis terms a full-state IMM picks up when it mixes are dropped (the axes share
no dynamics). Where one axis moves they are zero and this filter equals filterpy's
IMMEstimator to rounding; with all three axes noisy and moving it stays within a fifth
of the noise sigma of it (test_imm.py; 0.02-0.08 sigma on five seeded takes).

Robustness, per group: an innovation beyond `gate_sigma` (Mahalanobis, 3 degrees of
freedom, under the move mode) or a jump beyond `reset_jump_*` goes out as measured while
the modes coast; the next measurement back in the gate makes it a spike (stats.outliers,
once per frame), one still out restarts the group there with the rate of the last two
measurements (stats.resets, once per frame). A gap longer than `dropout_timeout_s`
restarts the filter; until the noise meter has a reading every measurement passes through.

Why not filterpy's IMMEstimator: it holds one KalmanFilter object per mode and group and
mixes them in Python loops, and for stamps that vary its transition matrix and every
filter's F and Q would be rebuilt per pose. Vectorised over groups, modes and axes in
NumPy this filter took 120 us per pose for both groups where filterpy took 300-350 us
for the position group alone (3000 poses, test_imm.filterpy_imm, measured once on
2026-12-03).
"""
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.kalman import (KALMAN_PARAMS, MeasuredNoise, POS, REFERENCE_VARIANCE,
                                     ROT, START_DERIVATIVE_STD)
from camstab_ros.core.params import ParamSpec
from camstab_ros.core.smoother import Estimate, Smoother
from filterpy.common import Q_continuous_white_noise
import numpy as np


HOLD, MOVE = 0, 1
# Mode probabilities (hold, move) at a (re)start.
START_MODE_PROBABILITY = (0.5, 0.5)
# Smallest mode probability kept (a mode never dies out completely).
MIN_PROBABILITY = 1e-12

# The defaults of the process noises and mode durations: training/tune_classical.py
# --methods imm --real, i.e. optimised on the learned models' training and validation data
# and the tracker matrix's loss (the fair baseline of issue 11; `kalman`'s defaults are
# tuned on simulated takes only, its optimised values are the matrix's `kalman_optimised`).
IMM_PARAMS = {
    'hold_process_noise': ParamSpec(
        5.250e-9, 'hold mode: spectral density of the white acceleration noise driving '
        'position, for the reference tracker (0.5 mm), scaled with the measurement noise',
        'm^2/s^3', 1e-14, 1e12),
    'move_process_noise': ParamSpec(
        2.513, 'move mode: the same, for a moving camera', 'm^2/s^3', 1e-14, 1e12),
    'rot_hold_process_noise': ParamSpec(
        3.545e-10, 'hold mode: spectral density of the white angular acceleration noise, for '
        'the reference tracker (0.02 deg), scaled with the measurement noise', 'rad^2/s^3',
        1e-14, 1e12),
    'rot_move_process_noise': ParamSpec(
        5.884, 'move mode: the same, for a moving camera', 'rad^2/s^3', 1e-14, 1e12),
    'mean_hold_s': ParamSpec(
        37.76, 'mean duration of a hold: the hold mode switches to the move mode with '
        'probability 1 - exp(-dt / this) per frame', 's', 1e-3, 1e4),
    'mean_move_s': ParamSpec(
        1.728, 'mean duration of a move (likewise)', 's', 1e-3, 1e4),
    **{name: KALMAN_PARAMS[name] for name in (
        'measurement_noise_m', 'measurement_noise_deg', 'gate_sigma', 'reset_jump_m',
        'reset_jump_deg', 'dropout_timeout_s')},
}


class ImmFilter:
    """
    The two-mode filter of both groups.

    State after `step()`: `x` (group, mode, [value, rate], axis), `P` (group, mode, axis,
    2, 2), `mu` (group, mode) the mode probabilities, `q` the reference orientation (x, y,
    z, w tuple); `position`, `output_q` the estimate to emit and `variance` (2, 3) the
    estimate's variance per group and axis (m^2, rad^2).
    """

    def __init__(self, params, stats, meter=None):
        self.stats = stats
        self._q_unit = Q_continuous_white_noise(2, 1.0, 1.0)
        self._density = np.array([
            [params['hold_process_noise'], params['move_process_noise']],
            [params['rot_hold_process_noise'], params['rot_move_process_noise']]])
        self._mean_s = (params['mean_hold_s'], params['mean_move_s'])
        self._noise = MeasuredNoise(params, stats, meter)
        self._r = self._noise.variance  # R (2,), updated in place by the noise reading
        self._start_rate_var = np.array([START_DERIVATIVE_STD[g][0] ** 2 for g in (POS, ROT)])
        self._gate2 = params['gate_sigma'] ** 2
        self._jump2 = np.array([params['reset_jump_m'],
                                math.radians(params['reset_jump_deg'])]) ** 2
        self.t = None

    def transition(self, dt):
        """Return the mode transition matrix (2, 2) over dt: row = from, column = to."""
        leave = [1.0 - math.exp(-dt / mean) for mean in self._mean_s]
        return np.array([[1.0 - leave[HOLD], leave[HOLD]], [leave[MOVE], 1.0 - leave[MOVE]]])

    def step(self, t, position, q):
        """Filter one measurement: t (s), position (3,), unit quaternion q (4,)."""
        dt = self._noise.advance(self.t, t, position, q, self._speeds)
        self.t = t
        if dt is None:
            self._start(position, q)
            return
        x, P, cbar = self._mix_and_predict(dt)
        q_meas = tuple(q.tolist())
        z = np.array([position, quat.log_relative(self.q, q_meas)])
        y = z[:, None, :] - x[:, :, 0, :]                  # (group, mode, axis)
        S = P[..., 0, 0] + self._r[:, None, None]          # (group, mode, axis)
        yy_s = y * y / S
        combined = (cbar[:, :, None] * y).sum(axis=1)
        out = (yy_s[:, MOVE].sum(axis=1) > self._gate2) | \
            ((combined * combined).sum(axis=1) > self._jump2)
        gain = P[..., :, 0] / S[..., None]                 # (group, mode, axis, 2)
        x_new = x + gain.swapaxes(-1, -2) * y[:, :, None, :]
        P_new = P - gain[..., :, None] * P[..., None, 0, :]
        log_l = -0.5 * (yy_s + np.log(2.0 * math.pi * S)).sum(axis=2)
        mu = cbar * np.exp(log_l - log_l.max(axis=1, keepdims=True))
        mu = np.maximum(mu / mu.sum(axis=1, keepdims=True), MIN_PROBABILITY)
        mu /= mu.sum(axis=1, keepdims=True)
        passed = [False, False]
        spike = restart = False    # counted once per frame, whichever groups they hit
        for g in (POS, ROT):
            if not out[g]:
                x[g], P[g], cbar[g] = x_new[g], P_new[g], mu[g]
                spike |= self._run[g]
                self._run[g] = False
            elif self._run[g]:
                # Out of gate twice in a row: a jump that persisted, restart the group here.
                restart = True
                self._run[g] = False
                change = (position - self._previous_position if g == POS
                          else np.array(quat.log_relative(self._previous_q, q_meas)))
                x[g] = 0.0
                x[g, :, 0] = z[g]
                x[g, :, 1] = change / dt
                P[g] = self._start_covariance(g, dt)
                cbar[g] = START_MODE_PROBABILITY
            else:
                # A spike or a move's first frame: out as measured, the modes coast.
                self._run[g] = passed[g] = True
        self.stats.outliers += spike
        self.stats.resets += restart
        self.x, self.P, self.mu = x, P, cbar
        self._fold_orientation()
        self._previous_position, self._previous_q = position.copy(), q_meas
        self.position = position.copy() if passed[POS] else self._mean_value(POS)
        self.output_q = q_meas if passed[ROT] else self.q

    def _speeds(self):
        """Return the mean speeds of the modes: position m/s, orientation rad/s."""
        return [float(np.linalg.norm(self.mu[g] @ self.x[g, :, 1])) for g in (POS, ROT)]

    def _mix_and_predict(self, dt):
        """Mix the modes by their switching probabilities and predict over dt."""
        switch = self.transition(dt)
        cbar = self.mu @ switch                                    # (group, to)
        omega = self.mu[:, :, None] * switch / cbar[:, None, :]   # (group, from, to)
        x0 = (omega[..., None, None] * self.x[:, :, None]).sum(axis=1)  # (group, to, 2, axis)
        spread = (self.x[:, :, None] - x0[:, None]).swapaxes(-1, -2)  # (g, from, to, axis, 2)
        outer = spread[..., :, None] * spread[..., None, :]
        P0 = (omega[..., None, None, None] * (self.P[:, :, None] + outer)).sum(axis=1)
        scale = self._density * (self._r / REFERENCE_VARIANCE)[:, None]
        Q = scale[:, :, None, None, None] * (self._q_unit * np.array([[dt ** 3, dt ** 2],
                                                                     [dt ** 2, dt]]))
        # F = [[1, dt], [0, 1]] on [value, rate]: x0 -> (value + rate dt, rate).
        x = x0.copy()
        x[:, :, 0] += dt * x0[:, :, 1]
        P = P0.copy()
        P[..., 0, :] += dt * P0[..., 1, :]
        P[..., :, 0] += dt * P[..., :, 1]
        return x, P + Q, cbar

    def _fold_orientation(self):
        """Fold the mean orientation error into the reference; the modes keep their spread."""
        r = self._mean_value(ROT)
        self.q = quat.compose_exp(self.q, r.tolist())
        self.x[ROT, :, 0] -= r

    def _mean_value(self, group):
        return self.mu[group] @ self.x[group, :, 0]

    @property
    def variance(self):
        """Per group and axis (2, 3), the variance of the estimate: m^2, rad^2."""
        value = self.x[:, :, 0]                                    # (group, mode, axis)
        mean = (self.mu[:, :, None] * value).sum(axis=1)
        value_var = self.P[..., 0, 0] + (value - mean[:, None]) ** 2
        return (self.mu[:, :, None] * value_var).sum(axis=1)

    def _start(self, position, q):
        self.q = tuple(q.tolist())
        self.x = np.zeros((2, 2, 2, 3))
        self.x[POS, :, 0] = position
        self.P = np.stack([np.broadcast_to(self._start_covariance(g), (2, 3, 2, 2))
                           for g in (POS, ROT)]).copy()
        self.mu = np.array([START_MODE_PROBABILITY] * 2)
        self._run = [False, False]
        self._noise.mean_interval = None
        self._previous_position, self._previous_q = position.copy(), self.q
        self.position, self.output_q = position.copy(), self.q

    def _start_covariance(self, group, dt=None):
        """Prior covariance (2, 2) of a (re)start; with dt, of a two-point start."""
        r = self._r[group]
        if dt is None:
            return np.diag([r, self._start_rate_var[group]])
        return np.array([[r, r / dt], [r / dt, 2.0 * r / dt ** 2]])


class Imm(Smoother):
    name = 'imm'
    description = ('interacting multiple model filter: a hold and a move constant-velocity '
                   "Kalman filter mixed by their likelihoods, on the tracker's measured noise")
    PARAMS = IMM_PARAMS

    def _reset(self):
        self._filter = ImmFilter(self.params, self.stats, self.noise_meter)

    def _update(self, t, position, quaternion):
        f = self._filter
        f.step(t, position, quaternion)
        return Estimate(t, f.position, np.array(f.output_q), np.diag(f.variance.ravel()))
