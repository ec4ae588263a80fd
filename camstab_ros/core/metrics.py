"""
Quality metrics, exactly as defined in DESIGN.md ("Measuring quality").

All functions take an estimate and the ground truth sampled at the same timestamps t
(seconds), positions in metres (N, 3) and unit quaternions (N, 4, x-y-z-w).

The headline is what the audience sees (`screen_*`): the virtual background's error on
screen, in pixels, for a `ScreenView` (by default a 4K frame, 40 deg horizontal field of
view, a 3x3 grid of points on a wall 5 m in front of the true camera, spanning +-80% of
the half-width and half-height). Each point is projected by the true camera and by the
estimated one, a pinhole looking along its body +x axis (REP 103: image right is -y,
image up is +z); the error is the 2-D pixel difference.
"""
from dataclasses import dataclass
import math

from camstab_ros.core import quaternion as quat
import numpy as np
from scipy.spatial.transform import Rotation


STILL_SPEED_M_S = 0.005
STILL_SPEED_RAD_S = np.radians(0.5)
LAG_SEARCH_S = 0.2
LAG_STEP_S = 0.001
# Below this much translation over the take, lag is measured on orientation instead.
MIN_TRAVEL_FOR_POSITION_LAG_M = 0.01

SCREEN_METRIC_NAMES = ('screen_rmse_px', 'screen_jitter_px', 'screen_jitter_still_px')
METRIC_NAMES = SCREEN_METRIC_NAMES + (
    'pos_rmse_mm', 'rot_rmse_deg', 'jitter_mm', 'jitter_deg', 'jitter_still_mm',
    'jitter_still_deg', 'lag_ms')
# Grid of the screen metrics: points at these fractions of the half-width and half-height.
GRID_FRACTIONS = (-0.8, 0.0, 0.8)
# A point's error is capped at this many frame widths (a point behind the estimated
# camera has no projection at all): a frame that wrong counts as ten widths off, so one
# such frame cannot outweigh a whole take.
MAX_ERROR_WIDTHS = 10.0


@dataclass(frozen=True)
class ScreenView:
    """The view the screen metrics are measured in: frame width, field of view, wall."""

    width_px: float = 3840.0
    fov_deg: float = 40.0
    wall_m: float = 5.0
    aspect: float = 16.0 / 9.0

    def __post_init__(self):
        """Check the view is one a camera can have (ValueError otherwise)."""
        if not (self.width_px > 0 and 0 < self.fov_deg < 180 and self.wall_m > 0
                and self.aspect > 0):
            raise ValueError('the screen view needs width_px > 0, 0 < fov_deg < 180 and '
                             'wall_m > 0')

    @property
    def focal_px(self):
        """Return the focal length in pixels (5275 px for 4K at 40 deg)."""
        return 0.5 * self.width_px / math.tan(math.radians(0.5 * self.fov_deg))

    def grid_body(self):
        """Return the wall's grid points (9, 3) in the true camera's body frame."""
        half_w, half_h = 0.5 * self.width_px, 0.5 * self.width_px / self.aspect
        scale = self.wall_m / self.focal_px
        return np.array([[self.wall_m, -u * half_w * scale, v * half_h * scale]
                         for v in GRID_FRACTIONS for u in GRID_FRACTIONS])


DEFAULT_VIEW = ScreenView()


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


def screen_errors(est_p, est_q, truth_p, truth_q, view=DEFAULT_VIEW):
    """
    Return the pixel errors (N, 9, 2) of the grid of `view`, estimated vs true camera.

    Each error is at most MAX_ERROR_WIDTHS frame widths long; a point behind the
    estimated camera counts as that far off.
    """
    body = view.grid_body()
    truth_r = Rotation.from_quat(truth_q).as_matrix()
    est_r = Rotation.from_quat(est_q).as_matrix()
    points = np.einsum('nij,kj->nki', truth_r, body) + truth_p[:, None, :]
    seen = np.einsum('nji,nkj->nki', est_r, points - est_p[:, None, :])
    f = view.focal_px
    cap = MAX_ERROR_WIDTHS * view.width_px
    depth = seen[..., 0]
    with np.errstate(divide='ignore', invalid='ignore'):
        u_est, v_est = -f * seen[..., 1] / depth, f * seen[..., 2] / depth
    u_true, v_true = -f * body[:, 1] / body[:, 0], f * body[:, 2] / body[:, 0]
    errors = np.stack([u_est - u_true, v_est - v_true], axis=-1)
    length = np.linalg.norm(errors, axis=-1, keepdims=True)
    behind = ~(depth > 0.0) | ~np.isfinite(length[..., 0])
    errors = np.where(length > cap, errors * (cap / np.maximum(length, 1e-300)), errors)
    errors[behind] = (cap, 0.0)
    return errors


def screen_metrics(t, est_p, est_q, truth_p, truth_q, view=DEFAULT_VIEW):
    """Return the screen metrics of DESIGN.md: {screen_rmse_px, ..._jitter_still_px}."""
    errors = screen_errors(est_p, est_q, truth_p, truth_q, view)
    step = np.sqrt(np.mean(np.sum(np.diff(errors, axis=0) ** 2, axis=2), axis=1))
    still = still_steps(t, truth_p, truth_q)
    return {
        'screen_rmse_px': float(np.sqrt(np.mean(np.sum(errors ** 2, axis=2)))),
        'screen_jitter_px': _rms(step),
        'screen_jitter_still_px': _rms(step[still]),
    }


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


def error_metrics(t, est_p, est_q, truth_p, truth_q, view=DEFAULT_VIEW):
    """Every metric but lag (which costs a search): {name: value}."""
    t, est_p, est_q, truth_p, truth_q = _checked(t, est_p, est_q, truth_p, truth_q)
    err_p = est_p - truth_p
    err_q = quat.multiply(quat.conjugate(truth_q), est_q)
    step_mm = np.linalg.norm(np.diff(err_p, axis=0), axis=1) * 1e3
    step_deg = np.degrees(quat.angle_between(err_q[:-1], err_q[1:]))
    still = still_steps(t, truth_p, truth_q)
    return {
        **screen_metrics(t, est_p, est_q, truth_p, truth_q, view),
        'pos_rmse_mm': _rms(np.linalg.norm(err_p, axis=1) * 1e3),
        'rot_rmse_deg': _rms(np.degrees(quat.angle_between(est_q, truth_q))),
        'jitter_mm': _rms(step_mm),
        'jitter_deg': _rms(step_deg),
        'jitter_still_mm': _rms(step_mm[still]),
        'jitter_still_deg': _rms(step_deg[still]),
    }


def evaluate(t, est_p, est_q, truth_p, truth_q, view=DEFAULT_VIEW):
    """All quality metrics of an estimate against the truth: {name: value}."""
    t, est_p, est_q, truth_p, truth_q = _checked(t, est_p, est_q, truth_p, truth_q)
    metrics = error_metrics(t, est_p, est_q, truth_p, truth_q, view)
    metrics['lag_ms'] = lag_seconds(t, est_p, est_q, truth_p, truth_q) * 1e3
    return metrics
