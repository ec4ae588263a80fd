"""
Tests of the one pipeline (camstab_ros.core.stabilizer) and its parameter table.

Covered: one output per measurement, gap resets, method switches without a jump, and the
offline take path equal to the node's pose-by-pose path.
"""
import re

from camstab_ros.core import stabilizer as st
from camstab_ros.core.methods import causal_methods, list_methods, make_smoother, smoother_class
from camstab_ros.core.params import ParameterError
from camstab_ros.core.simulation import simulate
from helpers import moving_take
import numpy as np
import pytest


@pytest.fixture(scope='module')
def take():
    return simulate('dolly', seconds=12.0, rate_hz=60.0, seed=4)


def feed(stab, t, p, q, start=0, stop=None, frame='world'):
    outputs = []
    for i in range(start, len(t) if stop is None else stop):
        reason, released = stab.process(t[i], p[i], q[i], i, frame)
        assert reason is None
        outputs += released
    return outputs


def error_steps_mm(outputs, take):
    rows = np.array([o.tag for o in outputs])
    err = np.array([o.position for o in outputs]) - take.truth_p[rows]
    return np.linalg.norm(np.diff(err, axis=0), axis=1) * 1e3


def test_fixed_lag_emits_one_output_per_measurement_with_its_own_stamp(take):
    stab = st.Stabilizer(make_smoother('fixed_lag', delay_frames=5), dropout_timeout_s=0.5)
    outputs = feed(stab, take.t, take.noisy_p, take.noisy_q, stop=100)
    assert [o.tag for o in outputs] == list(range(95))  # five frames late
    assert [o.t for o in outputs] == list(take.t[:95])
    assert all(o.covariance.shape == (6, 6) for o in outputs)
    # A stream that stops: after dropout_timeout_s the held frames come out, then a reset.
    assert stab.idle(0.1) == []
    held = stab.idle(0.6)
    assert [o.tag for o in held] == list(range(95, 100))
    assert stab.stats.resets == 1
    assert stab.published == stab.received == 100
    assert len(stab.costs_us) == 100


@pytest.mark.parametrize('blend_s, jumps', [(1.0, False), (0.0, True)])
def test_switch_to_a_laggier_method_during_a_move_does_not_jump(take, blend_s, jumps):
    # Switch in the middle of the fastest move: a lagging filter sits centimetres behind.
    speed = np.linalg.norm(np.gradient(take.truth_p, take.t, axis=0), axis=1)
    k = int(np.argmax(speed[120:-120])) + 120
    assert speed[k] > 0.3  # m/s: the test needs a real move
    stab = st.Stabilizer(make_smoother('kalman'), dropout_timeout_s=0.5, blend_s=blend_s)
    outputs = feed(stab, take.t, take.noisy_p, take.noisy_q, stop=k)
    outputs += stab.switch(make_smoother('ema', time_constant_s=0.05, rot_time_constant_s=0.05))
    outputs += feed(stab, take.t, take.noisy_p, take.noisy_q, start=k)
    assert [o.tag for o in outputs] == list(range(len(take.t)))
    steps = error_steps_mm(outputs, take)
    noisy_steps = np.linalg.norm(np.diff(take.noisy_p - take.truth_p, axis=0), axis=1) * 1e3
    around = slice(k - 60, k + 90)
    if jumps:
        assert steps[around].max() > 5 * noisy_steps[around].max()
    else:
        # Never a bigger step than the raw tracker makes anyway.
        assert steps[around].max() < noisy_steps[around].max()
        assert stab.smoother.name == 'ema' and not stab.switching


@pytest.mark.parametrize('first, second', [('kalman', 'fixed_lag'), ('fixed_lag', 'kalman'),
                                           ('fixed_lag', 'one_euro')])
def test_switch_between_delays_keeps_one_output_per_measurement_in_order(take, first,
                                                                         second):
    stab = st.Stabilizer(make_smoother(first), dropout_timeout_s=0.5, blend_s=0.5)
    outputs = feed(stab, take.t, take.noisy_p, take.noisy_q, stop=200)
    outputs += stab.switch(make_smoother(second))
    outputs += feed(stab, take.t, take.noisy_p, take.noisy_q, start=200, stop=400)
    outputs += stab.idle(1.0)
    assert [o.tag for o in outputs] == list(range(400))
    steps = error_steps_mm(outputs, take)
    noisy_steps = np.linalg.norm(np.diff(take.noisy_p - take.truth_p, axis=0), axis=1) * 1e3
    assert steps[150:300].max() < noisy_steps[150:300].max()


def test_switch_keeps_counting_events_of_the_old_smoother(take):
    stab = st.Stabilizer(make_smoother('kalman'), dropout_timeout_s=0.5, blend_s=0.0)
    p = take.noisy_p.copy()
    p[50] += 1.0  # a one-frame outlier
    feed(stab, take.t, p, take.noisy_q, stop=100)
    assert stab.stats.outliers == 1
    stab.switch(make_smoother('kalman', process_noise=10.0))
    feed(stab, take.t, p, take.noisy_q, start=100, stop=200)
    assert stab.stats.outliers == 1  # the warm-up replay over the outlier is not recounted


def test_a_stamp_gap_resets_the_smoother(take):
    stab = st.Stabilizer(make_smoother('ema', time_constant_s=1.0), dropout_timeout_s=0.3)
    feed(stab, take.t, take.noisy_p, take.noisy_q, stop=30)
    t_late = take.t[29] + 2.0
    reason, outputs = stab.process(t_late, take.noisy_p[30], take.noisy_q[30], 30, 'world')
    assert reason is None and stab.stats.resets == 1
    # A fresh filter starts at the measurement itself; a 1 s EMA would still be far off.
    np.testing.assert_array_equal(outputs[0].position, take.noisy_p[30])


def test_bad_measurements_are_dropped_counted_and_never_output(take):
    stab = st.Stabilizer(make_smoother('passthrough'), dropout_timeout_s=0.5)
    t, p, q = take.t, take.noisy_p, take.noisy_q
    cases = [
        ((t[1], [np.nan, 0, 0], q[1], 'world'), 'non_finite'),
        ((t[1], p[1], [0.0, 0.0, 0.0, 0.0], 'world'), 'zero_quaternion'),
        ((t[0] - 1.0, p[1], q[1], 'world'), 'stamp_not_increasing'),
        ((t[0], p[1], q[1], 'world'), 'stamp_not_increasing'),
        ((t[1], p[1], q[1], 'map'), 'wrong_frame_id'),
        ((np.inf, p[1], q[1], 'world'), 'non_finite'),
    ]
    assert stab.process(t[0], p[0], q[0], 'first', 'world')[0] is None
    assert stab.frame_id == 'world'  # locked to the first pose's frame
    for (ti, pi, qi, frame), expected in cases:
        reason, outputs = stab.process(ti, pi, qi, 'bad', frame)
        assert (reason, outputs) == (expected, [])
    reason, outputs = stab.process(t[1], p[1], q[1], 'second', 'world')
    assert reason is None and [o.tag for o in outputs] == ['second']
    assert {r: n for r, n in stab.dropped_by_reason.items() if n} == {
        'non_finite': 2, 'zero_quaternion': 1, 'stamp_not_increasing': 2, 'wrong_frame_id': 1}
    assert stab.published == 2 and stab.received == 8


def test_non_causal_and_unknown_methods_are_rejected_with_a_reason():
    with pytest.raises(ParameterError, match="'rts' is not causal"):
        st.check_method('rts')
    with pytest.raises(ParameterError, match="unknown method 'nope'"):
        st.check_method('nope')
    assert 'rts' not in causal_methods()


def test_every_parameter_is_declared_once():
    specs = st.parameter_specs()
    for name in st.SHARED:
        assert name in specs
        assert not any(key.endswith('.' + name) for key in specs), name
    for method in causal_methods():
        for key in smoother_class(method).PARAMS:
            assert (key if key in st.SHARED else f'{method}.{key}') in specs
    assert specs['method'].default == 'kalman'


def test_shared_parameters_reach_the_methods_that_have_them():
    values = {name: spec.default for name, spec in st.parameter_specs().items()}
    values.update(method='fixed_lag', delay_frames=4, dropout_timeout_s=0.25)
    smoother = st.build_smoother(values)
    assert smoother.delay_frames == 4
    assert smoother.params['dropout_timeout_s'] == 0.25
    values['method'] = 'one_euro'  # has none of them: still builds
    assert st.build_smoother(values).name == 'one_euro'
    values.update(method='kalman', **{'kalman.process_noise': -1.0})
    with pytest.raises(ParameterError, match='process_noise'):
        st.build_smoother(values)


def test_methods_sharing_a_parameter_agree_on_its_spec():
    for name in st.SHARED:
        specs = {m: smoother_class(m).PARAMS[name] for m in list_methods()
                 if name in smoother_class(m).PARAMS}
        for method, spec in specs.items():
            assert spec == st.shared_spec(name), (name, method)


def hostile_stream(n=900, rate_hz=60.0):
    """Return a take with bad rows, a short dropout (coasted) and a 2 s stamp gap (a reset)."""
    t, _, _, p, q = moving_take(n, rate_hz=rate_hz, seed=5)
    t, p, q = t.copy(), p.copy(), q.copy()
    p[40] = np.nan                       # non_finite
    q[90] = 0.0                          # zero_quaternion
    t[130] = t[129] - 0.5                # stamp_not_increasing
    q[170] *= 3.0                        # renormalised
    keep = np.ones(n, dtype=bool)
    keep[200:215] = False                # a 0.25 s dropout, shorter than the timeout
    t[450:] += 2.0                       # a 2 s gap: longer than the timeout
    return t[keep], p[keep], q[keep]


def node_path(stabilizer, t, p, q, switch_at=None, new_smoother=None):
    """
    Run the stream through the stabiliser as the node does.

    Pose by pose through process(), the switch applied between two measurements,
    housekeeping's idle() call in a pause longer than dropout_timeout_s, finish() at the
    end. Return {row: position} and {row: quaternion}.
    """
    positions, quaternions = {}, {}

    def store(outputs):
        for out in outputs:
            positions[out.tag], quaternions[out.tag] = out.position, out.quaternion

    for i in range(len(t)):
        if i == switch_at:
            store(stabilizer.switch(new_smoother))
        if i and t[i] - t[i - 1] > 1.0:
            store(stabilizer.idle(t[i] - t[i - 1]))
        store(stabilizer.process(t[i], p[i], q[i], tag=i)[1])
    store(stabilizer.finish())
    return positions, quaternions


@pytest.mark.parametrize('method', causal_methods())
def test_the_node_path_and_the_take_path_give_identical_outputs(method):
    t, p, q = hostile_stream()
    second = 'one_euro' if method == 'kalman' else 'kalman'
    switch_at = 600  # after the gap, during the move
    positions, quaternions = node_path(st.Stabilizer(make_smoother(method)), t, p, q,
                                       switch_at, make_smoother(second))
    result = st.stabilize_take(st.Stabilizer(make_smoother(method)), t, p, q,
                               switches=[(switch_at, make_smoother(second))])
    valid = sorted(positions)
    assert list(result.dropped_rows) == sorted(set(range(len(t))) - set(valid))
    assert result.dropped == {'non_finite': 1, 'zero_quaternion': 1,
                              'stamp_not_increasing': 1}
    assert result.stats['resets'] >= 1  # the gap
    np.testing.assert_array_equal(result.p[valid], np.array([positions[i] for i in valid]))
    np.testing.assert_array_equal(result.q[valid], np.array([quaternions[i] for i in valid]))


@pytest.mark.parametrize('method', ('lstm', 'hybrid', 'rts'))
def test_the_batched_fast_path_equals_the_pose_by_pose_path(method):
    t, p, q = hostile_stream(600)
    positions, quaternions = node_path(st.Stabilizer(make_smoother(method)), t, p, q)
    stabilizer = st.Stabilizer(make_smoother(method))
    result = st.stabilize_take(stabilizer, t, p, q)
    assert not stabilizer.costs_us  # the fast path ran (the streamed one times each pose)
    valid = sorted(positions)
    assert list(result.dropped_rows) == sorted(set(range(len(t))) - set(valid))
    assert stabilizer.published == len(valid) and stabilizer.stats.resets >= 1
    np.testing.assert_allclose(result.p[valid], np.array([positions[i] for i in valid]),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.abs(np.sum(result.q[valid] * np.array(
        [quaternions[i] for i in valid]), axis=1)), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize('method', ('lstm', 'hybrid'))
def test_a_learned_method_without_its_model_runs_kalman_on_both_paths(method, tmp_path):
    # Its fallback reads the pipeline's noise meter, which the fast path feeds in smooth().
    t, p, q = hostile_stream(600)
    missing = str(tmp_path / 'nowhere')
    expected = st.stabilize_take(st.Stabilizer(make_smoother('kalman')), t, p, q)
    positions, _ = node_path(st.Stabilizer(make_smoother(method, model_path=missing)), t, p, q)
    stabilizer = st.Stabilizer(make_smoother(method, model_path=missing))
    result = st.stabilize_take(stabilizer, t, p, q)
    assert not stabilizer.costs_us  # the fast path ran (the streamed one times each pose)
    assert stabilizer.smoother.fallback and stabilizer.stats.resets >= 1
    np.testing.assert_array_equal(result.p, expected.p)
    np.testing.assert_array_equal(result.q, expected.q)
    valid = sorted(positions)
    np.testing.assert_array_equal(result.p[valid], np.array([positions[i] for i in valid]))
    assert result.tracker_noise == expected.tracker_noise != 'measuring'


def test_a_stamp_gap_resets_every_method_as_a_pause_in_arrivals_does(take):
    # The node resets on a pause in arrivals (idle) whatever the method; a stamp gap in a
    # file must do the same, or `camstab smooth` would not be what the node does.
    t, p, q = take.t.copy(), take.noisy_p, take.noisy_q
    t[300:] += 2.0
    for method in ('one_euro', 'kalman'):
        positions, _ = node_path(st.Stabilizer(make_smoother(method)), t, p, q)
        result = st.stabilize_take(st.Stabilizer(make_smoother(method)), t, p, q)
        np.testing.assert_array_equal(result.p, np.array([positions[i] for i in range(len(t))]))


def test_invalid_rows_hold_the_previous_estimate_and_keep_one_output_per_input():
    t, _, _, p, q = moving_take(200, seed=1)
    p, q, t = p.copy(), q.copy(), t.copy()
    p[50] = np.nan
    q[80] = 0.0
    t[120] = t[119]                       # repeated stamp
    q[0] = np.nan                         # leading invalid row: takes the next estimate
    result = st.stabilize_take(st.Stabilizer(make_smoother('one_euro')), t, p, q)
    assert len(result.p) == len(t)
    assert result.dropped == {'non_finite': 2, 'zero_quaternion': 1,
                              'stamp_not_increasing': 1}
    assert list(result.dropped_rows) == [0, 50, 80, 120]
    np.testing.assert_array_equal(result.p[50], result.p[49])
    np.testing.assert_array_equal(result.p[80], result.p[79])
    np.testing.assert_array_equal(result.p[120], result.p[119])
    np.testing.assert_array_equal(result.p[0], result.p[1])
    assert np.all(np.isfinite(result.p)) and np.all(np.isfinite(result.q))


def test_a_take_without_any_valid_pose_is_an_error():
    t = np.arange(5.0)
    with pytest.raises(ValueError, match='no valid pose.*5 non_finite'):
        st.stabilize_take(st.Stabilizer(make_smoother('ema')), t, np.full((5, 3), np.nan),
                          np.tile([0, 0, 0, 1.0], (5, 1)))


@pytest.mark.parametrize('method', ('one_euro', 'rts'))
def test_a_timed_run_records_one_cost_per_pose_and_changes_nothing(method):
    t, _, _, p, q = moving_take(3000, seed=2)
    timed = st.stabilize_take(st.Stabilizer(make_smoother(method)), t, p, q, timed=True)
    plain = st.stabilize_take(st.Stabilizer(make_smoother(method)), t, p, q)
    assert len(timed.us_per_update) == len(t) and np.all(timed.us_per_update > 0)
    np.testing.assert_array_equal(timed.p, plain.p)


def test_a_clean_take_is_admitted_at_once_exactly_as_row_by_row():
    t, _, _, p, q = moving_take(600, seed=8)
    t = t.copy()
    t[300:] += 2.0             # a gap: a new stretch
    q = q * 1.5                # every quaternion renormalised
    at_once, by_rows = st.Stabilizer(make_smoother('rts')), st.Stabilizer(make_smoother('rts'))
    valid, units, starts = st._admit_clean_take(at_once, t, p, q)
    valid_rows, units_rows, starts_rows = st._admit_rows(by_rows, t, p, q)
    np.testing.assert_array_equal(valid, valid_rows)
    np.testing.assert_allclose(units, units_rows, rtol=0, atol=1e-15)
    assert list(starts) == starts_rows == [300]
    assert at_once.validator.renormalized == by_rows.validator.renormalized == 600
    assert at_once.validator.last_t == by_rows.validator.last_t
    p_bad = p.copy()
    p_bad[10] = np.nan         # a row to drop: the take needs the row-by-row rules
    assert st._admit_clean_take(st.Stabilizer(make_smoother('rts')), t, p_bad, q) is None


def test_warnings_name_the_rows_of_their_own_reason(caplog):
    import logging
    from camstab_ros.core.evaluation import run_take
    t = np.arange(200) / 60.0
    p = np.zeros((200, 3))
    q = np.tile([0.0, 0.0, 0.0, 1.0], (200, 1))
    p[[10, 20], 0] = np.nan           # non_finite at rows 11 and 21
    t[[50, 51]] = t[40]               # stamps going back at rows 51 and 52
    with caplog.at_level(logging.WARNING):
        result = run_take('kalman', t, p, q)
    assert result.drop_examples == {'non_finite': [10, 20], 'stamp_not_increasing': [50, 51]}
    lines = {}
    for record in caplog.records:
        found = re.search(r'invalid \((\w+)\)', record.getMessage())
        if found:
            lines[found.group(1)] = record.getMessage()
    assert lines['non_finite'].endswith('first at pose 11, 21: held the previous estimate')
    assert 'pose 51, 52' in lines['stamp_not_increasing']
