"""FrameClock: stabilised poses resampled onto the video frame instants."""
from fractions import Fraction
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.frame_clock import (FrameClock, MAX_CATCH_UP, parse_output_rate, SPECS)
from camstab_ros.core.params import ParameterError
import numpy as np
import pytest
from scipy.spatial.transform import Rotation


# FreeD's quantisation: 1/64 mm in position, 1/32768 deg in angle.
FREED_MM = 1.0 / 64.0
FREED_DEG = 1.0 / 32768.0


def smooth_pose(t):
    """Return the analytic pose (p (N, 3), q (N, 4)) of a smooth move with a 30 deg/s pan."""
    t = np.atleast_1d(np.asarray(t, dtype=float))
    p = np.column_stack([0.5 * np.sin(0.7 * t), 0.3 * np.cos(0.4 * t),
                         1.5 + 0.1 * np.sin(0.3 * t)])
    angles = np.column_stack([np.radians(30.0) * t, np.radians(5.0) * np.sin(0.5 * t)])
    return p, Rotation.from_euler('zy', angles).as_quat()


def irregular_stamps(start, seconds, rate_hz, seed=0):
    """Return stamps at about rate_hz from start, each interval off by up to 30%."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    return start + (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / rate_hz


def stream(clock, t, p, q, tags=None):
    """Add each sample and call due(now) at its stamp; return [(now, FramePose)]."""
    released = []
    for i in range(len(t)):
        clock.add(t[i], p[i], q[i], i if tags is None else tags[i])
        released += [(t[i], frame) for frame in clock.due(t[i])]
    return released


def pose_errors(frames):
    """Return the largest position (mm) and angle (deg) errors of frames vs smooth_pose."""
    truth_p, truth_q = smooth_pose([f.t for f in frames])
    p = np.array([f.position for f in frames])
    q = np.array([f.quaternion for f in frames])
    return (1e3 * np.max(np.linalg.norm(p - truth_p, axis=1)),
            np.degrees(np.max(quat.angle_between(q, truth_q))))


@pytest.mark.parametrize('text, rate', [
    ('input', None), (' Input ', None),
    ('24000/1001', Fraction(24000, 1001)), ('30000/1001', Fraction(30000, 1001)),
    ('25', Fraction(25)), ('50', Fraction(50)), ('1', Fraction(1)), ('1000', Fraction(1000)),
    ('23.976', Fraction(24000, 1001)), ('23.98', Fraction(24000, 1001)),
    ('29.97', Fraction(30000, 1001)), ('47.952', Fraction(48000, 1001)),
    ('59.94', Fraction(60000, 1001)), ('119.88', Fraction(120000, 1001)),
    ('12.5', Fraction(25, 2)), ('30.0', Fraction(30)), ('29.970', Fraction(30000, 1001)),
    ('24.0001', Fraction('24.0001').limit_denominator(1001)),
])
def test_parse_output_rate_accepts_input_ratios_integers_and_decimals(text, rate):
    parsed = parse_output_rate(text)
    assert parsed == rate
    assert parsed is None or isinstance(parsed, Fraction)


@pytest.mark.parametrize('text', ['', '  ', 'abc', '0', '-25', '1/0', 'nan', 'inf', '5000',
                                  '0.5', '1000.5', '25 fps', '24000/1001.0', 'None'])
def test_parse_output_rate_refuses_anything_else_with_one_clear_line(text):
    with pytest.raises(ValueError) as error:
        parse_output_rate(text)
    message = str(error.value)
    assert '\n' not in message and repr(text) in message
    assert "'input'" in message and '24000/1001' in message and '1000 fps' in message


def test_specs_are_the_three_ros_parameters_with_their_defaults_and_ranges():
    assert list(SPECS) == ['output_rate', 'output_delay_frames', 'max_extrapolation_s']
    assert SPECS['output_rate'].default == 'input'
    assert SPECS['output_rate'].coerce('output_rate', '24000/1001') == '24000/1001'
    with pytest.raises(ParameterError, match='output_rate'):
        SPECS['output_rate'].coerce('output_rate', '5000')
    delay = SPECS['output_delay_frames']
    assert (delay.default, delay.low, delay.high, delay.unit) == (1.0, 0.0, 10.0, 'frames')
    with pytest.raises(ParameterError):
        delay.coerce('output_delay_frames', 10.5)
    limit = SPECS['max_extrapolation_s']
    assert (limit.default, limit.low, limit.high, limit.unit) == (0.02, 0.0, 0.5, 's')
    with pytest.raises(ParameterError):
        limit.coerce('max_extrapolation_s', -0.01)


def test_240hz_stream_at_25fps_gives_one_exact_pose_per_frame_and_nothing_early():
    rate, delay = 25, 1.0
    t = irregular_stamps(100.013, 6.0, 240.0)
    p, q = smooth_pose(t)
    clock = FrameClock(Fraction(rate), delay_frames=delay)
    assert clock.next_due() is None and clock.due(1e12) == []
    first = math.ceil(Fraction(t[0]) * rate)
    first_release = (first + delay) / rate
    released = []
    history = []
    for i in range(len(t)):
        clock.add(t[i], p[i], q[i], i)
        out = clock.due(t[i])
        released += [(i, frame) for frame in out]
        history.append(len(clock._samples))
        if t[i] < first_release:
            assert out == []
        next_frame = released[-1][1].t + 1 / rate if released else first / rate
        assert clock.next_due() == pytest.approx(next_frame + delay / rate, abs=1e-9)
    frames = [frame for _, frame in released]
    last = math.floor(Fraction(t[-1]) * rate - 1)
    assert [f.t for f in frames] == [k / rate for k in range(first, last + 1)]
    assert frames[0].t >= t[0]
    assert clock.counts['frames'] == len(frames) == last - first + 1
    for i, frame in released:
        # Released by the first call at or after its release time, not before.
        assert t[i - 1] < frame.t + delay / rate <= t[i]
    assert all(f.extrapolated_s == 0.0 for f in frames)
    assert [f.tag for f in frames] == [np.searchsorted(t, f.t, 'right') - 1 for f in frames]
    error_mm, error_deg = pose_errors(frames)
    assert error_mm < FREED_MM and error_deg < FREED_DEG
    # The history stays bounded: the samples since the next frame instant, two before.
    assert max(history) <= 24
    assert {k: v for k, v in clock.counts.items() if k != 'frames'} == dict.fromkeys(
        ['extrapolated', 'extrapolation_limited', 'stale', 'skipped', 'out_of_order',
         'invalid', 'restarts'], 0)


def test_ntsc_grid_has_no_drift_over_an_hour_of_ptp_stamps():
    rate = Fraction(24000, 1001)
    start = 1.7e9 + 0.0123
    t = start + np.arange(int(3600 * 12.5) + 1) / 12.5
    velocity = np.array([0.1, -0.05, 0.02])
    clock = FrameClock(rate)
    frames = []
    for i in range(len(t)):
        clock.add(t[i], velocity * (t[i] - start), quat.IDENTITY)
        frames += clock.due(t[i])
    first = math.ceil(Fraction(start) * 24000 / 1001)
    ks = range(first, first + len(frames))
    assert len(frames) > 3600 * 23.976 - 3
    assert [f.t for f in frames] == [float(Fraction(k * 1001, 24000)) for k in ks]
    assert [f.t for f in frames] == [k * 1001 / 24000 for k in ks]
    # A clock that adds 1001/24000 s per frame is microseconds off after an hour.
    naive = frames[0].t
    for _ in range(len(frames) - 1):
        naive += 1001 / 24000
    assert abs(naive - frames[-1].t) > 1e-6
    position = np.array([f.position for f in frames])
    offset = np.array([f.t - start for f in frames])
    np.testing.assert_allclose(position, velocity * offset[:, None], rtol=0, atol=1e-9)


def constant_velocity_pose(t):
    """Return the pose (p, q) of a constant-velocity move (constant body rate) at t."""
    dt = np.atleast_1d(np.asarray(t, dtype=float)) - 10.0
    p = np.array([1.0, 2.0, 1.5]) + dt[:, None] * [0.3, -0.2, 0.05]
    r = Rotation.from_euler('zyx', [0.3, -0.1, 0.05]) * Rotation.from_rotvec(
        dt[:, None] * [0.1, 0.2, 0.5])
    return p, r.as_quat()


def test_late_data_is_extrapolated_then_limited_then_not_sent():
    rate, limit, stale = 50, 0.1, 0.5
    t = 10.003 + np.arange(201) / 100.0
    t_end = t[-1]
    p, q = constant_velocity_pose(t)
    clock = FrameClock(Fraction(rate), delay_frames=1.0, max_extrapolation_s=limit,
                       stale_s=stale)
    frames = [f for _, f in stream(clock, t, p, q)]
    covered = len(frames)
    for now in t_end + np.arange(1, 1000) / 1000.0:
        frames += clock.due(now)
    late = [f for f in frames[covered:] if f.t > t_end]
    assert all(f.extrapolated_s == 0.0 for f in frames if f.t <= t_end)
    extrapolated = [f for f in late if f.t - t_end <= limit]
    limited = [f for f in late if f.t - t_end > limit]
    assert len(extrapolated) == 5 and len(limited) == 20
    assert max(f.t for f in late) - t_end <= stale
    last_released = math.floor((t_end + 0.999) * rate - 1.0)
    first_stale = math.floor((t_end + stale) * rate) + 1
    assert clock.counts['extrapolated'] == 25
    assert clock.counts['extrapolation_limited'] == 20
    assert clock.counts['stale'] == last_released - first_stale + 1 == 24
    assert [f.t for f in frames] == [k / rate for k in range(
        math.ceil(t[0] * rate), first_stale)]
    for frame in late:
        assert frame.extrapolated_s == pytest.approx(frame.t - t_end, abs=1e-12)
        assert frame.tag == len(t) - 1
        target = min(frame.t, t_end + limit)
        truth_p, truth_q = constant_velocity_pose(target)
        np.testing.assert_allclose(frame.position, truth_p[0], rtol=0, atol=1e-9)
        assert quat.angle_between(frame.quaternion, truth_q[0]) < 1e-9


def test_quaternion_sign_flips_give_the_same_output():
    t = irregular_stamps(3.0, 2.0, 240.0, seed=3)
    p, q = smooth_pose(t)
    flipped = q * np.where(np.arange(len(t)) % 2 == 1, -1.0, 1.0)[:, None]
    flipped[5::7] *= -1.0
    outputs = []
    for quaternions in (q, flipped):
        clock = FrameClock(Fraction(30000, 1001), max_extrapolation_s=0.05)
        frames = [f for _, f in stream(clock, t, p, quaternions)]
        for now in t[-1] + np.arange(1, 40) / 240.0:
            frames += clock.due(now)
        outputs.append(frames)
    plain, signed = outputs
    assert [f.t for f in plain] == [f.t for f in signed]
    assert sum(f.extrapolated_s > 0 for f in signed) >= 2
    np.testing.assert_allclose([f.position for f in signed], [f.position for f in plain],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose([f.quaternion for f in signed], [f.quaternion for f in plain],
                               rtol=0, atol=1e-12)
    covered = [f for f in signed if f.extrapolated_s == 0.0]
    assert pose_errors(covered)[1] < FREED_DEG


def test_out_of_order_and_invalid_samples_are_ignored_and_counted():
    t = 0.004 + np.arange(100) / 100.0
    p, q = constant_velocity_pose(t)
    clean = FrameClock(25)
    expected = stream(clean, t, p, q)
    clock = FrameClock(25)
    released = []
    for i in range(len(t)):
        assert clock.add(t[i], p[i], q[i], i)
        if i in (10, 50):
            assert not clock.add(t[i], p[i] + 1.0, q[i], 'repeat')
            assert not clock.add(t[i - 3], p[i] + 1.0, q[i], 'backwards')
            assert not clock.add(t[i] + 1e-4, [np.nan, 0.0, 0.0], q[i], 'nan')
            assert not clock.add(t[i] + 1e-4, p[i], [0.0, 0.0, 0.0, 0.0], 'zero')
            assert not clock.add(np.inf, p[i], q[i], 'inf')
        released += [(t[i], f) for f in clock.due(t[i])]
    assert clock.counts['out_of_order'] == 4 and clock.counts['invalid'] == 6
    assert len(released) == len(expected) > 20
    for (now, frame), (expected_now, expected_frame) in zip(released, expected):
        assert (now, frame.t, frame.tag) == (expected_now, expected_frame.t, expected_frame.tag)
        np.testing.assert_array_equal(frame.position, expected_frame.position)
        np.testing.assert_array_equal(frame.quaternion, expected_frame.quaternion)
    with pytest.raises(ValueError):
        clock.add(2.0, [0.0, 0.0], quat.IDENTITY)


def test_reset_forgets_the_stream_and_keeps_the_counts():
    t = 50.002 + np.arange(100) / 100.0
    p, q = constant_velocity_pose(t)
    clock = FrameClock(25)
    stream(clock, t, p, q)
    clock.add(t[-3], p[10], q[10])
    counts = dict(clock.counts)
    assert counts['frames'] > 0 and counts['out_of_order'] == 1
    clock.reset()
    assert clock.next_due() is None and clock.due(t[-1] + 10.0) == []
    assert clock.counts == counts
    # A restarted stream may start earlier: its first frame is its own.
    assert clock.add(1.01, p[0], q[0], 'new')
    assert clock.next_due() == pytest.approx(1.08)
    frames = clock.due(1.2)  # = 1.16 + 1 / 25 in floats
    # One sample, no velocity: the frames after it hold its pose.
    assert [f.t for f in frames] == [1.04, 1.08, 1.12, 1.16]
    assert {f.tag for f in frames} == {'new'}
    np.testing.assert_array_equal([f.position for f in frames], [p[0]] * 4)
    assert clock.counts['frames'] == counts['frames'] + 4
    assert clock.counts['extrapolation_limited'] == counts['extrapolation_limited'] + 4


def test_rare_due_calls_release_every_missed_frame_up_to_the_catch_up_bound():
    t = 0.005 + np.arange(6000) / 100.0
    p, q = constant_velocity_pose(t)
    clock = FrameClock(25, delay_frames=0.5)
    for i in range(200):
        clock.add(t[i], p[i], q[i], i)
    # 2 s of frames missed: every one still comes out, in order.
    frames = clock.due(t[199])
    assert [f.t for f in frames] == [k / 25 for k in range(1, math.floor(t[199] * 25 - 0.5) + 1)]
    for i in range(200, len(t)):
        clock.add(t[i], p[i], q[i], i)
    now = 60.0
    frames = clock.due(now)
    last = math.floor(now * 25 - 0.5)
    assert len(frames) == MAX_CATCH_UP
    assert [f.t for f in frames] == [k / 25 for k in range(last - MAX_CATCH_UP + 1, last + 1)]
    assert clock.counts['skipped'] == last - MAX_CATCH_UP - 49
    truth_p, truth_q = constant_velocity_pose([f.t for f in frames])
    np.testing.assert_allclose([f.position for f in frames], truth_p, rtol=0, atol=1e-9)
    assert np.max(quat.angle_between([f.quaternion for f in frames], truth_q)) < 1e-9
    assert clock.next_due() == pytest.approx((last + 1.5) / 25)


def test_a_gap_longer_than_stale_s_is_never_interpolated_across():
    t = np.concatenate([0.005 + np.arange(100) / 100.0, 3.005 + np.arange(100) / 100.0])
    p, q = constant_velocity_pose(t)
    clock = FrameClock(25, stale_s=0.5)
    for i in range(len(t)):
        clock.add(t[i], p[i], q[i], i)
    frames = clock.due(t[-1])
    gap = [f for f in frames if t[99] < f.t < t[100]]
    # Beyond the data before the gap: extrapolated up to the limit, then not sent.
    assert [f.t for f in gap] == [k / 25 for k in range(25, 38)]
    assert all(f.tag == 99 and f.extrapolated_s == pytest.approx(f.t - t[99]) for f in gap)
    held_p, _ = constant_velocity_pose(t[99] + 0.02)
    np.testing.assert_allclose(gap[-1].position, held_p[0], rtol=0, atol=1e-9)
    assert clock.counts['stale'] == len(range(38, 76))  # 1.52 .. 3.00
    after = [f for f in frames if f.t > t[100]]
    assert after[0].t == 3.04 and all(f.extrapolated_s == 0.0 for f in after)
    truth_p, _ = constant_velocity_pose([f.t for f in after])
    np.testing.assert_allclose([f.position for f in after], truth_p, rtol=0, atol=1e-9)


def test_stamps_stepping_back_beyond_a_stale_gap_restart_the_clock():
    t = 50.002 + np.arange(100) / 100.0
    p, q = constant_velocity_pose(t)
    clock = FrameClock(25)
    stream(clock, t, p, q)
    restarted = 3.0 + np.arange(50) / 100.0  # the tracker rebooted: a new clock
    frames = [frame for _, frame in stream(clock, restarted, p[:50], q[:50])]
    assert clock.counts['restarts'] == 1 and clock.counts['out_of_order'] == 0
    assert frames and frames[0].t == 3.0 and all(3.0 <= f.t <= restarted[-1] for f in frames)
