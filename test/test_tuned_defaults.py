"""The tuned defaults do the job on stage: still shots stop floating, moves stay accurate."""
from camstab_ros.core.methods import make_smoother
from camstab_ros.core.metrics import evaluate
from camstab_ros.core.simulation import simulate, TrackerNoise
import pytest


WHITE_NOISE = TrackerNoise(pos_sigma_m=0.0005, rot_sigma_deg=0.02)


def metrics(method, take):
    _, p, q = make_smoother(method).smooth(take.t, take.noisy_p, take.noisy_q)
    return evaluate(take.t, p, q, take.truth_p, take.truth_q)


@pytest.fixture(scope='module')
def takes():
    return {scenario: simulate(scenario, seconds=40.0, rate_hz=60.0, seed=4242,
                               noise=WHITE_NOISE)
            for scenario in ('locked_off', 'dolly')}


@pytest.mark.parametrize('method', ['kalman', 'one_euro'])
def test_locked_off_jitter_is_cut_to_a_quarter(takes, method):
    take = takes['locked_off']
    raw = metrics('passthrough', take)
    assert metrics(method, take)['jitter_mm'] <= 0.25 * raw['jitter_mm']


@pytest.mark.parametrize('method', ['kalman', 'one_euro'])
def test_dolly_holds_stop_floating(takes, method):
    take = takes['dolly']
    raw = metrics('passthrough', take)
    assert metrics(method, take)['jitter_still_mm'] <= 0.5 * raw['jitter_still_mm']


@pytest.mark.parametrize('scenario', ['locked_off', 'dolly'])
def test_kalman_error_stays_below_the_raw_input(takes, scenario):
    take = takes[scenario]
    assert metrics('kalman', take)['pos_rmse_mm'] < metrics('passthrough', take)['pos_rmse_mm']
