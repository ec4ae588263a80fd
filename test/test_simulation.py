"""Camera-motion scenarios and the tracker-noise model (camstab_ros.core.simulation)."""
from dataclasses import fields

from camstab_ros.core import quaternion as quat
from camstab_ros.core.metrics import still_steps
from camstab_ros.core.simulation import (add_tracker_noise, NOISE_PRESETS, SCENARIOS, simulate,
                                         simulate_truth, Take, TrackerNoise)
import numpy as np
import pytest
from scipy import signal
from scipy.spatial.transform import Rotation


QUIET = TrackerNoise(pos_sigma_m=0.0, rot_sigma_deg=0.0)


def _take_arrays(take):
    return [getattr(take, f.name) for f in fields(Take) if isinstance(getattr(take, f.name),
                                                                      np.ndarray)]


def _speeds(t, p, q):
    """Return the translational (m/s) and angular (deg/s) speed over each frame step."""
    dt = np.diff(t)
    return (np.linalg.norm(np.diff(p, axis=0), axis=1) / dt,
            np.degrees(quat.angle_between(q[:-1], q[1:])) / dt)


def _error_rotvec(take):
    return quat.log_map(quat.multiply(quat.conjugate(take.truth_q), take.noisy_q))


# --- determinism and seeds -------------------------------------------------------------

def test_same_seed_gives_identical_takes():
    noise = NOISE_PRESETS['stress']
    a = simulate('handheld', seconds=5.0, rate_hz=100.0, seed=7, noise=noise)
    b = simulate('handheld', seconds=5.0, rate_hz=100.0, seed=7, noise=noise)
    for x, y in zip(_take_arrays(a), _take_arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert (a.scenario, a.rate_hz, a.seed) == ('handheld', 100.0, 7)


@pytest.mark.parametrize('scenario', SCENARIOS)
def test_different_seed_gives_a_different_take(scenario):
    a = simulate(scenario, seconds=8.0, seed=1)
    b = simulate(scenario, seconds=8.0, seed=2)
    assert not np.allclose(a.truth_p, b.truth_p)
    assert not np.allclose(a.noisy_p - a.truth_p, b.noisy_p - b.truth_p)


def test_changing_the_noise_keeps_the_motion():
    a = simulate('crane', seconds=10.0, seed=3, noise=NOISE_PRESETS['default'])
    b = simulate('crane', seconds=10.0, seed=3, noise=NOISE_PRESETS['inside_out'])
    np.testing.assert_array_equal(a.truth_p, b.truth_p)
    np.testing.assert_array_equal(a.truth_q, b.truth_q)
    assert not np.array_equal(a.noisy_p, b.noisy_p)


def test_switching_on_spikes_keeps_the_white_noise():
    plain = simulate('pan', seconds=10.0, seed=4)
    spiky = simulate('pan', seconds=10.0, seed=4, noise=TrackerNoise(spike_rate_hz=2.0))
    assert spiky.spike.any()
    calm = ~spiky.spike
    np.testing.assert_array_equal(plain.noisy_p[calm], spiky.noisy_p[calm])


@pytest.mark.parametrize('scenario', SCENARIOS)
def test_truth_is_one_continuous_motion_at_every_rate(scenario):
    t60, p60, q60 = simulate_truth(scenario, 6.0, 60.0, 5)
    t240, p240, q240 = simulate_truth(scenario, 6.0, 240.0, 5)
    np.testing.assert_allclose(t240[::4], t60, atol=1e-12)
    np.testing.assert_allclose(p240[::4], p60, atol=1e-9)
    np.testing.assert_allclose(quat.angle_between(q240[::4], q60), 0.0, atol=1e-9)


# --- every scenario: a valid, realistic take ----------------------------------------------

@pytest.mark.parametrize('scenario', SCENARIOS)
def test_scenario_take_is_well_formed(scenario):
    take = simulate(scenario, seconds=12.5, rate_hz=48.0, seed=11)
    n = 600
    assert take.scenario == scenario and take.rate_hz == 48.0
    assert take.t.shape == (n,) and take.truth_p.shape == take.noisy_p.shape == (n, 3)
    assert take.truth_q.shape == take.noisy_q.shape == (n, 4)
    assert take.spike.dtype == take.relocalized.dtype == bool
    np.testing.assert_allclose(np.diff(take.t), 1.0 / 48.0, rtol=1e-9)
    assert take.t[0] == 0.0 and take.t[-1] == pytest.approx(12.5 - 1.0 / 48.0)
    for array in _take_arrays(take):
        assert np.all(np.isfinite(array))
    for q in (take.truth_q, take.noisy_q):
        np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    assert np.all(np.sum(take.truth_q[1:] * take.truth_q[:-1], axis=1) > 0.0)  # continuous


@pytest.mark.parametrize('scenario', SCENARIOS)
def test_scenario_motion_is_physically_plausible(scenario):
    t, p, q = simulate_truth(scenario, 60.0, 100.0, 2)
    speed, rate = _speeds(t, p, q)
    assert 0.3 < p[:, 2].min() and p[:, 2].max() < 4.5     # camera height, m
    assert np.all(np.abs(p[:, :2]) < 15.0)                 # stays on a stage
    assert speed.max() < 2.5                               # m/s
    assert rate.max() < (900.0 if scenario == 'whip_pan' else 120.0)  # deg/s
    if scenario != 'locked_off':
        assert rate.max() > 5.0 or speed.max() > 0.2


def test_locked_off_truth_is_constant():
    t, p, q = simulate_truth('locked_off', 10.0, 240.0, 9)
    np.testing.assert_array_equal(p, np.broadcast_to(p[0], p.shape))
    np.testing.assert_array_equal(q, np.broadcast_to(q[0], q.shape))
    assert 1.2 < p[0, 2] < 1.8


@pytest.mark.parametrize('scenario, low, high', [
    ('pan', 10.0, 61.0), ('tilt', 8.0, 41.0), ('whip_pan', 290.0, 801.0)])
def test_pans_and_tilts_reach_their_operating_speeds_between_holds(scenario, low, high):
    t, p, q = simulate_truth(scenario, 60.0, 200.0, 6)
    speed, rate = _speeds(t, p, q)
    assert low < rate.max() < high
    still = still_steps(t, p, q)
    assert 0.2 < still.mean() < 0.95


def test_pan_rotates_about_the_vertical_only():
    t, p, q = simulate_truth('pan', 30.0, 60.0, 3)
    yaw, pitch, roll = Rotation.from_quat(q).as_euler('ZYX').T
    assert np.ptp(np.unwrap(yaw)) > np.radians(15.0)
    assert np.ptp(pitch) < 1e-12 and np.ptp(roll) < 1e-12


def test_dolly_has_still_sections_and_moves_along_a_line():
    t, p, q = simulate_truth('dolly', 60.0, 120.0, 8)
    still = still_steps(t, p, q)
    assert 0.15 < still.mean() < 0.85
    speed, rate = _speeds(t, p, q)
    assert 0.25 < speed.max() < 1.1
    assert rate.max() < 10.0
    # The track is a straight line: the pivot path has one dominant direction.
    singular = np.linalg.svd(p[:, :2] - p[:, :2].mean(axis=0), compute_uv=False)
    assert singular[1] < 0.05 * singular[0]
    assert np.ptp(p[:, 2]) < 0.01


def test_crane_arcs_in_height_while_tilting():
    t, p, q = simulate_truth('crane', 60.0, 60.0, 4)
    assert np.ptp(p[:, 2]) > 0.5
    pitch = Rotation.from_quat(q).as_euler('ZYX')[:, 1]
    assert np.ptp(pitch) > np.radians(5.0)
    assert np.corrcoef(p[:, 2], pitch)[0, 1] > 0.8  # higher camera looks further down


def test_orbit_circles_the_subject_and_keeps_looking_at_it():
    t, p, q = simulate_truth('orbit', 60.0, 60.0, 5)
    centre = p[:, :2].mean(axis=0)
    bearing = np.unwrap(np.arctan2(p[:, 1] - centre[1], p[:, 0] - centre[0]))
    assert np.ptp(bearing) > np.pi
    forward = Rotation.from_quat(q).apply([1.0, 0.0, 0.0])[:, :2]
    inward = centre - p[:, :2]
    cosine = np.sum(forward * inward, axis=1) / (
        np.linalg.norm(forward, axis=1) * np.linalg.norm(inward, axis=1))
    assert np.median(cosine) > 0.95


def test_handheld_truth_carries_8_to_12_hz_operator_tremor():
    rate = 120.0
    t, p, q = simulate_truth('handheld', 60.0, rate, 3)
    angles = np.unwrap(Rotation.from_quat(q).as_euler('ZYX'), axis=0)
    highpass = signal.butter(4, 5.0, 'highpass', fs=rate, output='sos')
    for values, lo, hi in ((p * 1e3, 0.1, 3.0), (np.degrees(angles), 0.01, 0.15)):
        shake = signal.sosfiltfilt(highpass, values, axis=0)
        f, psd = signal.welch(shake, fs=rate, nperseg=512, axis=0)
        band = (f >= 8.0) & (f <= 12.0)
        assert np.all(psd[band].sum(axis=0) > 0.6 * psd[f > 5.0].sum(axis=0))
        assert np.all((lo < shake.std(axis=0)) & (shake.std(axis=0) < hi))


def test_steadicam_bobs_gently_at_walking_step_frequency():
    rate = 60.0
    t, p, q = simulate_truth('steadicam', 120.0, rate, 1)
    z = signal.sosfiltfilt(signal.butter(2, 0.6, 'highpass', fs=rate, output='sos'), p[:, 2])
    f, psd = signal.welch(z, fs=rate, nperseg=1024)
    assert 0.8 <= f[np.argmax(psd)] <= 2.2
    assert z.std() < 0.01
    speed, rate_deg = _speeds(t, p, q)
    assert 0.5 < speed.max() < 1.6
    assert np.percentile(rate_deg, 90) < 30.0


# --- tracker noise -------------------------------------------------------------------

def test_white_noise_matches_the_configured_sigma():
    noise = TrackerNoise(pos_sigma_m=0.002, rot_sigma_deg=0.05)
    take = simulate('locked_off', seconds=100.0, rate_hz=100.0, seed=1, noise=noise)
    np.testing.assert_allclose((take.noisy_p - take.truth_p).std(axis=0), 0.002, rtol=0.05)
    np.testing.assert_allclose(np.degrees(_error_rotvec(take)).std(axis=0), 0.05, rtol=0.05)
    assert not take.spike.any() and not take.relocalized.any()


def test_no_noise_preset_reports_the_truth():
    take = simulate('orbit', seconds=5.0, seed=2, noise=NOISE_PRESETS['none'])
    np.testing.assert_allclose(take.noisy_p, take.truth_p, atol=1e-15)
    np.testing.assert_allclose(quat.angle_between(take.noisy_q, take.truth_q), 0.0, atol=1e-7)


def test_drift_is_a_random_walk_of_the_configured_size():
    noise = TrackerNoise(pos_sigma_m=0.0, rot_sigma_deg=0.0, drift_pos_m=0.001,
                         drift_rot_deg=0.01)
    rate = 100
    take = simulate('locked_off', seconds=200.0, rate_hz=rate, seed=3, noise=noise)
    err_p = take.noisy_p - take.truth_p
    err_r = np.degrees(_error_rotvec(take))
    np.testing.assert_allclose(err_p[0], 0.0, atol=1e-15)
    # Change over 1 s has the configured std; over 4 s twice that.
    np.testing.assert_allclose((err_p[rate:] - err_p[:-rate]).std(), 0.001, rtol=0.1)
    np.testing.assert_allclose((err_p[4 * rate:] - err_p[:-4 * rate]).std(), 0.002, rtol=0.2)
    np.testing.assert_allclose((err_r[rate:] - err_r[:-rate]).std(), 0.01, rtol=0.1)


def test_spikes_arrive_at_the_configured_rate_and_are_flagged():
    noise = TrackerNoise(pos_sigma_m=0.0001, rot_sigma_deg=0.001, spike_rate_hz=2.0,
                         spike_m=0.05, spike_deg=1.0)
    take = simulate('dolly', seconds=100.0, rate_hz=100.0, seed=4, noise=noise)
    count = take.spike.sum()
    assert abs(count - 200) < 4 * np.sqrt(200)
    assert not np.any(take.spike[1:] & take.spike[:-1])  # isolated
    err_mm = np.linalg.norm(take.noisy_p - take.truth_p, axis=1) * 1e3
    err_deg = np.degrees(np.linalg.norm(_error_rotvec(take), axis=1))
    np.testing.assert_allclose(err_mm[take.spike], 50.0, atol=1.0)
    np.testing.assert_allclose(err_deg[take.spike], 1.0, atol=0.02)
    assert err_mm[~take.spike].max() < 1.0 and err_deg[~take.spike].max() < 0.01


def test_spikes_stay_isolated_even_at_a_high_rate():
    take = simulate('pan', seconds=10.0, rate_hz=100.0, seed=4,
                    noise=TrackerNoise(spike_rate_hz=60.0))
    assert take.spike.mean() > 0.15
    assert not np.any(take.spike[1:] & take.spike[:-1])


def test_dropouts_remove_rows_from_noisy_and_truth_alike():
    rate, seconds, seed = 100.0, 100.0, 5
    clean = simulate('handheld', seconds=seconds, rate_hz=rate, seed=seed, noise=QUIET)
    noise = TrackerNoise(pos_sigma_m=0.0, rot_sigma_deg=0.0, dropout_rate=0.1)
    take = simulate('handheld', seconds=seconds, rate_hz=rate, seed=seed, noise=noise)
    rows = np.round(take.t * rate).astype(int)
    np.testing.assert_allclose(take.t, rows / rate, atol=1e-12)
    assert np.all(np.diff(rows) > 0)
    assert abs(1.0 - len(rows) / len(clean.t) - 0.1) < 0.02
    assert np.any(np.diff(rows) > 2)                       # bursts of missing frames
    np.testing.assert_array_equal(take.truth_p, clean.truth_p[rows])
    np.testing.assert_array_equal(take.truth_q, clean.truth_q[rows])
    np.testing.assert_array_equal(take.noisy_p, clean.noisy_p[rows])


def test_stamp_jitter_moves_stamps_but_keeps_them_increasing_and_the_truth():
    rate = 240.0
    clean = simulate('whip_pan', seconds=20.0, rate_hz=rate, seed=6, noise=QUIET)
    noise = TrackerNoise(pos_sigma_m=0.0, rot_sigma_deg=0.0, stamp_jitter_s=0.0005)
    take = simulate('whip_pan', seconds=20.0, rate_hz=rate, seed=6, noise=noise)
    assert np.all(np.diff(take.t) > 0.0)
    shift = take.t - clean.t
    np.testing.assert_allclose(shift.std(), 0.0005, rtol=0.1)
    assert np.abs(shift).max() <= 0.45 / rate + 1e-12
    # The truth row is the pose at the true capture time, stored at the jittered stamp.
    np.testing.assert_array_equal(take.truth_p, clean.truth_p)
    np.testing.assert_array_equal(take.truth_q, clean.truth_q)


def test_freed_quantisation_puts_poses_on_the_freed_grid():
    noise = TrackerNoise(freed_quantize=True)
    take = simulate('crane', seconds=10.0, seed=7, noise=noise)
    steps = take.noisy_p * 64000.0                          # 1/64 mm
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
    angles = np.degrees(Rotation.from_quat(take.noisy_q).as_euler('ZYX')) * 32768.0
    np.testing.assert_allclose(angles, np.round(angles), atol=1e-4)
    plain = simulate('crane', seconds=10.0, seed=7)
    assert np.abs(take.noisy_p - plain.noisy_p).max() <= 0.5 / 64000.0 + 1e-12
    unquantised = plain.noisy_p * 64000.0
    assert np.abs(unquantised - np.round(unquantised)).max() > 0.1


def test_relocalisation_adds_a_persistent_flagged_offset():
    noise = TrackerNoise(pos_sigma_m=0.0, rot_sigma_deg=0.0, relocalize_rate_hz=0.1,
                         relocalize_jump_m=0.3)
    take = simulate('steadicam', seconds=100.0, rate_hz=50.0, seed=8, noise=noise)
    offset = take.noisy_p - take.truth_p
    steps = np.linalg.norm(np.diff(offset, axis=0), axis=1)
    jumps = np.flatnonzero(steps > 1e-9) + 1
    np.testing.assert_array_equal(np.flatnonzero(take.relocalized), jumps)
    assert 3 <= len(jumps) <= 25
    np.testing.assert_allclose(steps[jumps - 1], 0.3, rtol=1e-9)
    np.testing.assert_allclose(offset[0], 0.0, atol=1e-15)
    np.testing.assert_allclose(offset[-1], offset[jumps[-1]], atol=1e-12)  # persists


def test_relocalisation_flag_moves_to_the_next_kept_frame_after_a_dropout():
    noise = TrackerNoise(pos_sigma_m=0.0, rot_sigma_deg=0.0, relocalize_rate_hz=0.5,
                         relocalize_jump_m=0.2, dropout_rate=0.4)
    take = simulate('dolly', seconds=100.0, rate_hz=50.0, seed=9, noise=noise)
    offset = take.noisy_p - take.truth_p
    changed = np.r_[False, np.linalg.norm(np.diff(offset, axis=0), axis=1) > 1e-9]
    np.testing.assert_array_equal(take.relocalized, changed)
    assert take.relocalized.sum() > 10


def test_add_tracker_noise_works_on_any_trajectory():
    t = np.cumsum(np.full(300, 0.01)) + 5.0
    p = np.column_stack([np.sin(t), np.cos(t), np.full_like(t, 1.5)])
    q = Rotation.from_euler('z', t[:, None]).as_quat()
    take = add_tracker_noise(t, p, q, NOISE_PRESETS['stress'], seed=1)
    assert take.scenario == '' and take.rate_hz == pytest.approx(100.0)
    assert np.all(np.diff(take.t) > 0.0) and len(take.t) < 300
    np.testing.assert_allclose(np.linalg.norm(take.noisy_q, axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize('name', sorted(NOISE_PRESETS))
def test_presets_are_ordered_by_noise_level(name):
    take = simulate('pan', seconds=30.0, rate_hz=60.0, seed=1, noise=NOISE_PRESETS[name])
    err_mm = np.linalg.norm(take.noisy_p - take.truth_p, axis=1) * 1e3
    median = float(np.median(err_mm))
    limits = {'none': (0.0, 1e-9), 'optical_fine': (0.04, 0.12), 'quiet_optical': (0.1, 0.6),
              'default': (0.4, 1.2), 'optical': (0.4, 1.2), 'inside_out': (1.0, 6.0),
              'stress': (0.8, 3.0)}
    assert limits[name][0] <= median <= limits[name][1]


# --- bad arguments ---------------------------------------------------------------------

def test_unknown_scenario_names_the_valid_ones():
    with pytest.raises(ValueError, match='unknown scenario .*walk.*valid scenarios: '
                                         'locked_off, pan.*steadicam'):
        simulate('walk')


@pytest.mark.parametrize('rate', [0.0, 0.5, 1000.5, -60.0, float('nan'), float('inf'), '60'])
def test_rate_outside_1_to_1000_hz_is_rejected(rate):
    with pytest.raises(ValueError, match='rate_hz must be between 1 and 1000 Hz'):
        simulate_truth('pan', 10.0, rate, 0)


@pytest.mark.parametrize('seconds', [0.0, -1.0, float('nan'), float('inf'), None])
def test_non_positive_duration_is_rejected(seconds):
    with pytest.raises(ValueError, match='seconds must be a finite duration > 0'):
        simulate('pan', seconds=seconds)


def test_take_shorter_than_two_frames_is_rejected():
    with pytest.raises(ValueError, match='fewer than 2 frames'):
        simulate('pan', seconds=0.01, rate_hz=60.0)


@pytest.mark.parametrize('seed', [-1, 1.5, 'a', True])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match='seed must be an integer >= 0'):
        simulate('pan', seconds=1.0, seed=seed)


@pytest.mark.parametrize('field, value', [
    ('pos_sigma_m', -0.001), ('rot_sigma_deg', float('nan')), ('spike_rate_hz', float('inf')),
    ('stamp_jitter_s', '0.001'), ('dropout_rate', -0.1)])
def test_bad_noise_field_is_rejected(field, value):
    with pytest.raises(ValueError, match=f'TrackerNoise.{field} must be a finite number >= 0'):
        TrackerNoise(**{field: value})


def test_dropout_rate_above_one_half_is_rejected():
    with pytest.raises(ValueError, match='dropout_rate must be at most 0.5'):
        TrackerNoise(dropout_rate=0.6)


def test_freed_quantize_must_be_a_bool():
    with pytest.raises(ValueError, match='freed_quantize must be true or false'):
        TrackerNoise(freed_quantize='yes')


def test_noise_must_be_a_tracker_noise():
    with pytest.raises(ValueError, match='noise must be a TrackerNoise'):
        simulate('pan', seconds=1.0, noise='stress')


@pytest.mark.parametrize('t, p, q, message', [
    (np.arange(3.0), np.zeros((3, 3)), np.zeros((3, 4)) + [0, 0, 0, 1], None),
    ([0.0, 1.0, 1.0], np.zeros((3, 3)), np.zeros((3, 4)) + [0, 0, 0, 1],
     'strictly increasing'),
    (np.arange(3.0), np.zeros((2, 3)), np.zeros((3, 4)) + [0, 0, 0, 1], 'shapes'),
    (np.arange(3.0), np.full((3, 3), np.nan), np.zeros((3, 4)) + [0, 0, 0, 1], 'finite'),
    (np.arange(3.0), np.zeros((3, 3)), np.zeros((3, 4)), 'zero-length'),
    ([0.0], np.zeros((1, 3)), np.zeros((1, 4)) + [0, 0, 0, 1], 'at least 2 stamps'),
])
def test_add_tracker_noise_rejects_bad_trajectories(t, p, q, message):
    if message is None:  # the valid row: proves the other rows fail for their own reason
        assert len(add_tracker_noise(t, p, q, TrackerNoise(), 0).t) == 3
        return
    with pytest.raises(ValueError, match=message):
        add_tracker_noise(t, p, q, TrackerNoise(), 0)


def test_coloured_noise_is_ar1_with_its_stationary_std_and_correlation_time():
    noise = TrackerNoise(pos_sigma_m=0.0, rot_sigma_deg=0.0, coloured_pos_m=0.002,
                         coloured_rot_deg=0.05, coloured_time_s=0.25)
    take = simulate('locked_off', seconds=240.0, rate_hz=100.0, seed=4, noise=noise)
    err = take.noisy_p - take.truth_p
    assert np.std(err, axis=0) == pytest.approx([0.002] * 3, rel=0.15)
    lag1 = np.mean([np.corrcoef(err[:-1, i], err[1:, i])[0, 1] for i in range(3)])
    assert lag1 == pytest.approx(np.exp(-0.01 / 0.25), abs=0.01)
    rot = np.degrees(quat.angle_between(take.noisy_q, take.truth_q))
    assert np.sqrt(np.mean(rot ** 2)) == pytest.approx(0.05 * np.sqrt(3), rel=0.15)
