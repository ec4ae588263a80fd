"""
Quality metrics, exactly as defined in DESIGN.md ("Measuring quality").

All functions take an estimate and the ground truth sampled at the same timestamps t
(seconds), positions in metres (N, 3) and unit quaternions (N, 4, x-y-z-w).
"""
from camstab_ros.core import quaternion as quat
import numpy as np


STILL_SPEED_M_S = 0.005
STILL_SPEED_RAD_S = np.radians(0.5)
LAG_SEARCH_S = 0.2
LAG_STEP_S = 0.001
# Below this much translation over the take, lag is measured on orientation instead.
MIN_TRAVEL_FOR_POSITION_LAG_M = 0.01

METRIC_NAMES = ('pos_rmse_mm', 'rot_rmse_deg', 'jitter_mm', 'jitter_deg',
                'jitter_still_mm', 'jitter_still_deg', 'lag_ms')


def _rms(values):
    values = np.asarray(values, dtype=float)
    return float(np.sqrt(np.mean(values ** 2))) if values.size else float('nan')


def still_steps(t, truth_p, truth_q):
    """
    Return a boolean mask of the frame steps where the true camera is still at both ends.

    The mask is over frame steps k-1 -> k (length N-1); still means a speed below 5 mm/s and
    0.5 deg/s.
    """
    if len(t) < 3:
        return np.zeros(max(len(t) - 1, 0), dtype=bool)
    dt = np.diff(t)
    step_speed = np.linalg.norm(np.diff(truth_p, axis=0), axis=1) / dt
    step_rate = quat.angle_between(truth_q[:-1], truth_q[1:]) / dt
    # Speed at a frame: the larger of its two adjacent steps (one at the ends).
    frame_speed = np.maximum(np.r_[step_speed[0], step_speed], np.r_[step_speed, step_speed[-1]])
    frame_rate = np.maximum(np.r_[step_rate[0], step_rate], np.r_[step_rate, step_rate[-1]])
    still = (frame_speed < STILL_SPEED_M_S) & (frame_rate < STILL_SPEED_RAD_S)
    return still[:-1] & still[1:]


def lag_seconds(t, est_p, est_q, truth_p, truth_q, component='auto'):
    """
    Return the shift tau in [-0.2, 0.2] s minimising RMS |est(t) - truth(t - tau)|.

    component 'auto' (the metric): position, or orientation when the camera travels less
    than 1 cm; 'position' or 'orientation' force one (used when tuning each separately).
    NaN when that part of the true camera does not move (no motion to lag behind).
    """
    travel = np.sum(np.linalg.norm(np.diff(truth_p, axis=0), axis=1))
    turn = np.sum(quat.angle_between(truth_q[:-1], truth_q[1:]))
    if component == 'auto':
        component = 'position' if travel >= MIN_TRAVEL_FOR_POSITION_LAG_M else 'orientation'
    use_position = component == 'position'
    if (travel if use_position else turn) < (MIN_TRAVEL_FOR_POSITION_LAG_M if use_position
                                             else 1e-3):
        return float('nan')
    taus = np.arange(-LAG_SEARCH_S, LAG_SEARCH_S + LAG_STEP_S / 2, LAG_STEP_S)
    inside = (t - LAG_SEARCH_S >= t[0]) & (t + LAG_SEARCH_S <= t[-1])
    if inside.sum() < 3:
        return float('nan')
    ts = t[inside]
    if use_position:
        est = est_p[inside]

        def cost(tau):
            shifted = np.column_stack([np.interp(ts - tau, t, truth_p[:, i]) for i in range(3)])
            return np.mean(np.sum((est - shifted) ** 2, axis=1))
    else:
        est = est_q[inside]
        continuous = quat.make_continuous(truth_q)

        def cost(tau):
            # Normalised linear interpolation: equal to slerp to ~1e-6 of the frame step's
            # angle, and an order of magnitude cheaper inside this search.
            shifted = np.column_stack([np.interp(ts - tau, t, continuous[:, i])
                                       for i in range(4)])
            shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
            return np.mean(quat.angle_between(est, shifted) ** 2)
    costs = np.array([cost(tau) for tau in taus])
    i = int(np.argmin(costs))
    if 0 < i < len(taus) - 1:  # parabolic refinement between grid points
        c0, c1, c2 = costs[i - 1:i + 2]
        denom = c0 - 2 * c1 + c2
        offset = 0.5 * (c0 - c2) / denom if denom > 0 else 0.0
        return float(taus[i] + offset * LAG_STEP_S)
    return float(taus[i])


def _checked(t, est_p, est_q, truth_p, truth_q):
    t = np.asarray(t, dtype=float)
    est_p, truth_p = np.asarray(est_p, float), np.asarray(truth_p, float)
    est_q = quat.make_continuous(quat.normalize(est_q))
    truth_q = quat.make_continuous(quat.normalize(truth_q))
    if not (len(t) == len(est_p) == len(est_q) == len(truth_p) == len(truth_q)):
        raise ValueError('estimate and truth must have one row per timestamp')
    if len(t) < 2:
        raise ValueError('need at least two poses to evaluate')
    return t, est_p, est_q, truth_p, truth_q


def error_metrics(t, est_p, est_q, truth_p, truth_q):
    """Every metric but lag (which costs a search): {name: value}."""
    t, est_p, est_q, truth_p, truth_q = _checked(t, est_p, est_q, truth_p, truth_q)
    err_p = est_p - truth_p
    err_q = quat.multiply(quat.conjugate(truth_q), est_q)
    step_mm = np.linalg.norm(np.diff(err_p, axis=0), axis=1) * 1e3
    step_deg = np.degrees(quat.angle_between(err_q[:-1], err_q[1:]))
    still = still_steps(t, truth_p, truth_q)
    return {
        'pos_rmse_mm': _rms(np.linalg.norm(err_p, axis=1) * 1e3),
        'rot_rmse_deg': _rms(np.degrees(quat.angle_between(est_q, truth_q))),
        'jitter_mm': _rms(step_mm),
        'jitter_deg': _rms(step_deg),
        'jitter_still_mm': _rms(step_mm[still]),
        'jitter_still_deg': _rms(step_deg[still]),
    }


def evaluate(t, est_p, est_q, truth_p, truth_q):
    """All quality metrics of an estimate against the truth: {name: value}."""
    t, est_p, est_q, truth_p, truth_q = _checked(t, est_p, est_q, truth_p, truth_q)
    metrics = error_metrics(t, est_p, est_q, truth_p, truth_q)
    metrics['lag_ms'] = lag_seconds(t, est_p, est_q, truth_p, truth_q) * 1e3
    return metrics
