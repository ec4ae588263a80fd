from camstab_ros.core import metrics
from camstab_ros.core import quaternion as quat
from camstab_ros.core.metrics import evaluate, still_steps
import numpy as np
import pytest
from scipy.spatial.transform import Rotation


RATE = 100.0


def hold_move_hold(n=600):
    """Still for 2 s, 1 m eased move with a pan over 2 s, still for 2 s."""
    t = np.arange(n) / RATE
    s = np.clip((t - 2.0) / 2.0, 0.0, 1.0)
    ease = s * s * (3 - 2 * s)
    p = np.column_stack([ease, np.zeros(n), np.full(n, 1.5)])
    q = Rotation.from_euler('z', 30.0 * ease[:, None], degrees=True).as_quat()
    return t, p, q


def test_constant_offset_is_error_without_jitter():
    t, p, q = hold_move_hold()
    off_q = quat.multiply(q, Rotation.from_euler('x', 0.5, degrees=True).as_quat())
    m = evaluate(t, p + [0.002, 0.0, 0.0], off_q, p, q)
    assert m['pos_rmse_mm'] == pytest.approx(2.0, rel=1e-9)
    assert m['rot_rmse_deg'] == pytest.approx(0.5, rel=1e-6)
    assert m['jitter_mm'] == pytest.approx(0.0, abs=1e-9)
    assert m['jitter_deg'] == pytest.approx(0.0, abs=1e-6)


def test_jitter_is_the_frame_to_frame_change_of_the_error():
    t, p, q = hold_move_hold()
    sign = np.where(np.arange(len(t)) % 2 == 0, 1.0, -1.0)
    est_p = p + np.outer(sign, [0.0, 0.001, 0.0])            # +-1 mm alternating
    est_q = quat.multiply(q, quat.exp_map(np.outer(sign, [0, 0, np.radians(0.01)])))
    m = evaluate(t, est_p, est_q, p, q)
    assert m['jitter_mm'] == pytest.approx(2.0, rel=1e-9)
    assert m['jitter_deg'] == pytest.approx(0.02, rel=1e-6)
    assert m['pos_rmse_mm'] == pytest.approx(1.0, rel=1e-9)


def test_jitter_still_counts_only_steps_where_the_truth_is_still():
    t, p, q = hold_move_hold()
    still = still_steps(t, p, q)
    assert still[:150].all() and still[-150:].all() and not still[250:350].any()
    rng = np.random.default_rng(0)
    est_p = p.copy()
    moving = ~np.r_[still, True]
    est_p[moving] += rng.normal(0, 0.001, (moving.sum(), 3))  # noise only while moving
    m = evaluate(t, est_p, q, p, q)
    assert m['jitter_mm'] > 0.5
    # Only the steps next to the move boundary see a noisy sample: a small value.
    assert m['jitter_still_mm'] < 0.2 * m['jitter_mm']


@pytest.mark.parametrize('delay_s', [0.0, 0.05, -0.03, 0.1234])
def test_lag_recovers_a_known_delay(delay_s):
    t, p, q = hold_move_hold()
    est_p = np.column_stack([np.interp(t - delay_s, t, p[:, i]) for i in range(3)])
    m = evaluate(t, est_p, q, p, q)
    assert m['lag_ms'] == pytest.approx(delay_s * 1e3, abs=0.5)


def test_lag_uses_orientation_for_a_pure_pan_and_is_nan_when_still():
    t, _, q = hold_move_hold()
    p = np.tile([0.0, 0.0, 1.5], (len(t), 1))
    delayed = Rotation.from_quat(q)[np.clip(np.arange(len(t)) - 4, 0, None)].as_quat()
    assert evaluate(t, p, delayed, p, q)['lag_ms'] == pytest.approx(40.0, abs=1.0)
    still_q = np.tile([0, 0, 0, 1.0], (len(t), 1))
    assert np.isnan(evaluate(t, p, still_q, p, still_q)['lag_ms'])


def test_sign_flipped_estimates_do_not_change_metrics():
    t, p, q = hold_move_hold()
    flipped = q * np.where(np.arange(len(t)) % 5 == 0, -1.0, 1.0)[:, None]
    assert evaluate(t, p, flipped, p, q)['jitter_deg'] == pytest.approx(0.0, abs=1e-6)


def test_mismatched_lengths_are_an_error():
    t, p, q = hold_move_hold()
    with pytest.raises(ValueError, match='one row per timestamp'):
        evaluate(t, p[:-1], q[:-1], p, q)


def _still_take(n=120, rate_hz=60.0):
    t = np.arange(n) / rate_hz
    return t, np.zeros((n, 3)), np.tile([0.0, 0.0, 0.0, 1.0], (n, 1))


def test_screen_error_of_design_md_reference_cases():
    t, p, q = _still_take()
    view = metrics.DEFAULT_VIEW
    assert view.focal_px == pytest.approx(1920.0 / np.tan(np.radians(20.0)))
    # 0.5 mm sideways at 5 m: every grid point moves f * 0.5e-3 / 5 px (~0.53 px).
    lateral = metrics.screen_metrics(t, p + [0.0, 0.0005, 0.0], q, p, q)
    assert lateral['screen_rmse_px'] == pytest.approx(view.focal_px * 1e-4, rel=1e-6)
    # 0.02 deg of pan: ~1.8 px at the centre, a little more at the edges of the grid.
    pan = Rotation.from_rotvec([0.0, 0.0, np.radians(0.02)]).as_quat()
    turned = metrics.screen_metrics(t, p, np.tile(pan, (len(t), 1)), p, q)
    centre = view.focal_px * np.tan(np.radians(0.02))
    assert centre == pytest.approx(1.84, abs=0.01)
    assert centre < turned['screen_rmse_px'] < 1.1 * centre
    # A constant error does not shake: no jitter.
    assert turned['screen_jitter_px'] == 0.0 == turned['screen_jitter_still_px']


def test_screen_metrics_follow_the_view_and_measure_shake():
    t, p, q = _still_take()
    pan = np.tile(Rotation.from_rotvec([0.0, 0.0, np.radians(0.01)]).as_quat(), (len(t), 1))
    wide = metrics.screen_metrics(t, p, pan, p, q)['screen_rmse_px']
    tele = metrics.screen_metrics(t, p, pan, p, q, metrics.ScreenView(fov_deg=10.0))
    # A telephoto magnifies rotation error by its focal length (a little less than that
    # ratio, as the wide lens also sees the grid's edges at steeper angles).
    focal_ratio = np.tan(np.radians(20.0)) / np.tan(np.radians(5.0))
    assert 0.9 * focal_ratio * wide < tele['screen_rmse_px'] < focal_ratio * wide
    # Alternating +-0.5 mm sideways: every step moves the picture by 2 x 0.53 px.
    shake = p + np.outer((-1.0) ** np.arange(len(t)), [0.0, 0.0005, 0.0])
    moving = metrics.screen_metrics(t, shake, q, p, q)
    step = 2 * metrics.DEFAULT_VIEW.focal_px * 1e-4
    assert moving['screen_jitter_px'] == pytest.approx(step, rel=1e-6)
    assert moving['screen_jitter_still_px'] == pytest.approx(step, rel=1e-6)
    with pytest.raises(ValueError):
        metrics.ScreenView(fov_deg=0.0)


def test_screen_metrics_come_first():
    assert metrics.METRIC_NAMES[:3] == metrics.SCREEN_METRIC_NAMES


def test_a_frame_looking_away_counts_as_ten_frame_widths_not_infinity():
    t, p, q = _still_take(10)
    away = q.copy()
    away[5] = Rotation.from_rotvec([0.0, 0.0, np.pi]).as_quat()  # looking backwards
    errors = metrics.screen_errors(p, away, p, q)
    cap = metrics.MAX_ERROR_WIDTHS * metrics.DEFAULT_VIEW.width_px
    assert np.allclose(np.linalg.norm(errors[5], axis=1), cap)
    assert np.all(np.isfinite(errors)) and np.all(errors[[0, 4, 6]] == 0.0)
