"""The two-mode IMM filter: equal to filterpy's IMMEstimator, robust like `kalman`."""
import math

from camstab_ros.core.imm import Imm, START_MODE_PROBABILITY
from camstab_ros.core.kalman import REFERENCE_VARIANCE, START_DERIVATIVE_STD
from camstab_ros.core.smoother import stack
from filterpy.common import Q_continuous_white_noise
from filterpy.kalman import IMMEstimator, KalmanFilter
import numpy as np
import pytest


RATE_HZ = 60.0
SIGMA_M = 0.001
SIGMA_DEG = 0.05
IDENTITY = (0.0, 0.0, 0.0, 1.0)


def ramp(n):
    """Return stamps and a hold, a move of 1 unit/s from t = 1 s to 2 s, and a hold again."""
    t = np.arange(n) / RATE_HZ
    return t, np.clip(t - 1.0, 0.0, 1.0)


def filterpy_imm(params, z, group=0):
    """Run the same model built from filterpy's KalmanFilter and IMMEstimator on z (N, 3)."""
    dt = 1.0 / RATE_HZ
    r = (SIGMA_M if group == 0 else math.radians(SIGMA_DEG)) ** 2
    prefix = '' if group == 0 else 'rot_'
    filters = []
    for mode in ('hold', 'move'):
        density = params[f'{prefix}{mode}_process_noise']
        kf = KalmanFilter(dim_x=6, dim_z=3)
        kf.F = np.kron([[1.0, dt], [0.0, 1.0]], np.eye(3))
        kf.Q = np.kron(Q_continuous_white_noise(2, dt, density * r / REFERENCE_VARIANCE[group]),
                       np.eye(3))
        kf.H = np.hstack([np.eye(3), np.zeros((3, 3))])
        kf.R = r * np.eye(3)
        kf.x = np.concatenate([z[0], np.zeros(3)])
        kf.P = np.kron(np.diag([r, START_DERIVATIVE_STD[group][0] ** 2]), np.eye(3))
        filters.append(kf)
    leave = [1.0 - math.exp(-dt / params[k]) for k in ('mean_hold_s', 'mean_move_s')]
    M = np.array([[1.0 - leave[0], leave[0]], [leave[1], 1.0 - leave[1]]])
    imm = IMMEstimator(filters, np.array(START_MODE_PROBABILITY), M)
    out = [z[0]]
    for measurement in z[1:]:
        imm.predict()
        imm.update(measurement)
        out.append(imm.x[:3].copy())
    return np.array(out)


def fixed_noise_imm():
    # No gate: filterpy's IMM has none (the move's first frame is 17 sigmas out).
    return Imm(measurement_noise_m=SIGMA_M, measurement_noise_deg=SIGMA_DEG, gate_sigma=1e6)


def test_position_equals_filterpy_imm_estimator_where_one_axis_moves():
    t, x = ramp(240)
    p = np.tile([0.0, 0.2, -0.1], (len(t), 1))
    p[:, 0] = x + np.random.default_rng(3).normal(0.0, SIGMA_M, len(t))
    q = np.tile(IDENTITY, (len(t), 1))
    smoother = fixed_noise_imm()
    _, est_p, est_q = smoother.smooth(t, p, q)
    np.testing.assert_allclose(est_p, filterpy_imm(smoother.params, p), atol=1e-9)
    assert smoother.stats.resets == 0 and smoother.stats.outliers == 0
    # The modes did their work: smoother than the raw x on the hold, on track in the move.
    hold = (t > 0.3) & (t < 0.9)
    assert np.std(np.diff(est_p[hold, 0])) < 0.3 * np.std(np.diff(p[hold, 0]))
    move = (t > 1.3) & (t < 1.9)
    assert np.max(np.abs(est_p[move, 0] - (t[move] - 1.0))) < 4 * SIGMA_M


def test_orientation_equals_filterpy_imm_estimator_about_one_axis():
    """The error state folded into the reference quaternion, checked on a turn about z."""
    t, x = ramp(240)
    angle = np.radians(20.0) * x + np.radians(SIGMA_DEG) * np.random.default_rng(4).normal(
        size=len(t))
    q = np.column_stack([np.zeros((len(t), 2)), np.sin(angle / 2), np.cos(angle / 2)])
    p = np.tile([0.0, 0.2, -0.1], (len(t), 1))
    smoother = fixed_noise_imm()
    _, _, est_q = smoother.smooth(t, p, q)
    reference = filterpy_imm(smoother.params, np.column_stack(
        [np.zeros((len(t), 2)), angle]), group=1)
    est_angle = 2.0 * np.arctan2(est_q[:, 2], est_q[:, 3])
    np.testing.assert_allclose(est_q[:, :2], 0.0, atol=1e-12)
    np.testing.assert_allclose(est_angle, reference[:, 2], atol=1e-10)


def test_position_stays_near_filterpy_imm_estimator_where_all_axes_move():
    """The cross-axis terms of a full-state IMM's mixing, dropped here, stay small."""
    t, x = ramp(240)
    p = np.column_stack([x, -0.5 * x, 0.3 * x]) + np.random.default_rng(5).normal(
        0.0, SIGMA_M, (len(t), 3))
    q = np.tile(IDENTITY, (len(t), 1))
    smoother = fixed_noise_imm()
    _, est_p, _ = smoother.smooth(t, p, q)
    difference = np.max(np.abs(est_p - filterpy_imm(smoother.params, p)))
    assert 1e-9 < difference < 0.2 * SIGMA_M


def still_take(n=300, seed=5):
    """Return a locked-off take (60 Hz) with white noise in position and orientation."""
    t = np.arange(n) / RATE_HZ
    rng = np.random.default_rng(seed)
    p = np.array([1.0, 2.0, 1.5]) + rng.normal(0.0, SIGMA_M, (n, 3))
    half = 0.5 * np.radians(SIGMA_DEG) * rng.normal(size=(n, 3))
    q = np.column_stack([half, np.ones(n)])
    return t, p, q / np.linalg.norm(q, axis=1, keepdims=True)


def turned(q, axis, degrees):
    """Return q turned further by `degrees` about body `axis` (0, 1, 2)."""
    from camstab_ros.core import quaternion as quat
    v = np.zeros(3)
    v[axis] = np.radians(degrees)
    return np.array(quat.compose_exp(tuple(q), v.tolist()))


def test_measurements_pass_through_until_the_noise_is_measured():
    t, p, q = still_take()
    smoother = Imm()
    out = [smoother.update(*row) for row in zip(t, p, q)]
    np.testing.assert_array_equal(out[0].position, p[0])
    np.testing.assert_array_equal(out[3].position, p[3])
    np.testing.assert_allclose(out[3].quaternion, q[3], atol=1e-15)
    assert np.std(stack(out)[1][150:], axis=0).mean() < 0.6 * np.std(p[150:], axis=0).mean()


def test_a_spike_goes_out_as_measured_and_is_counted():
    t, p, q = still_take()
    p[200, 0] += 0.05
    smoother = Imm()
    out = [smoother.update(*row) for row in zip(t, p, q)]
    np.testing.assert_array_equal(out[200].position, p[200])
    assert abs(out[201].position[0] - 1.0) < 3 * SIGMA_M
    assert smoother.stats.outliers == 1 and smoother.stats.resets == 0


def test_a_spike_in_both_groups_is_one_outlier():
    t, p, q = still_take()
    p[200, 0] += 0.05
    q[200] = turned(q[200], 1, 5.0)
    smoother = Imm()
    out = [smoother.update(*row) for row in zip(t, p, q)]
    np.testing.assert_array_equal(out[200].position, p[200])
    np.testing.assert_allclose(out[200].quaternion, q[200], atol=1e-12)
    # Back on its track at once: the next estimate is no further from the still pose
    # (identity) than the noise.
    assert 2 * np.degrees(np.arccos(min(abs(out[201].quaternion[3]), 1.0))) < 4 * SIGMA_DEG
    assert smoother.stats.outliers == 1 and smoother.stats.resets == 0


@pytest.mark.parametrize('groups', ['position', 'orientation', 'both'])
def test_a_jump_that_persists_restarts_there_and_counts_once(groups):
    """A re-localisation beyond reset_jump_m / _deg: out as measured, then a restart."""
    t, p, q = still_take()
    if groups in ('position', 'both'):
        p[200:, 0] += 0.5
    if groups in ('orientation', 'both'):
        q[200:] = [turned(row, 2, 45.0) for row in q[200:]]
    smoother = Imm()
    _, est_p, est_q = stack([smoother.update(*row) for row in zip(t, p, q)])
    assert smoother.stats.resets == 1 and smoother.stats.outliers == 0
    assert np.all(np.abs(est_p[200:, 0] - p[200:, 0].mean()) < 4 * SIGMA_M)
    expected_z = math.sin(math.radians(22.5)) if groups != 'position' else 0.0
    assert np.all(np.abs(est_q[200:, 2] - expected_z) < math.radians(4 * SIGMA_DEG))


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


def test_timestamps_must_increase():
    t, p, q = still_take(20)
    smoother = Imm()
    for row in zip(t[:10], p[:10], q[:10]):
        smoother.update(*row)
    with pytest.raises(ValueError, match='timestamps must increase'):
        smoother.update(t[9], p[10], q[10])
