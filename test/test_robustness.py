"""
Tests of the pipeline against a hostile tracker: nothing crashes, freezes or goes silent.

Covered: overflowing quaternions, absurd positions, stamps in the future, clock steps
back, a wrong first frame, a diverging filter, a smoother that raises, and the invariant
received = published + pending + drops by reason after every sequence.
"""
from camstab_ros.core import stabilizer as st
from camstab_ros.core.methods import causal_methods, make_smoother
from camstab_ros.core.smoother import Estimate, Smoother
from camstab_ros.core.validation import MeasurementValidator, unit_quaternion
from helpers import moving_take
import numpy as np
import pytest


RATE_HZ = 240.0
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def good_stream(n=480, start=100.0, seed=3):
    """Return (t, p, q) of a seeded move at RATE_HZ starting at stamp `start`."""
    t, _, _, p, q = moving_take(n, rate_hz=RATE_HZ, seed=seed)
    return t + start, p, q


def run(stabilizer, rows, clock=None):
    """
    Feed rows (t, p, q, frame), clock[i] the receiver's time of row i (or none).

    Returns the tags of the outputs, in order.
    """
    tags = []
    for i, (t, p, q, frame) in enumerate(rows):
        now = None if clock is None else clock[i]
        tags += [out.tag for out in stabilizer.process(t, p, q, i, frame, now)[1]]
    return tags


def rows_of(t, p, q, frame='world'):
    return [(ti, pi, qi, frame) for ti, pi, qi in zip(t, p, q)]


def assert_accounted(stabilizer):
    """Check received = published + pending + every drop, by reason."""
    dropped = sum(stabilizer.dropped_by_reason.values())
    assert stabilizer.received == stabilizer.published + stabilizer.pending + dropped, (
        stabilizer.received, stabilizer.published, stabilizer.pending,
        stabilizer.dropped_by_reason)


@pytest.mark.parametrize('q', [(1e200, 0.0, 0.0, 0.0), (1e300, 0.0, 0.0, 1e300),
                               (1e308, 1e308, -1e308, 1e308), (1e-200, 0.0, 0.0, 0.0)])
def test_an_overflowing_quaternion_never_reaches_the_smoother_broken(q):
    t, p, qs = good_stream(200)
    rows = rows_of(t, p, qs)
    rows[100] = (t[100], p[100], np.array(q), 'world')
    stabilizer = st.Stabilizer(make_smoother('kalman'))
    tags = run(stabilizer, rows)
    unit, norm = unit_quaternion(q)
    if norm < 1e-6:
        assert stabilizer.dropped_by_reason['zero_quaternion'] == 1 and 100 not in tags
    else:
        assert np.all(np.isfinite(unit)) and 100 in tags
        assert stabilizer.validator.renormalized == 1
    assert tags[-1] == 199 and stabilizer.dropped_by_reason['smoother_error'] == 0
    assert_accounted(stabilizer)


def test_absurd_positions_are_dropped_and_never_drag_the_output():
    t, p, q = good_stream(300)
    rows = rows_of(t, p, q)
    for i in range(100, 105):
        rows[i] = (t[i], np.array([1e300, 0.0, 0.0]), q[i], 'world')
    rows[150] = (t[150], np.array([0.0, -2e4, 0.0]), q[150], 'world')
    stabilizer = st.Stabilizer(make_smoother('kalman'))
    outputs = []
    for i, (ti, pi, qi, frame) in enumerate(rows):
        outputs += stabilizer.process(ti, pi, qi, i, frame)[1]
    assert stabilizer.dropped_by_reason['out_of_workspace'] == 6
    assert max(np.max(np.abs(o.position - p[o.tag])) for o in outputs) < 0.01
    assert_accounted(stabilizer)


def test_a_stamp_far_in_the_future_is_dropped_and_the_stream_goes_on():
    t, p, q = good_stream(int(RATE_HZ * 2))
    rows = rows_of(t, p, q)
    rows.insert(50, (t[49] + 1e6, p[49], q[49], 'world'))
    clock = np.insert(t, 50, t[49])
    stabilizer = st.Stabilizer(make_smoother('kalman'))
    tags = run(stabilizer, rows, clock)
    assert stabilizer.dropped_by_reason['stamp_in_future'] == 1
    assert len(tags) == len(t) and 50 not in tags
    assert stabilizer.pending == 0 and stabilizer.clock_steps == 0
    assert_accounted(stabilizer)


def test_a_tracker_clock_persistently_ahead_is_adopted_as_a_clock_step():
    t, p, q = good_stream(400)
    stabilizer = st.Stabilizer(make_smoother('one_euro'))
    tags = run(stabilizer, rows_of(t, p, q), t - 5.0)  # the tracker 5 s ahead of us
    assert stabilizer.clock_steps == 1
    assert stabilizer.dropped_by_reason['stamp_in_future'] == st.CLOCK_STEP_FRAMES - 1
    assert tags == list(range(st.CLOCK_STEP_FRAMES - 1, 400))
    assert_accounted(stabilizer)


@pytest.mark.parametrize('method', causal_methods())
def test_a_future_stamp_in_a_file_costs_at_most_a_clock_step(method):
    # Offline there is no clock: the future pose is a gap, then the stamps going back are
    # a clock step after CLOCK_STEP_FRAMES of them, and the take goes on.
    t, p, q = good_stream(300)
    rows = rows_of(t, p, q)
    rows.insert(100, (t[99] + 1e6, p[99], q[99], 'world'))
    stabilizer = st.Stabilizer(make_smoother(method))
    tags = run(stabilizer, rows) + [out.tag for out in stabilizer.finish()]
    assert stabilizer.clock_steps == 1
    assert tags[-1] == len(rows) - 1
    assert len(tags) == len(rows) - (st.CLOCK_STEP_FRAMES - 1)
    assert_accounted(stabilizer)


@pytest.mark.parametrize('pause', [True, False])
def test_a_tracker_clock_stepping_back_restarts_the_stream(pause):
    t, p, q = good_stream(400)
    t = t.copy()
    t[200:] -= 100.0                     # a reboot or a PTP step, 100 s back
    stabilizer = st.Stabilizer(make_smoother('kalman'))
    tags = run(stabilizer, rows_of(t[:200], p[:200], q[:200]))
    if pause:                            # the node's housekeeping during a 1.2 s pause
        stabilizer.idle(1.2)
    rows = rows_of(t[200:], p[200:], q[200:])
    tags += [200 + tag for tag in run(stabilizer, rows)]
    lost = 0 if pause else st.CLOCK_STEP_FRAMES - 1
    assert tags == list(range(200)) + list(range(200 + lost, 400))
    assert stabilizer.clock_steps == (0 if pause else 1)
    assert_accounted(stabilizer)


def test_a_wrong_first_frame_is_not_locked_in_forever():
    t, p, q = good_stream(600)
    rows = [(t[0] - 0.01, p[0], q[0], 'evil_frame')] + rows_of(t, p, q)
    stabilizer = st.Stabilizer(make_smoother('kalman'), dropout_timeout_s=0.5)
    tags = run(stabilizer, rows)
    assert stabilizer.frame_id == 'world' and stabilizer.frame_changes == 1
    # Measurements of `world` are dropped for dropout_timeout_s of their own stamps only.
    dropped = stabilizer.dropped_by_reason['wrong_frame_id']
    assert 0 < dropped <= 0.5 * RATE_HZ + 2
    assert tags[-1] == len(rows) - 1
    assert_accounted(stabilizer)


def test_a_pause_releases_the_frame_lock_but_an_explicit_frame_stays():
    t, p, q = good_stream(100)
    for frame, relocked in (('', True), ('world', False)):
        stabilizer = st.Stabilizer(make_smoother('ema'), frame_id=frame)
        run(stabilizer, rows_of(t[:50], p[:50], q[:50]))
        stabilizer.idle(1.0)
        reason, _ = stabilizer.process(t[60], p[60], q[60], 60, 'map')
        assert (reason is None) == relocked


class Diverging(Smoother):
    """A smoother gone wrong: its estimate runs away from the measurements."""

    name = 'diverging'

    def _reset(self):
        self._drift = 0.0

    def _update(self, t, position, quaternion):
        self._drift += 0.05
        return Estimate(t, position + self._drift, quaternion)


def test_a_diverging_estimate_is_pulled_back_within_reach_of_the_measurement():
    t, p, q = good_stream(300)
    stabilizer = st.Stabilizer(Diverging(), reset_jump_m=0.25)
    outputs = []
    for i in range(len(t)):
        outputs += stabilizer.process(t[i], p[i], q[i], i)[1]
    distance = np.array([np.linalg.norm(o.position - p[o.tag]) for o in outputs])
    limit = np.sqrt(3) * 0.05 * (0.25 / (np.sqrt(3) * 0.05) + st.REACH_FRAMES)
    assert distance.max() < limit
    assert stabilizer.reach_resets > 10 and len(outputs) == len(t)
    assert_accounted(stabilizer)


def test_random_jumps_of_a_hostile_tracker_leave_the_output_within_reach():
    # Random valid poses within FreeD's range, then a good stream: the filter must not
    # extrapolate from the chaos; after a few frames it is back on the measurements.
    rng = np.random.default_rng(1)
    t, p, q = good_stream(400)
    chaos = rng.uniform(-100.0, 100.0, (200, 3))
    positions = np.vstack([chaos, p[200:]])
    stabilizer = st.Stabilizer(make_smoother('kalman'))
    outputs = []
    for i in range(len(t)):
        outputs += stabilizer.process(t[i], positions[i], q[i], i)[1]
    good = [o for o in outputs if o.tag >= 200 + st.REACH_FRAMES]
    assert max(np.linalg.norm(o.position - positions[o.tag]) for o in good) < 0.25
    assert_accounted(stabilizer)


class Raising(Smoother):
    """A smoother with a bug: it raises on every 50th measurement."""

    name = 'raising'

    def _reset(self):
        self._count = 0

    def _update(self, t, position, quaternion):
        self._count += 1
        if self._count % 50 == 0:
            raise ZeroDivisionError('a bug in a smoother')
        return Estimate(t, position, quaternion)


def test_a_smoother_that_raises_is_reset_and_the_stream_goes_on():
    t, p, q = good_stream(300)
    stabilizer = st.Stabilizer(Raising())
    tags = run(stabilizer, rows_of(t, p, q))
    assert stabilizer.dropped_by_reason['smoother_error'] == 6
    assert stabilizer.last_error == 'ZeroDivisionError: a bug in a smoother'
    assert len(tags) == 300 - 6 and tags[-1] == 298  # rows 49, 99, ..., 299 raise
    assert_accounted(stabilizer)


@pytest.mark.parametrize('method', causal_methods())
def test_every_measurement_is_accounted_for_in_a_hostile_mix(method):
    rng = np.random.default_rng(7)
    t, p, q = good_stream(1200)
    rows = rows_of(t, p, q)
    for i in rng.choice(len(rows), 120, replace=False):
        kind = i % 6
        ti, pi, qi, _ = rows[i]
        rows[i] = [(ti, pi * np.nan, qi, 'world'), (ti, pi, qi * 0.0, 'world'),
                   (ti - 3.0, pi, qi, 'world'), (ti, pi + 1e6, qi, 'world'),
                   (ti, pi, qi, 'map'), (ti + 1e4, pi, qi, 'world')][kind]
    stabilizer = st.Stabilizer(make_smoother(method))
    tags = run(stabilizer, rows, t)
    assert_accounted(stabilizer)
    tags += [out.tag for out in stabilizer.finish()]
    assert stabilizer.pending == 0
    assert_accounted(stabilizer)
    assert tags == sorted(set(tags)) and len(tags) == stabilizer.published


def test_the_validator_rejects_what_no_tracker_can_report():
    v = MeasurementValidator(max_position_m=100.0)
    assert v.check(0.0, [99.0, -99.0, 0.0], [0, 0, 0, 1])[0] is None
    assert v.check(0.1, [0.0, 100.5, 0.0], [0, 0, 0, 1])[0] == 'out_of_workspace'
    assert v.check(0.1, [0.0, 0.0], [0, 0, 0, 1])[0] == 'non_finite'
    reason, unit = v.check(0.2, [0.0, 0.0, 0.0], [1e300, 0.0, 0.0, 1e300])
    assert reason is None and np.allclose(unit, [2 ** -0.5, 0, 0, 2 ** -0.5])
