"""
The tuned defaults on stage, for any tracker: holds stop floating, no pose is made worse.

Simulated takes (10 s, a seed outside the training split) x the trackers of the tracker
matrix x 60 and 240 Hz, every method at its defaults through the one pipeline. The full
matrix, real takes and 25 Hz included, is training/matrix.py (README: Evaluation).
"""
import logging

from camstab_ros.core.evaluation import run_take
from camstab_ros.core.metrics import error_metrics
from camstab_ros.core.simulation import NOISE_PRESETS, SCENARIOS, simulate
import numpy as np
import pytest


TRACKERS = ('optical_fine', 'optical', 'inside_out')
RATES_HZ = (60.0, 240.0)
METHODS = ('kalman', 'imm', 'fixed_lag', 'one_euro')
# The shipped learned models: bounded, trained on every kind of tracker (issue 11); their
# worst cell on the tracker matrix (README; real handheld motion and 25 Hz included) is
# 1.011x raw (hybrid) and 1.009x (lstm).
LEARNED_WORST = {'hybrid': 1.02, 'lstm': 1.02}
RATIOS = ('screen_rmse_px', 'pos_rmse_mm', 'rot_rmse_deg')
# Moves with holds (the still-jitter rule) and without a walking operator.
STAGE_MOVES = ('locked_off', 'pan', 'tilt', 'dolly', 'crane', 'whip_pan')
# The known misses of "do no harm" (README, tracker matrix): the operator's tremor and
# gait (handheld, steadicam) and the orbit's sway are real motion that a fine tracker's
# noise cannot be told from; the stabiliser smooths a little of it away.
HANDHELD_MOVES = ('orbit', 'handheld', 'steadicam')


@pytest.fixture(scope='module')
def figures():
    """{(scenario, tracker, rate, method): {metric: ratio to raw}} of every cell."""
    logging.disable(logging.WARNING)
    ratios = {}
    for scenario in SCENARIOS:
        for tracker in TRACKERS:
            for rate in RATES_HZ:
                take = simulate(scenario, 10.0, rate, 4242, NOISE_PRESETS[tracker])
                raw = error_metrics(take.t, take.noisy_p, take.noisy_q, take.truth_p,
                                    take.truth_q)
                for method in METHODS + tuple(LEARNED_WORST):
                    result = run_take(method, take.t, take.noisy_p, take.noisy_q)
                    est = error_metrics(take.t, result.p, result.q, take.truth_p,
                                        take.truth_q)
                    ratios[scenario, tracker, rate, method] = {
                        k: est[k] / raw[k] for k in RATIOS + ('screen_jitter_still_px',)}
    logging.disable(logging.NOTSET)
    return ratios


@pytest.mark.parametrize('method', METHODS)
def test_no_tracker_is_made_worse_on_stage_moves(figures, method):
    worse = {cell[:3]: r for cell, r in figures.items()
             if cell[0] in STAGE_MOVES and cell[3] == method
             and max(r[k] for k in RATIOS) > 1.0}
    assert not worse


@pytest.mark.xfail(reason='known miss: handheld motion a fine tracker cannot be told from '
                          '(README, tracker matrix)', strict=True)
@pytest.mark.parametrize('method', METHODS)
def test_no_tracker_is_made_worse_on_handheld_moves(figures, method):
    worst = max(max(r[k] for k in RATIOS) for cell, r in figures.items()
                if cell[0] in HANDHELD_MOVES and cell[3] == method)
    assert worst <= 1.0


def still_jitter(figures, method, rate):
    return [r['screen_jitter_still_px'] for cell, r in figures.items()
            if cell[3] == method and cell[2] == rate
            and np.isfinite(r['screen_jitter_still_px'])]


@pytest.mark.parametrize('method', ['kalman', 'fixed_lag'])
def test_holds_stop_floating_at_240_hz(figures, method):
    assert max(still_jitter(figures, method, 240.0)) <= 0.25


@pytest.mark.parametrize('method, limit', [('kalman', 0.4), ('fixed_lag', 0.25),
                                           ('one_euro', 0.8)])
def test_holds_float_less_at_60_hz(figures, method, limit):
    # The target is 0.25 for the default method; `kalman` misses it at 60 Hz (README).
    assert max(still_jitter(figures, method, 60.0)) <= limit


@pytest.mark.parametrize('method', sorted(LEARNED_WORST))
def test_learned_methods_stay_within_a_few_percent_of_raw_on_every_cell(figures, method):
    worst = max(max(r[k] for k in RATIOS) for cell, r in figures.items() if cell[3] == method)
    assert worst <= LEARNED_WORST[method]


@pytest.mark.xfail(reason='known miss: hybrid and lstm are up to 1.1% worse than raw on a '
                          'few cells (README, tracker matrix); hybrid here: orbit, '
                          'inside_out, 60 Hz, position 1.0001x', strict=True)
@pytest.mark.parametrize('method', sorted(LEARNED_WORST))
def test_learned_methods_do_no_harm_on_any_cell(figures, method):
    # These cells: simulated moves at 60 and 240 Hz.
    worse = {cell[:3]: r for cell, r in figures.items()
             if cell[3] == method and max(r[k] for k in RATIOS) > 1.0}
    assert not worse


def test_hybrid_is_better_than_kalman_on_screen_over_these_cells(figures):
    def geomean(method):
        return np.exp(np.mean([np.log(r['screen_rmse_px']) for cell, r in figures.items()
                               if cell[3] == method]))
    assert geomean('hybrid') < geomean('kalman')
