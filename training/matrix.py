"""
The tracker matrix of DESIGN.md: every method on every take, tracker and rate, vs raw.

    .venv/bin/python -m training.matrix [--out docs/matrix.md] [--workers 2]
    .venv/bin/python -m training.matrix --split validation [--methods kalman,hybrid] \
        [--candidate NAME=MODEL_DIR ...]

Takes: every simulated scenario (20 s, test seeds) and the held-out real recorded motion
of ../shared/data/real (splits.REAL_TEST_TAKES: TUM-VI room6 and TUM fr1_xyz, cut into
pieces of 10-30 s that never span a gap of the recorded truth, resampled to the rate;
never used in training, tuning or model selection). Trackers: `optical_fine`,
`optical`, `inside_out` (training-free presets). Rates: 25, 60, 240 Hz. Every method runs
at its defaults through the one pipeline (`run_take`). The oracle is a fixed-gain
alpha-beta filter whose gains (position and orientation apart) are chosen on each take's
own truth: what an expert with the answer in hand could set. `lowpass_oracle` is its
offline counterpart and no causal method's target: a zero-phase low-pass (run forwards and
backwards over the whole take) whose cutoffs are chosen on the take's truth, a measure of
how much of the error any smoothing can remove at all. `<method>_optimised` rows:
a classical method with its parameters optimised on the learned models' training and
validation data and on the matrix's own loss (training/tune_classical.py --real; the fair
baseline). `imm` (the classical two-mode filter) has its defaults optimised that way.

Per method: the worst ratio to the raw input over the matrix of screen_rmse_px,
pos_rmse_mm and rot_rmse_deg (do no harm: <= 1), and the geometric mean of the
screen_rmse_px ratio (quality).

`--split validation` builds the same matrix from the validation split instead (simulated
scenarios of the validation seeds, the real takes splits.REAL_VALIDATION_TAKES): the one
learned models are selected on. It writes docs/matrix_validation.md and leaves the model
cards alone. There, `--methods` runs some methods only and `--candidate NAME=DIR` adds a
row NAME running the model in DIR (its card names the method), so trained candidates are
compared before one is shipped; the test split always runs whole and takes no candidate.
"""
import argparse
from concurrent.futures import ProcessPoolExecutor
import functools
import json
import logging
import multiprocessing
from pathlib import Path

from camstab_ros.core import quaternion as quat
from camstab_ros.core.evaluation import run_take
from camstab_ros.core.methods import list_methods
from camstab_ros.core.metrics import error_metrics, lag_seconds
from camstab_ros.core.simulation import add_tracker_noise, NOISE_PRESETS, SCENARIOS, simulate
from camstab_ros.io.trajectory import read_trajectory
import numpy as np
from scipy import signal
from scipy.spatial.transform import Rotation, Slerp
from training.splits import (REAL_TEST_TAKES, REAL_VALIDATION_TAKES, TEST_SEEDS,
                             VALIDATION_SEEDS)

ROOT = Path(__file__).resolve().parent.parent
# Per split: the seeds of its simulated takes and trackers, and its real recorded takes.
SPLITS = {'test': (TEST_SEEDS, REAL_TEST_TAKES),
          'validation': (VALIDATION_SEEDS, REAL_VALIDATION_TAKES)}
REAL = ROOT.parent / 'shared' / 'data' / 'real'
TRACKERS = ('optical_fine', 'optical', 'inside_out')
RATES_HZ = (25.0, 60.0, 240.0)
SIM_SECONDS = 20.0
PIECE_SECONDS = 30.0
MIN_PIECE_S = 10.0
# An interval of the recorded truth (100-120 Hz) longer than this many median intervals is
# a gap in it (samples the motion-capture system lost).
MAX_TRUTH_GAP = 2.5
TRIM_S = 0.5
TRUTH_CUTOFF_HZ = 15.0
RATIOS = ('screen_rmse_px', 'pos_rmse_mm', 'rot_rmse_deg')
STILL_MIN_RATE_HZ = 60.0
# A take counts as worse than raw beyond this (passthrough's ratio is 1 to rounding).
WORSE_MARGIN = 1e-6
# The classical methods' parameters optimised on the learned models' training data
# (training/tune_classical.py --real --json OPTIMISED_FILE): the `_optimised` rows.
OPTIMISED_FILE = ROOT / 'training' / 'optimised_classical.json'
# Gains the oracle chooses from (alpha of the alpha-beta filter; beta = alpha^2/(2-alpha)).
ORACLE_ALPHAS = np.array([1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.13, 0.08, 0.05, 0.03, 0.02])
# Cutoffs (Hz) the offline low-pass oracle chooses from, below 0.45 x the rate, or none.
LOWPASS_CUTOFFS_HZ = np.geomspace(0.3, 20.0, 19)


def real_pieces(rate_hz, takes=REAL_TEST_TAKES):
    """
    Yield (name, t, p, q) of the 30 s pieces of real takes, resampled to rate_hz.

    The recorded truth has gaps (the motion-capture system lost the rig for a few samples
    to 3 s, with glitches of several degrees beside them): a piece never spans one. Pieces are
    cut from the stretches between gaps, TRIM_S clear of them; a stretch's remainder of at
    least MIN_PIECE_S is a piece too. A missing take raises FileNotFoundError: a matrix or
    a training set without its real motion would look complete and not be.
    """
    for name in takes:
        path = REAL / name
        if not path.is_file():
            raise FileNotFoundError(f'{path}: real take not found (the real motion is read '
                                    'from ../shared/data/real beside the repository)')
        truth = read_trajectory(path)
        q = quat.make_continuous(quat.normalize(truth.q))
        intervals = np.diff(truth.t)
        gaps = np.flatnonzero(intervals > MAX_TRUTH_GAP * np.median(intervals))
        for rows in np.split(np.arange(len(truth.t)), gaps + 1):
            src_t = truth.t[rows]
            if src_t[-1] - src_t[0] < MIN_PIECE_S + 2 * TRIM_S:
                continue
            src_p, src_q = denoised_truth(src_t, truth.p[rows], q[rows])
            slerp = Slerp(src_t, Rotation.from_quat(src_q))
            start, end = src_t[0] + TRIM_S, src_t[-1] - TRIM_S
            while end - start >= MIN_PIECE_S:
                seconds = min(PIECE_SECONDS, end - start)
                t = start + np.arange(0.0, seconds, 1.0 / rate_hz)
                p = np.column_stack([np.interp(t, src_t, src_p[:, i]) for i in range(3)])
                yield (f'{name.split("_groundtruth")[0]}@{start - truth.t[0]:.0f}s', t, p,
                       slerp(t).as_quat())
                start += seconds


def denoised_truth(t, p, q):
    """
    Take the motion-capture system's own jitter out of a stretch of recorded truth.

    The recorded truth jitters by 0.05-0.08 deg and 0.1 mm per frame (read by the noise
    meter on the truth alone at 25-60 Hz): thirty times `optical_fine`'s noise, and white
    like it. No stabiliser can tell it from tracker noise, and no truth can judge a
    tracker finer than itself. A zero-phase low-pass at TRUTH_CUTOFF_HZ keeps the camera's
    motion (handheld motion and physiological tremor lie below 12 Hz) and removes it.
    """
    rate = 1.0 / np.median(np.diff(t))
    sos = signal.butter(4, TRUTH_CUTOFF_HZ, fs=rate, output='sos')
    p = signal.sosfiltfilt(sos, p, axis=0)
    q = signal.sosfiltfilt(sos, q, axis=0)
    return p, q / np.linalg.norm(q, axis=1, keepdims=True)


def alpha_beta(t, x, alpha):
    """Steady-state alpha-beta filter of columns x (N, k) for every alpha (A,): (A, N, k)."""
    alpha = alpha[:, None]
    beta = alpha * alpha / (2.0 - alpha)
    out = np.empty((len(alpha), len(t), x.shape[1]))
    est, rate = np.repeat(x[:1], len(alpha), axis=0), np.zeros((len(alpha), x.shape[1]))
    out[:, 0] = est
    for k in range(1, len(t)):
        dt = t[k] - t[k - 1]
        predicted = est + rate * dt
        residual = x[k] - predicted
        est = predicted + alpha * residual
        rate = rate + beta / dt * residual
        out[:, k] = est
    return out


def oracle(t, noisy_p, noisy_q, truth_p, truth_q):
    """Return the fixed-gain alpha-beta estimate with the gains best on this take's truth."""
    noisy_q = quat.make_continuous(noisy_q)
    ps = alpha_beta(t, noisy_p, ORACLE_ALPHAS)
    p_err = [np.mean(np.sum((est - truth_p) ** 2, axis=1)) for est in ps]
    qs = alpha_beta(t, noisy_q, ORACLE_ALPHAS)
    qs /= np.linalg.norm(qs, axis=2, keepdims=True)
    q_err = [np.mean(quat.angle_between(est, truth_q) ** 2) for est in qs]
    return ps[int(np.argmin(p_err))], qs[int(np.argmin(q_err))]


def lowpass_oracle(t, noisy_p, noisy_q, truth_p, truth_q):
    """
    Return the zero-phase low-pass estimate with the cutoffs best on this take's truth.

    Second-order Butterworth run forwards and backwards (offline: it sees the whole take),
    position and orientation cutoffs chosen apart from LOWPASS_CUTOFFS_HZ or no filter.
    """
    noisy_q = quat.make_continuous(noisy_q)
    rate = 1.0 / np.median(np.diff(t))
    ps, qs = [noisy_p], [noisy_q]
    for cutoff in LOWPASS_CUTOFFS_HZ[LOWPASS_CUTOFFS_HZ < 0.45 * rate]:
        sos = signal.butter(2, cutoff, fs=rate, output='sos')
        ps.append(signal.sosfiltfilt(sos, noisy_p, axis=0))
        q = signal.sosfiltfilt(sos, noisy_q, axis=0)
        qs.append(q / np.linalg.norm(q, axis=1, keepdims=True))
    p = min(ps, key=lambda est: np.mean(np.sum((est - truth_p) ** 2, axis=1)))
    q = min(qs, key=lambda est: np.mean(quat.angle_between(est, truth_q) ** 2))
    return p, q


def optimised_baselines():
    """Return {method: params} of the classical methods optimised on the learned models' data."""
    return json.loads(OPTIMISED_FILE.read_text()) if OPTIMISED_FILE.is_file() else {}


def method_rows(methods=None, candidates=()):
    """
    Return the rows to run: (row name, method, params).

    methods: the registered methods to run (default all) and their `_optimised` rows;
    candidates: (row name, model directory) pairs, each run as the method its card names.
    """
    methods = list_methods() if methods is None else list(methods)
    rows = [(method, method, {}) for method in methods]
    rows += [(f'{method}_optimised', method, params)
             for method, params in optimised_baselines().items() if method in methods]
    for row, directory in candidates:
        card = json.loads((Path(directory) / 'model_card.json').read_text())
        rows.append((row, card['method'], {'model_path': str(directory)}))
    return rows


def run_cell(args, references=True):
    """
    Return (take name, tracker, rate, {row: metrics}) of one cell of the matrix.

    references: also run the oracle and lowpass_oracle rows (most of a cell's time).
    """
    logging.disable(logging.WARNING)
    name, tracker, rate, t, p, q, seed, rows = args
    take = add_tracker_noise(t, p, q, NOISE_PRESETS[tracker], seed)
    estimates = {}
    for row, method, params in rows:
        result = run_take(method, take.t, take.noisy_p, take.noisy_q, params)
        estimates[row] = result.p, result.q
    for reference in (oracle, lowpass_oracle) if references else ():
        estimates[reference.__name__] = reference(take.t, take.noisy_p, take.noisy_q,
                                                  take.truth_p, take.truth_q)
    estimates['raw'] = take.noisy_p, take.noisy_q
    rows = {}
    for method, (p, q) in estimates.items():
        rows[method] = error_metrics(take.t, p, q, take.truth_p, take.truth_q)
        rows[method]['lag_ms'] = 1e3 * lag_seconds(take.t, p, q, take.truth_p, take.truth_q)
    return name, tracker, rate, rows


def cells(split, rows):
    """Yield the arguments of every cell of a split (takes x trackers x rates) to run rows."""
    seeds, real_takes = SPLITS[split]
    for rate in RATES_HZ:
        takes = []
        for k, scenario in enumerate(SCENARIOS):
            sim = simulate(scenario, SIM_SECONDS, rate, seeds[k], NOISE_PRESETS['none'])
            takes.append((scenario, sim.t, sim.truth_p, sim.truth_q))
        takes += list(real_pieces(rate, real_takes))
        for i, (name, t, p, q) in enumerate(takes):
            for j, tracker in enumerate(TRACKERS):
                yield name, tracker, rate, t, p, q, seeds[100 + 10 * i + j], rows


def run(work, workers, references=True):
    """Return run_cell's results for the cells in work, on `workers` processes."""
    # Spawned, not forked: the caller may hold threads (tf-keras in training.train).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
        return list(pool.map(functools.partial(run_cell, references=references), work,
                             chunksize=4))


def summary(results):
    """
    Return {method: figures} over the cells.

    Figures: the worst ratio to raw of each of RATIOS (and the worst cell), the geometric
    mean of the screen ratio (overall and per tracker), the still-jitter ratio on the cells
    at STILL_MIN_RATE_HZ and above that have holds (geometric mean and worst), the median
    lag and the number of cells worse than raw on screen.
    """
    figures = {}
    methods = [m for m in results[0][3] if m != 'raw']
    for method in methods:
        ratios = {k: [] for k in RATIOS}
        trackers = {tracker: [] for tracker in TRACKERS}
        still, lags = [], []
        for name, tracker, rate, rows in results:
            raw, est = rows['raw'], rows[method]
            for key in RATIOS:
                if raw[key] > 0:
                    ratios[key].append((est[key] / raw[key], f'{name} {tracker} {rate:g} Hz'))
            trackers[tracker].append(est['screen_rmse_px'] / raw['screen_rmse_px'])
            if rate >= STILL_MIN_RATE_HZ and raw['screen_jitter_still_px'] > 0:
                still.append(est['screen_jitter_still_px'] / raw['screen_jitter_still_px'])
            if np.isfinite(est['lag_ms']):
                lags.append(est['lag_ms'])
        worst = {k: max(v) for k, v in ratios.items()}
        screen = np.array([r for r, _ in ratios['screen_rmse_px']])
        figures[method] = {
            **{f'worst_{k}': worst[k][0] for k in RATIOS},
            'worst_screen_take': worst['screen_rmse_px'][1],
            'geomean_screen': _geomean(screen),
            **{f'geomean_screen_{t}': _geomean(v) for t, v in trackers.items()},
            'geomean_still': _geomean(still),
            'worst_still': float(np.max(still)) if still else float('nan'),
            'median_lag_ms': float(np.median(lags)),
            'takes_worse_than_raw': int(np.count_nonzero(screen > 1.0 + WORSE_MARGIN)),
            'takes': len(screen)}
    return figures


def _geomean(values):
    """Return the geometric mean of values; NaN for none (a tracker absent from the cells)."""
    if len(values) == 0:
        return float('nan')
    return float(np.exp(np.mean(np.log(values))))


def table(figures):
    trackers = ' | '.join(TRACKERS)
    lines = ['| method | worst screen ratio | worst pos ratio | worst rot ratio | geomean '
             f'screen ratio | {trackers} | still jitter ratio, >= 60 Hz (geomean / worst) | '
             'median lag ms | takes worse than raw (screen) | worst take (screen) |',
             '|---' * (9 + len(TRACKERS)) + '|']
    for method, f in figures.items():
        per_tracker = ' | '.join(f'{f[f"geomean_screen_{t}"]:.3f}' for t in TRACKERS)
        lines.append(f'| {method} | {f["worst_screen_rmse_px"]:.2f} | '
                     f'{f["worst_pos_rmse_mm"]:.2f} | {f["worst_rot_rmse_deg"]:.2f} | '
                     f'{f["geomean_screen"]:.3f} | {per_tracker} | {f["geomean_still"]:.2f} / '
                     f'{f["worst_still"]:.2f} | {f["median_lag_ms"]:.1f} | '
                     f'{f["takes_worse_than_raw"]} of {f["takes"]} | '
                     f'{f["worst_screen_take"]} |')
    return '\n'.join(lines)


def tradeoff_figure(figures, path):
    """Plot each method's quality (geomean screen ratio) against still jitter and worst cell."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for method, f in figures.items():
        learned = method in ('lstm', 'hybrid')
        style = {'marker': '*' if learned else 'o', 's': 140 if learned else 50}
        axes[0].scatter(f['geomean_still'], f['geomean_screen'], **style)
        axes[0].annotate(method, (f['geomean_still'], f['geomean_screen']), fontsize=8,
                         xytext=(4, 3), textcoords='offset points')
        axes[1].scatter(f['worst_screen_rmse_px'], f['geomean_screen'], **style)
        axes[1].annotate(method, (f['worst_screen_rmse_px'], f['geomean_screen']), fontsize=8,
                         xytext=(4, 3), textcoords='offset points')
    axes[0].set_xlabel('still jitter on screen vs raw (geomean, >= 60 Hz, holds)')
    axes[1].set_xlabel('worst cell: screen error vs raw')
    axes[1].set_xscale('log')
    axes[1].axvline(1.0, color='grey', lw=0.8, ls='--')
    for ax in axes:
        ax.set_ylabel('screen error vs raw (geomean over the matrix)')
        ax.axhline(1.0, color='grey', lw=0.8, ls='--')
        ax.grid(alpha=0.3)
    fig.suptitle('Tracker matrix: quality against still jitter and against harm (lower is better)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def record_in_model_cards(figures, cells):
    """Write the learned models' matrix figures, and the baselines', into their model cards."""
    baselines = {m: {k: figures[m][k] for k in ('geomean_screen', 'worst_screen_rmse_px',
                                                'geomean_still')}
                 for m in ('kalman', 'kalman_optimised', 'imm', 'oracle', 'lowpass_oracle')
                 if m in figures}
    for method in ('hybrid', 'lstm'):
        path = ROOT / 'models' / method / 'model_card.json'
        if method not in figures or not path.is_file():
            continue
        card = json.loads(path.read_text())
        card.setdefault('metrics', {})['tracker_matrix'] = {
            'source': 'training/matrix.py (docs/matrix.md)', 'cells': cells,
            'figures': figures[method], 'baselines': baselines}
        path.write_text(json.dumps(card, indent=2) + '\n')


def candidate(text):
    """Parse --candidate NAME=DIR (a model directory holding model_card.json)."""
    name, sep, directory = text.partition('=')
    if not sep or not name or not (Path(directory) / 'model_card.json').is_file():
        raise argparse.ArgumentTypeError(f'{text!r}: expected NAME=DIR, DIR holding '
                                         'model_card.json')
    return name, directory


def main(argv=None):
    """Run the matrix and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--split', choices=tuple(SPLITS), default='test',
                        help='test: the reported matrix; validation: the one models are '
                        'selected on')
    parser.add_argument('--out', help='default docs/matrix.md, or docs/matrix_validation.md')
    parser.add_argument('--methods', type=lambda v: v.split(','),
                        help='comma-separated methods to run (default all)')
    parser.add_argument('--candidate', type=candidate, action='append', default=[],
                        metavar='NAME=DIR', help='add a row running the model in DIR')
    parser.add_argument('--workers', type=int, default=2)
    args = parser.parse_args(argv)
    unknown = set(args.methods or ()) - set(list_methods())
    if unknown:
        parser.error(f'unknown methods: {", ".join(sorted(unknown))}')
    test = args.split == 'test'
    if test and (args.methods or args.candidate):
        parser.error('--methods and --candidate need --split validation: models are chosen '
                     'there, and the test matrix and the model cards always get every row')
    taken = set(list_methods()) | {'raw', 'oracle', 'lowpass_oracle'}
    for name, _ in args.candidate:
        if name in taken or name.endswith('_optimised'):
            parser.error(f'--candidate {name}: the name of a row the matrix has already')
        taken.add(name)
    out = Path(args.out or ROOT / 'docs' / ('matrix.md' if test else 'matrix_validation.md'))
    results = run(cells(args.split, method_rows(args.methods, args.candidate)), args.workers)
    figures = summary(results)
    if test:
        record_in_model_cards(figures, len(results))
    out.with_suffix('.json').write_text(json.dumps(
        {'figures': figures, 'cells': [{'take': name, 'tracker': tracker, 'rate_hz': rate,
                                        'metrics': rows}
                                       for name, tracker, rate, rows in results]},
        separators=(',', ':'), default=float) + '\n')
    pieces = len(results) // (len(TRACKERS) * len(RATES_HZ)) - len(SCENARIOS)
    rates = ', '.join(f'{r:g}' for r in RATES_HZ)
    if test:
        title, command = 'Tracker matrix', '.venv/bin/python -m training.matrix'
        held_out = ('the real pieces are held out of all training, tuning and model '
                    'selection (`training/splits.py`)')
    else:
        title = 'Tracker matrix, validation split'
        command = '.venv/bin/python -m training.matrix --split validation'
        held_out = ('this is the validation split (validation seeds, the real take the '
                    'learned models are selected on, never trained on: `training/splits.py`; '
                    'the `_optimised` rows were fitted on that take too)')
    text = (f'# {title}\n\nGenerated by `{command}`: '
            f'{len(results)} cells ({len(SCENARIOS)} simulated scenarios and {pieces} pieces '
            f'of real motion x trackers {", ".join(TRACKERS)} x {rates} Hz). Ratios are '
            "the method's figure over the raw input's on the same cell; the oracle is a "
            "fixed-gain alpha-beta filter tuned on each cell's truth, `lowpass_oracle` its "
            'offline counterpart (a zero-phase low-pass tuned on the truth: how much of the '
            'error any smoothing can remove, not a causal target); a `_optimised` row is '
            "a classical method optimised on the learned models' training and validation "
            'data and on this loss (`training/tune_classical.py --real`; `imm`, the '
            'two-mode IMM filter, has its defaults optimised so), and '
            f'{held_out}. The real pieces never span '
            'a gap of the recorded truth, and the motion-capture jitter is '
            f'taken out of the truth (zero-phase low-pass at {TRUTH_CUTOFF_HZ:g} Hz, '
            '`denoised_truth`). The per-tracker columns are geometric means of the screen '
            'ratio; still jitter: screen_jitter_still_px over raw on the cells at '
            f'{STILL_MIN_RATE_HZ:g} Hz and above with holds.\n\n'
            + table(figures) + '\n')
    figure = out.parent / 'figures' / f'{out.stem}_tradeoff.png'
    figure.parent.mkdir(parents=True, exist_ok=True)
    tradeoff_figure(figures, figure)
    text += f'\n![quality against still jitter and harm](figures/{figure.name})\n'
    out.write_text(text)
    print(text)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
