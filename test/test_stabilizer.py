"""The stabiliser's ROS-free logic (camstab_ros.nodes.stabilizer.Stabilizer) and its
parameter table: one output per measurement, gap resets, method switches without a jump."""
import numpy as np
import pytest

from camstab_ros.core.simulation import simulate
from camstab_ros.core.smoother import ParameterError, list_methods, make_smoother, smoother_class
from camstab_ros.nodes import stabilizer as st


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
    rows = np.array([o.stamp for o in outputs])
    err = np.array([o.position for o in outputs]) - take.truth_p[rows]
    return np.linalg.norm(np.diff(err, axis=0), axis=1) * 1e3


def test_fixed_lag_emits_one_output_per_measurement_with_its_own_stamp(take):
    stab = st.Stabilizer(make_smoother('fixed_lag', delay_frames=5), dropout_timeout_s=0.5)
    outputs = feed(stab, take.t, take.noisy_p, take.noisy_q, stop=100)
    assert [o.stamp for o in outputs] == list(range(95))  # five frames late
    assert [o.t for o in outputs] == list(take.t[:95])
    assert all(o.covariance.shape == (6, 6) for o in outputs)
    # A stream that stops: after dropout_timeout_s the held frames come out, then a reset.
    assert stab.idle(0.1) == []
    held = stab.idle(0.6)
    assert [o.stamp for o in held] == list(range(95, 100))
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
    assert [o.stamp for o in outputs] == list(range(len(take.t)))
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
    assert [o.stamp for o in outputs] == list(range(400))
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


def test_gap_resets_a_method_without_its_own_dropout_handling(take):
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
    assert stab.input_frame_id == 'world'  # locked to the first pose's frame
    for (ti, pi, qi, frame), expected in cases:
        reason, outputs = stab.process(ti, pi, qi, 'bad', frame)
        assert (reason, outputs) == (expected, [])
    reason, outputs = stab.process(t[1], p[1], q[1], 'second', 'world')
    assert reason is None and [o.stamp for o in outputs] == ['second']
    assert stab.dropped_by_reason == {'non_finite': 2, 'zero_quaternion': 1,
                                      'stamp_not_increasing': 2, 'wrong_frame_id': 1}
    assert stab.published == 2 and stab.received == 8


def test_non_causal_and_unknown_methods_are_rejected_with_a_reason():
    with pytest.raises(ParameterError, match="'rts' is not causal"):
        st.check_method('rts')
    with pytest.raises(ParameterError, match="unknown method 'nope'"):
        st.check_method('nope')
    assert 'rts' not in st.causal_methods()


def test_every_parameter_is_declared_once():
    specs = st.parameter_specs()
    for name in st.NODE_LEVEL:
        assert name in specs
        assert not any(key.endswith('.' + name) for key in specs), name
    for method in st.causal_methods():
        for key in smoother_class(method).PARAMS:
            assert (key if key in st.NODE_LEVEL else f'{method}.{key}') in specs
    assert specs['method'].default == 'kalman'


def test_node_level_parameters_reach_the_methods_that_have_them():
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


def test_methods_sharing_a_node_level_parameter_agree_on_its_spec():
    for name in st.NODE_LEVEL:
        specs = {m: smoother_class(m).PARAMS[name] for m in list_methods()
                 if name in smoother_class(m).PARAMS}
        for method, spec in specs.items():
            assert spec == st.node_level_spec(name), (name, method)
