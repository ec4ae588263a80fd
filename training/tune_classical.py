"""Tune the default parameters of the classical smoothers on synthetic training takes.

For each method, position and orientation parameters are searched separately: minimise
the mean position RMSE (orientation RMSE) over the tuning takes, subject to a mean lag
no worse than one frame at 60 Hz (16.7 ms). The search is a log-spaced grid followed by
Nelder-Mead on log10 of the parameters with a quadratic penalty on excess lag.

    .venv/bin/python training/tune_classical.py [--methods ema,one_euro,kalman] [--json F]

Prints the tuned values; they are the PARAMS defaults in camstab_ros/core (see README).
"""
import argparse
import itertools
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from splits import TRAIN_SEEDS  # noqa: E402

from camstab_ros.core import make_smoother  # noqa: E402
from camstab_ros.core.metrics import lag_seconds  # noqa: E402
from camstab_ros.core.simulation import SCENARIOS, simulate  # noqa: E402
from camstab_ros.core import quaternion as quat  # noqa: E402

MAX_LAG_S = 1.0 / 60.0
RATE_HZ = 60.0
SECONDS = 20.0
TAKES_PER_SCENARIO = 2
LAG_PENALTY = 1e4          # per (lag excess in ms)^2, in units of the RMSE (mm or deg)

# Parameters searched per method and component, with their grid (log-spaced) ranges.
# The other parameters keep their defaults.
SEARCH = {
    'ema': {
        'position': {'time_constant_s': (1e-4, 0.2)},
        'orientation': {'rot_time_constant_s': (1e-4, 0.2)},
    },
    'one_euro': {
        'position': {'min_cutoff': (0.05, 50.0), 'beta': (0.1, 1e4)},
        'orientation': {'rot_min_cutoff': (0.05, 50.0), 'rot_beta': (0.01, 1e3)},
    },
    'kalman': {
        'position': {'process_noise': (1e-2, 1e5)},
        'orientation': {'rot_process_noise': (1e-3, 1e4)},
    },
}


def tuning_takes():
    takes = []
    for scenario, k in itertools.product(SCENARIOS, range(TAKES_PER_SCENARIO)):
        seed = TRAIN_SEEDS[SCENARIOS.index(scenario) * TAKES_PER_SCENARIO + k]
        takes.append(simulate(scenario, seconds=SECONDS, rate_hz=RATE_HZ, seed=seed))
    return takes


def score_take(args):
    method, params, component, take = args
    _, p, q = make_smoother(method, **params).smooth(take.t, take.noisy_p, take.noisy_q)
    if component == 'position':
        rmse = np.sqrt(np.mean(np.sum((p - take.truth_p) ** 2, axis=1))) * 1e3
    else:
        rmse = np.degrees(np.sqrt(np.mean(quat.angle_between(q, take.truth_q) ** 2)))
    lag = lag_seconds(take.t, p, q, take.truth_p, take.truth_q, component=component)
    return rmse, lag


class Objective:
    def __init__(self, method, component, fixed, names, takes, pool):
        self.method, self.component, self.fixed = method, component, fixed
        self.names, self.takes, self.pool = names, takes, pool
        self.best = (np.inf, None, None, None)

    def figures(self, log_values):
        params = dict(self.fixed, **{n: float(10 ** v) for n, v in zip(self.names, log_values)})
        scores = list(self.pool.map(score_take, [(self.method, params, self.component, take)
                                                 for take in self.takes]))
        rmse = float(np.mean([s[0] for s in scores]))
        lags = [s[1] for s in scores if np.isfinite(s[1])]
        lag = float(np.mean(lags)) if lags else 0.0
        return params, rmse, lag

    def __call__(self, log_values):
        params, rmse, lag = self.figures(log_values)
        cost = rmse + LAG_PENALTY * max(0.0, (lag - MAX_LAG_S) * 1e3) ** 2
        if cost < self.best[0]:
            self.best = (cost, params, rmse, lag)
        return cost


def tune(method, component, fixed, takes, pool):
    space = SEARCH[method][component]
    names = list(space)
    grids = [np.linspace(np.log10(lo), np.log10(hi), 7) for lo, hi in space.values()]
    objective = Objective(method, component, fixed, names, takes, pool)
    start = min(itertools.product(*grids), key=objective)
    minimize(objective, np.array(start), method='Nelder-Mead',
             options={'xatol': 0.02, 'fatol': 1e-4, 'maxfev': 60})
    _, params, rmse, lag = objective.best
    return {n: params[n] for n in names}, rmse, lag * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--methods', default=','.join(SEARCH))
    parser.add_argument('--json', help='write the tuned parameters to this file')
    args = parser.parse_args(argv)
    takes = tuning_takes()
    print(f'tuning on {len(takes)} takes ({len(SCENARIOS)} scenarios x {TAKES_PER_SCENARIO}, '
          f'{SECONDS:.0f} s at {RATE_HZ:.0f} Hz, default tracker noise, training seeds)')
    results = {}
    with ProcessPoolExecutor(max_workers=2) as pool:
        for method in args.methods.split(','):
            tuned = {}
            for component in ('position', 'orientation'):
                values, rmse, lag_ms = tune(method, component, tuned, takes, pool)
                tuned.update(values)
                unit = 'mm' if component == 'position' else 'deg'
                print(f'{method:9s} {component:11s} rmse {rmse:.4f} {unit}, lag {lag_ms:5.1f} ms: '
                      + ', '.join(f'{k}={v:.4g}' for k, v in values.items()), flush=True)
            results[method] = tuned
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
