from camstab_ros.core import quaternion as quat
from camstab_ros.core.methods import list_methods, make_smoother
from camstab_ros.core.metrics import evaluate
from camstab_ros.core.params import ParameterError
from camstab_ros.core.simulation import simulate, TrackerNoise
from helpers import moving_take, shared_file
import numpy as np
import pytest


CAUSAL_SIMPLE = ('passthrough', 'ema', 'one_euro')


def stream(smoother, t, p, q):
    out = [smoother.update(*row) for row in zip(t, p, q)]
    out = [e for e in out if e is not None] + smoother.flush()
    return (np.array([e.t for e in out]), np.array([e.position for e in out]),
            np.array([e.quaternion for e in out]))


def test_registry_lists_every_classical_method():
    for name in ('passthrough', 'ema', 'one_euro', 'kalman', 'fixed_lag', 'rts'):
        assert name in list_methods()


def test_unknown_method_and_parameters_give_clear_errors():
    with pytest.raises(ParameterError, match="unknown method 'nope'.*available"):
        make_smoother('nope')
    with pytest.raises(ParameterError, match="unknown parameter 'cutoff'.*min_cutoff"):
        make_smoother('one_euro', cutoff=1.0)
    with pytest.raises(ParameterError, match="'min_cutoff'.*out of range.*0.001 .. 1000 Hz"):
        make_smoother('one_euro', min_cutoff=-1.0)
    with pytest.raises(ParameterError, match="'beta'.*cannot use 'fast'"):
        make_smoother('one_euro', beta='fast')


@pytest.mark.parametrize('method', CAUSAL_SIMPLE)
def test_smooth_equals_update_pose_by_pose_with_variable_dt(method):
    t, _, _, p, q = moving_take(400, jitter_dt=True, seed=5)
    batch = make_smoother(method).smooth(t, p, q)
    online = stream(make_smoother(method), t, p, q)
    np.testing.assert_array_equal(batch[0], online[0])
    np.testing.assert_allclose(batch[1], online[1], atol=1e-12)
    np.testing.assert_allclose(quat.angle_between(batch[2], online[2]), 0.0, atol=1e-9)


@pytest.mark.parametrize('method', CAUSAL_SIMPLE)
def test_sign_flipped_quaternions_give_the_same_rotations(method):
    t, _, _, p, q = moving_take(300, seed=6)
    flipped = q * np.where(np.random.default_rng(0).random(len(q)) < 0.3, -1.0, 1.0)[:, None]
    a = make_smoother(method).smooth(t, p, q)
    b = make_smoother(method).smooth(t, p, flipped)
    np.testing.assert_allclose(a[1], b[1], atol=1e-12)
    np.testing.assert_allclose(quat.angle_between(a[2], b[2]), 0.0, atol=1e-9)


def test_one_euro_matches_the_authors_reference_output():
    data = np.loadtxt(shared_file('reference/one_euro_groundtruth.csv'), delimiter=',',
                      skiprows=1)
    t, noisy, filtered = data[:, 0], data[:, 2], data[:, 3]
    p = np.zeros((len(t), 3))
    p[:, 0] = noisy
    q = np.tile([0.0, 0.0, 0.0, 1.0], (len(t), 1))
    smoother = make_smoother('one_euro', min_cutoff=1.0, beta=0.1, d_cutoff=1.0,
                             noise_scaling='off')
    _, out_p, _ = smoother.smooth(t, p, q)
    assert np.max(np.abs(out_p[:, 0] - filtered)) < 1e-4


def test_one_euro_orientation_behaves_like_position_on_a_single_axis():
    # The same 1-D signal as a small rotation angle about z must be filtered the same way.
    data = np.loadtxt(shared_file('reference/one_euro_groundtruth.csv'), delimiter=',',
                      skiprows=1)
    t, noisy, filtered = data[:, 0], data[:, 2] * 0.01, data[:, 3] * 0.01
    q = quat.exp_map(np.column_stack([np.zeros((len(t), 2)), noisy]))
    smoother = make_smoother('one_euro', rot_min_cutoff=1.0, rot_beta=10.0, d_cutoff=1.0,
                             noise_scaling='off')
    _, _, out_q = smoother.smooth(t, np.zeros((len(t), 3)), q)
    angle = quat.log_map(out_q)[:, 2]
    # rot_beta 10 on 0.01-scaled angles equals beta 0.1 on the signal.
    assert np.max(np.abs(angle - filtered)) < 1e-5


@pytest.mark.parametrize('method, params', [
    ('ema', {'time_constant_s': 0.03, 'rot_time_constant_s': 0.03}),
    ('one_euro', {'min_cutoff': 1.0, 'beta': 1.0, 'rot_min_cutoff': 1.0, 'rot_beta': 1.0}),
])
def test_smoothers_reduce_jitter_on_a_noisy_move(method, params):
    t, tp, tq, p, q = moving_take(1200, seed=7)
    raw = evaluate(t, p, q, tp, tq)
    _, sp, sq = make_smoother(method, **params).smooth(t, p, q)
    smoothed = evaluate(t, sp, sq, tp, tq)
    assert smoothed['jitter_mm'] < 0.8 * raw['jitter_mm']
    assert smoothed['jitter_deg'] < 0.8 * raw['jitter_deg']


def test_passthrough_returns_the_input_and_reset_forgets_state():
    t, _, _, p, q = moving_take(50)
    s = make_smoother('ema', time_constant_s=0.5)
    first = s.smooth(t, p, q)
    s.reset()
    again = s.smooth(t, p, q)
    np.testing.assert_array_equal(first[1], again[1])
    _, out_p, out_q = make_smoother('passthrough').smooth(t, p, q)
    np.testing.assert_array_equal(out_p, p)
    np.testing.assert_allclose(out_q, q, atol=1e-12)


# Parameters for the reference tracker: One Euro's defaults; for `ema` a time constant long
# enough to matter (its tuned defaults are all but a pass-through).
BASES = {'ema': {'time_constant_s': 0.03, 'rot_time_constant_s': 0.03}, 'one_euro': {}}


def scaled_by_hand(method, ratio):
    """Return a method's base parameters scaled by hand for `ratio` x the reference noise."""
    specs = dict(make_smoother(method).params, **BASES[method])
    if method == 'ema':
        return {k: specs[k] * ratio ** (2 / 3) for k in ('time_constant_s',
                                                         'rot_time_constant_s')}
    return {'min_cutoff': specs['min_cutoff'] / ratio ** (2 / 3),
            'rot_min_cutoff': specs['rot_min_cutoff'] / ratio ** (2 / 3),
            'beta': specs['beta'] / ratio, 'rot_beta': specs['rot_beta'] / ratio}


@pytest.mark.parametrize('method', ['ema', 'one_euro'])
@pytest.mark.parametrize('ratio', [0.1, 4.0])
def test_noise_scaling_sets_the_parameters_from_the_measured_noise(method, ratio):
    # A 0.05 mm / 0.002 deg and a 2 mm / 0.08 deg tracker (the reference is 0.5 mm /
    # 0.02 deg): 'auto' filters as the parameters scaled by hand for the true noise would.
    noise = TrackerNoise(pos_sigma_m=0.0005 * ratio, rot_sigma_deg=0.02 * ratio)
    take = simulate('dolly', 20.0, 60.0, 3, noise)
    figures = {}
    base = BASES[method]
    for name, params in (('auto', base),
                         ('by hand', dict(scaled_by_hand(method, ratio), noise_scaling='off')),
                         ('fixed', dict(base, noise_scaling='off'))):
        _, p, q = make_smoother(method, **params).smooth(take.t, take.noisy_p, take.noisy_q)
        figures[name] = evaluate(take.t, p, q, take.truth_p, take.truth_q)
    for key in ('pos_rmse_mm', 'rot_rmse_deg', 'jitter_deg'):
        assert figures['auto'][key] == pytest.approx(figures['by hand'][key], rel=0.25)
    # ...and not as the fixed filter for the reference tracker would.
    assert abs(figures['auto']['jitter_deg'] / figures['fixed']['jitter_deg'] - 1.0) > 0.1


def test_scaled_filters_pass_measurements_through_until_the_noise_is_measured():
    t, _, _, p, q = moving_take(40)
    for method in ('ema', 'one_euro'):
        _, sp, sq = make_smoother(method).smooth(t, p, q)
        np.testing.assert_array_equal(sp[:8], p[:8])  # the meter reads from the 9th
        assert not np.allclose(sp[12:], p[12:])
