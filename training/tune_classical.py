"""
Tune the default parameters of the classical smoothers over a training tracker matrix.

Takes: every simulated scenario (TAKE_SECONDS, training seeds only) and, with `--real`,
the pieces of the real takes the learned models were trained and selected on
(splits.REAL_TRAIN_TAKES and REAL_VALIDATION_TAKES; the matrix's real takes are never
seen) x the trackers and rates of the tracker matrix (training/matrix.py). Each method's
parameters are searched jointly, on log10 scales, by Nelder-Mead from the current defaults, to
minimise
- the mean log of screen_rmse_px over raw (quality: the log of the geometric mean), plus
- STILL_WEIGHT times the mean log of screen_jitter_still_px over raw on the cells at
  60 Hz and above with holds (a locked-off shot must stop floating), plus
- HARM_PENALTY times the mean squared log-excess over 1 of the screen, position and
  orientation ratios to raw (do no harm: a cell worse than raw costs far more than a
  cell better than raw earns).
Noise-dependent parameters are tuned as the smoothers use them: scaled by the measured
tracker noise (`kalman`'s measurement noise 'auto', `noise_scaling` 'auto').

    .venv/bin/python -m training.tune_classical [--methods ema,one_euro,kalman] [--json F]
    .venv/bin/python -m training.tune_classical --methods kalman --real \
        --json training/optimised_classical.json
    .venv/bin/python -m training.tune_classical --methods imm --real   # imm's defaults

Prints the tuned values. Without `--real` they are the PARAMS defaults in camstab_ros/core
(see README); with it, the optimised baselines the tracker matrix reports beside the
learned models (training.matrix.OPTIMISED_FILE: trained on the same data as they are),
and for `imm`, the classical baseline with no other role, its PARAMS defaults. The search
starts from the current defaults.
"""
import argparse
from concurrent.futures import ProcessPoolExecutor
import json
import logging
from pathlib import Path
import sys

from camstab_ros.core.evaluation import run_take
from camstab_ros.core.methods import smoother_class
from camstab_ros.core.metrics import error_metrics
from camstab_ros.core.simulation import add_tracker_noise, NOISE_PRESETS, SCENARIOS, simulate
import numpy as np
from scipy.optimize import minimize
from training.matrix import RATES_HZ, RATIOS, real_pieces, STILL_MIN_RATE_HZ, TRACKERS
from training.splits import REAL_TRAIN_TAKES, REAL_VALIDATION_TAKES, TRAIN_SEEDS


TAKE_SECONDS = 12.0
HARM_PENALTY = 30.0
STILL_WEIGHT = 0.5
MAX_EVALUATIONS = 60

# The parameters searched per method (the others keep their defaults).
SPACES = {
    'ema': ('time_constant_s', 'rot_time_constant_s'),
    'one_euro': ('min_cutoff', 'beta', 'rot_min_cutoff', 'rot_beta'),
    'kalman': ('process_noise', 'rot_process_noise', 'maneuver_threshold'),
    'imm': ('hold_process_noise', 'move_process_noise', 'rot_hold_process_noise',
            'rot_move_process_noise', 'mean_hold_s', 'mean_move_s'),
}


def tuning_cells(real=False):
    """Yield the noisy take of every training cell (real: with the real development pieces)."""
    for rate in RATES_HZ:
        motions = []
        for k, scenario in enumerate(SCENARIOS):
            truth = simulate(scenario, TAKE_SECONDS, rate, TRAIN_SEEDS[k], NOISE_PRESETS['none'])
            motions.append((truth.t, truth.truth_p, truth.truth_q))
        if real:
            takes = REAL_TRAIN_TAKES + REAL_VALIDATION_TAKES
            motions += [(t, p, q) for _, t, p, q in real_pieces(rate, takes)]
        for k, (t, p, q) in enumerate(motions):
            for j, tracker in enumerate(TRACKERS):
                yield add_tracker_noise(t, p, q, NOISE_PRESETS[tracker],
                                        TRAIN_SEEDS[50 + 3 * k + j])


def score_cell(args):
    """
    Log ratios to raw of a method on one take: screen, position, orientation, still jitter.

    The still-jitter ratio is NaN where it does not count (no holds, or under 60 Hz).
    """
    logging.disable(logging.WARNING)
    method, params, take = args
    result = run_take(method, take.t, take.noisy_p, take.noisy_q, params)
    est = error_metrics(take.t, result.p, result.q, take.truth_p, take.truth_q)
    raw = error_metrics(take.t, take.noisy_p, take.noisy_q, take.truth_p, take.truth_q)
    logs = [float(np.log(max(est[k], 1e-12) / max(raw[k], 1e-12))) for k in RATIOS]
    rate = (len(take.t) - 1) / (take.t[-1] - take.t[0])
    still = raw['screen_jitter_still_px']
    counts = rate >= STILL_MIN_RATE_HZ - 1.0 and np.isfinite(still) and still > 0
    return logs + [float(np.log(max(est['screen_jitter_still_px'], 1e-12) / still))
                   if counts else float('nan')]


class Objective:
    """The cost of a method's parameters (log10 values) over the training cells."""

    def __init__(self, method, names, takes, pool):
        self.method, self.names, self.takes, self.pool = method, names, takes, pool
        self.specs = smoother_class(method).PARAMS
        self.best = (np.inf, None, None)

    def __call__(self, log_values):
        params = {n: float(np.clip(10 ** v, self.specs[n].low, self.specs[n].high))
                  for n, v in zip(self.names, log_values)}
        logs = np.array(list(self.pool.map(
            score_cell, [(self.method, params, take) for take in self.takes])))
        harm = np.mean(np.maximum(logs[:, :3], 0.0) ** 2)
        cost = float(np.mean(logs[:, 0]) + STILL_WEIGHT * np.nanmean(logs[:, 3])
                     + HARM_PENALTY * harm)
        if cost < self.best[0]:
            self.best = (cost, params, logs)
        return cost


def tune(method, takes, pool):
    """Return a method's tuned parameters and its geometric-mean screen, worst and still."""
    names = SPACES[method]
    specs = smoother_class(method).PARAMS
    start = np.log10([specs[n].default for n in names])
    objective = Objective(method, names, takes, pool)
    minimize(objective, start, method='Nelder-Mead',
             options={'xatol': 0.02, 'fatol': 1e-4, 'maxfev': MAX_EVALUATIONS,
                      'initial_simplex': start + np.vstack([np.zeros(len(names)),
                                                            0.5 * np.eye(len(names))])})
    _, params, logs = objective.best
    return (params, float(np.exp(np.mean(logs[:, 0]))), float(np.exp(np.max(logs[:, :3]))),
            float(np.exp(np.nanmean(logs[:, 3]))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--methods', default='ema,one_euro,kalman')
    parser.add_argument('--real', action='store_true',
                        help='tune on the real training takes too (the optimised baselines)')
    parser.add_argument('--json', help='write the tuned parameters to this file')
    args = parser.parse_args(argv)
    takes = list(tuning_cells(args.real))
    real = ' and the real training pieces' if args.real else ''
    print(f'tuning on {len(takes)} cells ({len(SCENARIOS)} scenarios of {TAKE_SECONDS:g} s, '
          f'training seeds{real}, x {len(TRACKERS)} trackers x {len(RATES_HZ)} rates)',
          flush=True)
    results = {}
    with ProcessPoolExecutor(max_workers=2) as pool:
        for method in args.methods.split(','):
            params, geomean, worst, still = tune(method, takes, pool)
            results[method] = params
            print(f'{method:9s} geomean screen ratio {geomean:.3f}, worst ratio {worst:.2f}, '
                  f'geomean still-jitter ratio {still:.3f}: '
                  + ', '.join(f'{k}={v:.4g}' for k, v in params.items()), flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
