"""
Methods run on takes and measured: what `camstab` and training's scripts share.

Every take goes through the one pipeline (`stabilizer.stabilize_take`), so a figure here
is a figure of the node. Errors are library errors (ParameterError, ValueError), for the
caller to report.
"""
import logging

from camstab_ros.core.lstm_model import ModelError
from camstab_ros.core.methods import smoother_class
from camstab_ros.core.metrics import DEFAULT_VIEW, evaluate
from camstab_ros.core.simulation import simulate
from camstab_ros.core.stabilizer import stabilize_take, stabilizer_for
import numpy as np


log = logging.getLogger(__name__)

# The fixed seeded take of the per-pose cost benchmark.
BENCH_SCENARIO = {'scenario': 'handheld', 'seconds': 60.0, 'rate_hz': 120.0, 'seed': 7}
# Truth and noisy stamps match when they agree to the microsecond.
STAMPS_PER_S = 1e6


def run_take(method, t, p, q, params=None, timed=False, progress=None, strict=False):
    """
    Run a take through a new Stabilizer of `method`: its TakeResult, invalid rows logged.

    params: unprefixed parameters of the method and the pipeline (`stabilizer_for`).
    strict: raise ModelError when a learned method could not load its model (it falls
    back to `kalman` otherwise, with a warning).
    """
    stabilizer = stabilizer_for(method, params)
    if stabilizer.smoother.fallback:
        log.warning('%s: %s', method, stabilizer.smoother.model_status)
        if strict:
            raise ModelError(f'{method}: {stabilizer.smoother.model_status} (--strict)')
    result = stabilize_take(stabilizer, t, p, q, timed=timed, progress=progress)
    for reason, count in sorted(result.dropped.items()):
        rows = ', '.join(str(i + 1) for i in result.drop_examples.get(reason, []))
        log.warning('%d pose(s) invalid (%s), first at pose %s: held the previous estimate',
                    count, reason, rows)
    if result.renormalized:
        log.warning('%d non-unit quaternion(s) renormalised', result.renormalized)
    return result


def matched_truth(truth_t, truth_p, truth_q, t):
    """Truth rows at the stamps t (to the microsecond); ValueError unless all match."""
    keys = {round(s * STAMPS_PER_S): i for i, s in enumerate(truth_t)}
    rows = [keys.get(round(s * STAMPS_PER_S)) for s in t]
    missing = sum(r is None for r in rows)
    if missing:
        raise ValueError(f'no truth pose at {missing} of the {len(rows)} noisy timestamps '
                         '(the files must share timestamps)')
    return np.asarray(truth_p)[rows], np.asarray(truth_q)[rows]


def evaluate_methods(methods, t, noisy_p, noisy_q, truth_p, truth_q, params=None,
                     strict=False, view=DEFAULT_VIEW):
    """
    Return {method: metrics} of each method on a noisy take, with its median per-pose cost.

    params: optional {method: {parameter: value}}; strict: as for run_take; view: the
    ScreenView of the screen metrics.
    """
    results = {}
    for method in methods:
        result = run_take(method, t, noisy_p, noisy_q, (params or {}).get(method),
                          timed=True, strict=strict)
        metrics = evaluate(t, result.p, result.q, truth_p, truth_q, view)
        metrics['us_per_pose'] = float(np.median(result.us_per_update))
        results[method] = metrics
    return results


def benchmark(methods, repeats=3):
    """
    Per-pose cost {method: {median_us, p99_us, ratio, causal}} on BENCH_SCENARIO.

    ratio: the median over that of passthrough in the same run.
    """
    take = simulate(**BENCH_SCENARIO)
    methods = ['passthrough'] + [m for m in methods if m != 'passthrough']
    # Round robin, one run of every method per repeat: a slower spell of the machine then
    # falls on all of them, not on one method's runs.
    runs = {method: [] for method in methods}
    for _ in range(repeats):
        for method in methods:
            runs[method].append(run_take(method, take.t, take.noisy_p, take.noisy_q,
                                         timed=True).us_per_update)
    figures = {}
    for method in methods:
        costs = np.concatenate(runs[method])
        figures[method] = {'median_us': float(np.median(costs)),
                           'p99_us': float(np.percentile(costs, 99)),
                           'causal': smoother_class(method).causal}
    base = figures['passthrough']['median_us']
    for values in figures.values():
        values['ratio'] = values['median_us'] / base
    return figures
