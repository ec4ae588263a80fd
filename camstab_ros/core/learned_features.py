"""
What the learned methods see and learn: features and targets, shared with training.

Both networks see only quantities that do not depend on where the camera is, in fixed
physical units, expressed in the camera's body frame (so a take moved or turned as a
whole gives the same corrections); see FEATURE_DEFINITIONS and TARGET_DEFINITIONS, which
training copies into every model card. `training/dataset.py` builds its arrays with the
functions here, and the run time (`learned`) computes the same quantities pose by pose.
"""
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.kalman import POS, PoseKalmanFilter, ROT
from camstab_ros.core.smoother import SmootherStats
import numpy as np


FEATURE_CLIP = 8.0
HYBRID_FEATURES = (
    ('residual_x', 'mm'), ('residual_y', 'mm'), ('residual_z', 'mm'),
    ('residual_rx', 'deg'), ('residual_ry', 'deg'), ('residual_rz', 'deg'),
    ('velocity_x', 'm/s'), ('velocity_y', 'm/s'), ('velocity_z', 'm/s'),
    ('rate_x', 'deg/s'), ('rate_y', 'deg/s'), ('rate_z', 'deg/s'),
    ('dt', 'ms'), ('restarted', '1'))
LSTM_FEATURES = (
    ('step_x', 'mm'), ('step_y', 'mm'), ('step_z', 'mm'),
    ('step_rx', 'deg'), ('step_ry', 'deg'), ('step_rz', 'deg'), ('dt', 'ms'))
# Card unit per SI unit (m, rad, s) of each feature unit.
SI_PER_UNIT = {'mm': 1e3, 'deg': math.degrees(1.0), 'm/s': 1.0, 'deg/s': math.degrees(1.0),
               'ms': 1e3, '1': 1.0}
TARGETS = (('correction_x', 'mm'), ('correction_y', 'mm'), ('correction_z', 'mm'),
           ('correction_rx', 'deg'), ('correction_ry', 'deg'), ('correction_rz', 'deg'))
FEATURE_DEFINITIONS = {
    'hybrid': ('Kalman filter (card "kalman") stepped on the measurement, then, in the '
               'body frame of the filtered orientation q_f: residual = R(q_f)^T (p_meas - '
               'p_f) in mm; rotation residual = log(q_f^-1 q_meas) in deg; velocity = '
               'R(q_f)^T v_f in m/s; rate = the filter angular rate (body) in deg/s; dt = '
               'time since the previous measurement in ms (0 at the first); restarted = 1 '
               'when the filter (re)started a group at this measurement. Standardised '
               '(x - mean) / std, clipped to +-clip.'),
    'lstm': ('In the body frame of the previous measurement q_(k-1): step = R(q_(k-1))^T '
             '(p_k - p_(k-1)) in mm; rotation step = log(q_(k-1)^-1 q_k) in deg; dt in ms '
             '(all 0 at the first measurement). Standardised (x - mean) / std, clipped to '
             '+-clip.'),
}
TARGET_DEFINITIONS = {
    'hybrid': ('correction to the Kalman estimate in its body frame: R(q_f)^T (p_true - '
               'p_f) in mm, log(q_f^-1 q_true) in deg; the network outputs target / scale'),
    'lstm': ('correction to the measurement in its body frame: R(q_k)^T (p_true - p_k) in '
             'mm, log(q_k^-1 q_true) in deg; the network outputs target / scale'),
}


def rotate(q, v, inverse=False):
    """
    Rotate v by q: return R(q) v, or R(q)^T v when inverse.

    q = (x, y, z, w) and v = (x, y, z): floats or arrays of the same shape per component.
    """
    qx, qy, qz, qw = q
    if inverse:
        qx, qy, qz = -qx, -qy, -qz
    vx, vy, vz = v
    # v + 2 w (u x v) + 2 u x (u x v), with u = (qx, qy, qz)
    cx = qy * vz - qz * vy
    cy = qz * vx - qx * vz
    cz = qx * vy - qy * vx
    return (vx + 2.0 * (qw * cx + qy * cz - qz * cy),
            vy + 2.0 * (qw * cy + qz * cx - qx * cz),
            vz + 2.0 * (qw * cz + qx * cy - qy * cx))


def columns(a):
    """Return the columns of an (N, k) array as a tuple of k arrays."""
    return tuple(np.asarray(a, dtype=float).T)


def hybrid_features(meas_p, meas_q, est_p, est_v, est_q, est_rate, dt, restarted):
    """
    Compute the hybrid features (N, 14) from per-pose arrays.

    Inputs: measurement p (N, 3), q (N, 4); filter position, velocity (N, 3), orientation
    (N, 4), body angular rate (N, 3) rad/s; dt (N,) s; restarted (N,) bool.
    """
    q = columns(est_q)
    residual = rotate(q, columns(meas_p - est_p), inverse=True)
    rot = quat.log_map(quat.multiply(quat.conjugate(est_q), meas_q))
    velocity = rotate(q, columns(est_v), inverse=True)
    return np.column_stack([np.column_stack(residual) * 1e3, np.degrees(rot),
                            np.column_stack(velocity), np.degrees(est_rate),
                            np.asarray(dt) * 1e3, np.asarray(restarted, dtype=float)])


def hybrid_targets(truth_p, truth_q, est_p, est_q):
    """Hybrid targets (N, 6): the truth relative to the Kalman estimate (mm, deg, body)."""
    correction = rotate(columns(est_q), columns(truth_p - est_p), inverse=True)
    rot = quat.log_map(quat.multiply(quat.conjugate(est_q), truth_q))
    return np.column_stack([np.column_stack(correction) * 1e3, np.degrees(rot)])


def lstm_features(t, p, q):
    """Raw-LSTM features (N, 7) of a take: each measurement's step from the previous one."""
    t, p, q = np.asarray(t, float), np.asarray(p, float), np.asarray(q, float)
    features = np.zeros((len(t), 7))
    if len(t) > 1:
        step = rotate(columns(q[:-1]), columns(np.diff(p, axis=0)), inverse=True)
        features[1:, :3] = np.column_stack(step) * 1e3
        features[1:, 3:6] = np.degrees(quat.log_map(quat.multiply(quat.conjugate(q[:-1]),
                                                                  q[1:])))
        features[1:, 6] = np.diff(t) * 1e3
    return features


def lstm_targets(truth_p, truth_q, p, q):
    """Raw-LSTM targets (N, 6): the truth relative to the measurement (mm, deg, body)."""
    return hybrid_targets(truth_p, truth_q, p, q)


def kalman_pass(params, t, p, q, stats=None, progress=None):
    """
    Run the forward Kalman filter over a take.

    Returns per-pose arrays (est_p, est_v, est_q, est_rate, dt, restarted) for
    `hybrid_features` (dt 0 where the filter started afresh, as in the streaming path).
    """
    kf = PoseKalmanFilter(params, stats if stats is not None else SmootherStats())
    n = len(t)
    est = np.empty((n, 2, 3))
    rate = np.empty((n, 3))
    est_q = np.empty((n, 4))
    restarted = np.zeros(n, dtype=bool)
    dt = np.zeros(n)
    rows = range(n)
    for k in (progress(rows) if progress else rows):
        kf.step(t[k], p[k], q[k])
        x = kf.x
        est[k] = x[POS, :2]
        rate[k] = x[ROT, 1]
        est_q[k] = kf.q
        restarted[k] = kf.restarted[0] or kf.restarted[1]
        if kf.F is not None:
            dt[k] = t[k] - t[k - 1]
    return est[:, 0], est[:, 1], est_q, rate, dt, restarted
