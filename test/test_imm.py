"""The two-mode IMM filter: equal to filterpy's IMMEstimator, robust like `kalman`."""
import math

from camstab_ros.core.imm import Imm, START_MODE_PROBABILITY
from camstab_ros.core.kalman import REFERENCE_VARIANCE, START_DERIVATIVE_STD
from camstab_ros.core.smoother import stack
from filterpy.common import Q_continuous_white_noise
from filterpy.kalman import IMMEstimator, KalmanFilter
import numpy as np


RATE_HZ = 60.0
SIGMA_M = 0.001


def pan_positions(n, seed=3):
    """Return a hold, a 1 m/s move along x and a hold again, with white noise on x only."""
    t = np.arange(n) / RATE_HZ
    x = np.clip(t - 1.0, 0.0, 1.0)
    p = np.zeros((n, 3))
    p[:, 0] = x + np.random.default_rng(seed).normal(0.0, SIGMA_M, n)
    p[:, 1], p[:, 2] = 0.2, -0.1
    return t, p


def filterpy_imm(params, t, p):
    """Run the same model built from filterpy's KalmanFilter and IMMEstimator (position)."""
    dt = 1.0 / RATE_HZ
    r = SIGMA_M ** 2
    filters = []
    for density in (params['hold_process_noise'], params['move_process_noise']):
        kf = KalmanFilter(dim_x=6, dim_z=3)
        kf.F = np.kron([[1.0, dt], [0.0, 1.0]], np.eye(3))
        kf.Q = np.kron(Q_continuous_white_noise(2, dt, density * r / REFERENCE_VARIANCE[0]),
                       np.eye(3))
        kf.H = np.hstack([np.eye(3), np.zeros((3, 3))])
        kf.R = r * np.eye(3)
        kf.x = np.concatenate([p[0], np.zeros(3)])
        kf.P = np.kron(np.diag([r, START_DERIVATIVE_STD[0][0] ** 2]), np.eye(3))
        filters.append(kf)
    leave = [1.0 - math.exp(-dt / params[k]) for k in ('mean_hold_s', 'mean_move_s')]
    M = np.array([[1.0 - leave[0], leave[0]], [leave[1], 1.0 - leave[1]]])
    imm = IMMEstimator(filters, np.array(START_MODE_PROBABILITY), M)
    out = [p[0]]
    for z in p[1:]:
        imm.predict()
        imm.update(z)
        out.append(imm.x[:3].copy())
    return np.array(out)


def test_position_equals_filterpy_imm_estimator():
    t, p = pan_positions(240)
    # No gate: filterpy's IMM has none (the move's first frame is 17 sigmas out).
    smoother = Imm(measurement_noise_m=SIGMA_M, measurement_noise_deg=0.01, gate_sigma=1e6)
    q = np.tile([0.0, 0.0, 0.0, 1.0], (len(t), 1))
    _, est_p, est_q = smoother.smooth(t, p, q)
    reference = filterpy_imm(smoother.params, t, p)
    np.testing.assert_allclose(est_p, reference, atol=1e-9)
    np.testing.assert_allclose(est_q, q, atol=1e-12)
    assert smoother.stats.resets == 0 and smoother.stats.outliers == 0
    # The modes did their work: smoother than the raw x on the holds, on track in the move.
    hold = (t > 0.3) & (t < 0.9)
    assert np.std(np.diff(est_p[hold, 0])) < 0.3 * np.std(np.diff(p[hold, 0]))
    move = (t > 1.3) & (t < 1.9)
    assert np.max(np.abs(est_p[move, 0] - (t[move] - 1.0))) < 4 * SIGMA_M


def still_take(n=300, seed=5):
    t = np.arange(n) / RATE_HZ
    rng = np.random.default_rng(seed)
    p = np.array([1.0, 2.0, 1.5]) + rng.normal(0.0, SIGMA_M, (n, 3))
    q = np.tile([0.0, 0.0, 0.0, 1.0], (n, 1))
    return t, p, q


def test_a_spike_goes_out_as_measured_and_is_counted():
    t, p, q = still_take()
    p[200, 0] += 0.05
    smoother = Imm()
    out = [smoother.update(*row) for row in zip(t, p, q)]
    np.testing.assert_array_equal(out[200].position, p[200])
    assert abs(out[201].position[0] - 1.0) < 3 * SIGMA_M
    assert smoother.stats.outliers == 1 and smoother.stats.resets == 0


def test_a_jump_that_persists_restarts_the_group_there():
    """A re-localisation: beyond reset_jump_m (0.25 m), out as measured, then a restart."""
    t, p, q = still_take()
    p[200:, 0] += 0.5
    smoother = Imm()
    _, est_p, _ = stack([smoother.update(*row) for row in zip(t, p, q)])
    assert smoother.stats.resets == 1 and smoother.stats.outliers == 0
    assert np.all(np.abs(est_p[200:, 0] - 1.5) < 4 * SIGMA_M)


def test_a_gap_restarts_and_the_noise_is_measured_for_any_tracker():
    """Auto noise: a 50x finer tracker is smoothed by the same share; a gap restarts."""
    ratios = []
    for sigma in (SIGMA_M, SIGMA_M / 50):
        t, p, q = still_take()
        p = p.mean(axis=0) + (p - p.mean(axis=0)) * sigma / SIGMA_M
        t[150:] += 2.0
        smoother = Imm()
        _, est_p, _ = smoother.smooth(t, p, q)
        assert smoother.stats.resets == 1
        ratios.append(np.std(est_p[250:], axis=0).mean() / np.std(p[250:], axis=0).mean())
    assert ratios[0] < 0.6 and abs(ratios[1] / ratios[0] - 1.0) < 0.2


def test_a_spike_in_both_groups_is_one_outlier():
    t, p, q = still_take()
    p[200, 0] += 0.05
    q[200] = [0.0, np.sin(np.radians(1.0)), 0.0, np.cos(np.radians(1.0))]
    smoother = Imm()
    out = [smoother.update(*row) for row in zip(t, p, q)]
    np.testing.assert_array_equal(out[200].position, p[200])
    np.testing.assert_allclose(out[200].quaternion, q[200], atol=1e-12)
    np.testing.assert_allclose(out[201].quaternion, q[201], atol=1e-5)
    assert smoother.stats.outliers == 1 and smoother.stats.resets == 0
