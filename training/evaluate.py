"""
Evaluate every smoother on the held-out synthetic test split and on real recorded motion.

    .venv/bin/python -m training.evaluate [--takes 3] [--out docs/evaluation.md]

Writes markdown tables (and the same figures as JSON next to them) and the README figures
in docs/figures/. Methods run exactly as `camstab evaluate` runs them (validation, then
update() pose by pose; offline rts via smooth()), with their current default parameters
and the shipped models. Synthetic takes use the test seeds of training/splits.py only.
"""
import argparse
from concurrent.futures import ProcessPoolExecutor
import json
import math
from pathlib import Path
import sys

from camstab_ros.core import quaternion as quat
from camstab_ros.core.evaluation import evaluate_methods, run_take
from camstab_ros.core.metrics import evaluate, lag_seconds, METRIC_NAMES
from camstab_ros.core.simulation import add_tracker_noise, NOISE_PRESETS, SCENARIOS, simulate
from camstab_ros.io.trajectory import read_trajectory
import numpy as np
from scipy.spatial.transform import Rotation, Slerp
from training import dataset, matrix
from training.splits import TEST_SEEDS


ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / 'shared' / 'data' / 'real'
METHODS = ('passthrough', 'ema', 'one_euro', 'kalman', 'imm', 'fixed_lag', 'lstm', 'hybrid',
           'rts')
LEARNED = ('lstm', 'hybrid')
SECONDS, RATE_HZ = 20.0, 60.0
COLUMNS = METRIC_NAMES + ('us_per_pose',)
REAL_NOISE = ('quiet_optical', 'default', 'inside_out', 'stress')
# Classical trade-off curves: (label, method, parameter sets swept along the curve); the
# other parameters keep their (tuned) defaults.
SWEEPS = [
    ('ema: time constants', 'ema',
     [{'time_constant_s': v, 'rot_time_constant_s': v} for v in np.logspace(-3.0, -0.7, 8)]),
    ('one_euro: min_cutoff', 'one_euro',
     [{'min_cutoff': v, 'rot_min_cutoff': 35.0 * v} for v in np.logspace(-3.0, 0.5, 8)]),
    ('kalman: process noise', 'kalman',
     [{'process_noise': v, 'rot_process_noise': 2500.0 * v} for v in np.logspace(-11, -1, 9)]),
    ('kalman: manoeuvre threshold', 'kalman',
     [{'maneuver_threshold': v} for v in (1.2, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0)]),
    ('fixed_lag: delay_frames', 'fixed_lag', [{'delay_frames': k} for k in (1, 2, 4, 8, 16)]),
]


def _run(args):
    """Metrics of every method on one synthetic test take."""
    kind, scenario, seed = args
    if kind == 'standard':
        take = simulate(scenario, seconds=SECONDS, rate_hz=RATE_HZ, seed=seed)
    else:
        take = dataset.make_take(seed, real_takes=())
        scenario = 'mixed'
    return scenario, evaluate_methods(METHODS, take.t, take.noisy_p, take.noisy_q,
                                      take.truth_p, take.truth_q)


def _mean(results):
    """Mean of each metric over a list of {method: metrics} (NaN entries skipped)."""
    out = {}
    for method in results[0]:
        out[method] = {c: float(np.nanmean([r[method][c] for r in results]))
                       if any(np.isfinite(r[method][c]) for r in results) else float('nan')
                       for c in COLUMNS}
    return out


def _fmt(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return 'n/a'
    if value != 0 and abs(value) < 0.01:
        return f'{value:.2e}'
    if abs(value) >= 100:
        return f'{value:.0f}'
    return f'{value:.3f}' if abs(value) < 10 else f'{value:.1f}'


def table(rows, columns=COLUMNS, first='method'):
    lines = ['| ' + ' | '.join((first,) + tuple(columns)) + ' |',
             '|' + '---|' * (len(columns) + 1)]
    for name, values in rows.items():
        lines.append('| ' + ' | '.join([name] + [_fmt(values.get(c)) for c in columns]) + ' |')
    return '\n'.join(lines)


def _sweep_point(args):
    label, method, params, seeds = args
    values = []
    for scenario, seed in zip(SCENARIOS, seeds):
        take = simulate(scenario, seconds=SECONDS, rate_hz=RATE_HZ, seed=seed)
        result = run_take(method, take.t, take.noisy_p, take.noisy_q, params)
        p, q = result.p, result.q
        values.append(evaluate(take.t, p, q, take.truth_p, take.truth_q))
    return label, params, {c: float(np.nanmean([v[c] for v in values]))
                           for c in METRIC_NAMES}


def _umeyama(src, dst):
    """Rigid transform (R, t) minimising |R src + t - dst| (no scale)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    rotation, _ = Rotation.align_vectors(dst - mu_d, src - mu_s)
    return rotation, mu_d - rotation.apply(mu_s)


def _interpolate(t_ref, p_ref, q_ref, t):
    p = np.column_stack([np.interp(t, t_ref, p_ref[:, i]) for i in range(3)])
    q = Slerp(t_ref, Rotation.from_quat(quat.make_continuous(q_ref)))(t).as_quat()
    return p, q


def real_tum_noise(seed):
    truth = read_trajectory(REAL / 'tum_fr1_xyz_groundtruth.txt')
    q = quat.make_continuous(quat.normalize(truth.q))
    rows = {}
    for level in REAL_NOISE:
        take = add_tracker_noise(truth.t, truth.p, q, NOISE_PRESETS[level], seed)
        rows[level] = evaluate_methods(METHODS, take.t, take.noisy_p, take.noisy_q,
                                       take.truth_p, take.truth_q)
    return rows


def real_tum_slam():
    """
    RGB-D SLAM estimate vs mocap truth interpolated at the SLAM stamps.

    The SLAM file is in the mocap world frame up to a small rigid offset; the estimate is
    rigidly aligned (Umeyama, no scale) to the truth before smoothing; the RMSE before
    alignment is reported too.
    """
    truth = read_trajectory(REAL / 'tum_fr1_xyz_groundtruth.txt')
    slam = read_trajectory(REAL / 'tum_fr1_xyz_rgbdslam.txt')
    inside = (slam.t >= truth.t[0]) & (slam.t <= truth.t[-1])
    t, p, q = slam.t[inside], slam.p[inside], quat.normalize(slam.q[inside])
    truth_p, truth_q = _interpolate(truth.t, truth.p, quat.normalize(truth.q), t)
    before = float(np.sqrt(np.mean(np.sum((p - truth_p) ** 2, axis=1))) * 1e3)
    rotation, shift = _umeyama(p, truth_p)
    p = rotation.apply(p) + shift
    q = (rotation * Rotation.from_quat(q)).as_quat()
    rows = evaluate_methods(METHODS, t, p, q, truth_p, truth_q)
    info = {'poses': int(len(t)), 'rate_hz': float(1.0 / np.median(np.diff(t))),
            'rmse_before_alignment_mm': before,
            'alignment_rotation_deg': float(np.degrees(rotation.magnitude())),
            'alignment_shift_mm': float(np.linalg.norm(shift) * 1e3)}
    return rows, info


def real_mosys():
    """
    Measure each causal method on the Mo-Sys StarTracker take (no truth).

    Jitter and lag of each causal method, measured against the offline rts result of the
    same take.
    """
    from camstab_ros.io.mosys_f4 import f4_to_pose, read_f4
    take = read_f4(REAL / 'mosys_startracker_A003_C001_01.f4')
    stamps, poses = [], []
    for packet in take:
        tc = packet.timecode
        rate = packet.frame_rate or 25.0
        frames = ((tc.hours * 60 + tc.minutes) * 60 + tc.seconds) * rate + tc.frames
        stamps.append(frames / rate)
        poses.append(f4_to_pose(packet))
    t = np.array(stamps) - stamps[0]
    p = np.array([pose[0] for pose in poses])
    q = quat.make_continuous(quat.normalize(np.array([pose[1] for pose in poses])))
    keep = np.r_[True, np.diff(t) > 0]
    t, p, q = t[keep], p[keep], q[keep]
    result = run_take('rts', t, p, q)
    ref_p, ref_q = result.p, result.q
    rows = {}
    raw = None
    for method in METHODS:
        if method == 'rts':
            continue
        result = run_take(method, t, p, q)
        est_p, est_q = result.p, result.q
        err = est_p - ref_p
        jitter_mm = float(np.sqrt(np.mean(np.sum(np.diff(err, axis=0) ** 2, axis=1))) * 1e3)
        err_q = quat.multiply(quat.conjugate(ref_q), est_q)
        jitter_deg = float(np.degrees(np.sqrt(np.mean(
            quat.angle_between(err_q[:-1], err_q[1:]) ** 2))))
        raw = raw or (jitter_mm, jitter_deg)
        rows[method] = {
            'jitter_vs_rts_mm': jitter_mm, 'jitter_vs_rts_deg': jitter_deg,
            'jitter_reduction_pct': 100.0 * (1.0 - jitter_mm / raw[0]),
            'rot_jitter_reduction_pct': 100.0 * (1.0 - jitter_deg / raw[1]),
            'lag_vs_rts_ms': lag_seconds(t, est_p, est_q, ref_p, ref_q) * 1e3}
    info = {'poses': int(len(t)), 'seconds': float(t[-1]),
            'travel_m': float(np.sum(np.linalg.norm(np.diff(p, axis=0), axis=1))),
            'turn_deg': float(np.degrees(np.sum(quat.angle_between(q[:-1], q[1:]))))}
    return rows, info


def figures(standard, sweep, out_dir, example_seed):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = dict(zip(METHODS, plt.rcParams['axes.prop_cycle'].by_key()['color'] * 2))
    # Trade-off: still jitter vs RMSE, classical swept, learned as points.
    fig, ax = plt.subplots(figsize=(7, 5))
    swept = [method for _, method, _ in SWEEPS]
    for (label, method, _), style in zip(SWEEPS, ('o-', 'o-', 'o-', 'v:', 'o-')):
        points = [(v['pos_rmse_mm'], v['jitter_still_mm']) for lab, _, v in sweep
                  if lab == label]
        ax.plot(*zip(*points), style, ms=3, color=colours[method], label=label)
    for method in ('passthrough', 'lstm', 'hybrid', 'rts') + tuple(dict.fromkeys(swept)):
        v = standard[method]
        marker = '*' if method in LEARNED else ('s' if method in swept else 'D')
        ax.plot(v['pos_rmse_mm'], v['jitter_still_mm'], marker, ms=14 if marker == '*' else 8,
                color=colours[method], mec='k',
                label=f'{method} (default)' if method in swept else method)
    raw = standard['passthrough']['jitter_still_mm']
    ax.axhline(0.1 * raw, ls='--', color='grey', lw=1, label='10% of raw still jitter')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('pos_rmse_mm (test split, mean over scenarios)')
    ax.set_ylabel('jitter_still_mm')
    ax.set_title('Still jitter vs RMSE: classical parameter sweeps and learned models')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / 'tradeoff_jitter_still_vs_rmse.png', dpi=110)
    plt.close(fig)
    # Jitter vs lag scatter.
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method in METHODS:
        v = standard[method]
        ax.plot(v['lag_ms'], v['jitter_still_mm'], '*' if method in LEARNED else 'o', ms=12,
                color=colours[method], mec='k')
        ax.annotate(method, (v['lag_ms'], v['jitter_still_mm']), xytext=(5, 3),
                    textcoords='offset points', fontsize=8)
    ax.set_xlabel('lag_ms (mean over test scenarios)')
    ax.set_ylabel('jitter_still_mm')
    ax.set_yscale('log')
    ax.set_title('Jitter vs lag, every method (test split)')
    fig.tight_layout()
    fig.savefig(out_dir / 'jitter_vs_lag.png', dpi=110)
    plt.close(fig)
    # Error over time of one test take.
    take = simulate('dolly', seconds=SECONDS, rate_hz=RATE_HZ, seed=example_seed)
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    speed = np.linalg.norm(np.gradient(take.truth_p, take.t, axis=0), axis=1)
    for method in ('passthrough', 'kalman', 'one_euro', 'lstm', 'hybrid', 'rts'):
        result = run_take(method, take.t, take.noisy_p, take.noisy_q)
        p, _ = result.p, result.q
        error = np.linalg.norm(p - take.truth_p, axis=1) * 1e3
        axes[0].plot(take.t, error, lw=0.8 if method != 'hybrid' else 1.4,
                     color=colours[method], label=method,
                     alpha=0.5 if method == 'passthrough' else 1.0)
    axes[0].set_ylabel('position error (mm)')
    axes[0].set_yscale('log')
    axes[0].legend(fontsize=7, ncol=6)
    axes[0].set_title(f'Error over time, test take dolly seed {example_seed}, 60 Hz, '
                      'default tracker noise')
    axes[1].plot(take.t, speed, color='k', lw=1)
    axes[1].set_ylabel('true speed (m/s)')
    axes[1].set_xlabel('time (s)')
    fig.tight_layout()
    fig.savefig(out_dir / 'error_over_time.png', dpi=110)
    plt.close(fig)


def verdict(overall):
    """Check the issue's target on a set of mean metrics; return the verdict as text."""
    classical = min(('kalman', 'one_euro'), key=lambda m: overall[m]['pos_rmse_mm'])
    best, hybrid = overall[classical], overall['hybrid']
    gain = 100.0 * (1.0 - hybrid['pos_rmse_mm'] / best['pos_rmse_mm'])
    still = 100.0 * hybrid['jitter_still_mm'] / overall['passthrough']['jitter_still_mm']
    ok_rmse, ok_lag = gain >= 15.0, hybrid['lag_ms'] <= best['lag_ms']
    if math.isfinite(still):
        still_text = (f'jitter_still {still:.1f}% of raw (target <= 10%: '
                      f'{"met" if still <= 10.0 else "NOT met"})')
    else:
        still_text = 'jitter_still n/a (the true camera is never still here)'
    return (f'better classical: `{classical}` (pos_rmse_mm {best["pos_rmse_mm"]:.3f}, '
            f'lag_ms {best["lag_ms"]:.2f}). hybrid: pos_rmse_mm {hybrid["pos_rmse_mm"]:.3f} '
            f'= {gain:+.1f}% vs it (target >= +15%: {"met" if ok_rmse else "NOT met"}); '
            f'lag_ms {hybrid["lag_ms"]:.2f} (no worse: {"met" if ok_lag else "NOT met"}); '
            f'{still_text}.')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--takes', type=int, default=3, help='test takes per scenario')
    parser.add_argument('--mixed-takes', type=int, default=36,
                        help='test takes in mixed conditions (rates 24-240 Hz, all noise)')
    parser.add_argument('--out', default=str(ROOT / 'docs' / 'evaluation.md'))
    parser.add_argument('--figures', default=str(ROOT / 'docs' / 'figures'))
    parser.add_argument('--workers', type=int, default=2)
    args = parser.parse_args(argv)
    seeds = iter(TEST_SEEDS)
    jobs = [('standard', s, next(seeds)) for s in SCENARIOS for _ in range(args.takes)]
    mixed_jobs = [('mixed', None, next(seeds)) for _ in range(args.mixed_takes)]
    sweep_seeds = [next(seeds) for _ in SCENARIOS]
    sweep_jobs = [(label, method, params, sweep_seeds) for label, method, values in SWEEPS
                  for params in values]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        standard = list(pool.map(_run, jobs))
        mixed = list(pool.map(_run, mixed_jobs))
        sweep = list(pool.map(_sweep_point, sweep_jobs))
        tum_noise = pool.submit(real_tum_noise, 7)
        tum_slam = pool.submit(real_tum_slam)
        mosys = pool.submit(real_mosys)
        tum_noise, (slam_rows, slam_info), (mosys_rows, mosys_info) = (
            tum_noise.result(), tum_slam.result(), mosys.result())
    per_scenario = {s: _mean([r for sc, r in standard if sc == s]) for s in SCENARIOS}
    overall = _mean([r for _, r in standard])
    mixed_overall = _mean([r for _, r in mixed])
    standard_for_plot = {m: {c: float(np.nanmean([per_scenario[s][m][c] for s in SCENARIOS]))
                             for c in COLUMNS} for m in METHODS}
    figures(standard_for_plot, sweep, Path(args.figures), sweep_seeds[SCENARIOS.index('dolly')])

    lines = ['# Evaluation of every smoother', '',
             'Generated by `.venv/bin/python -m training.evaluate` '
             f'(`--takes {args.takes} --mixed-takes {args.mixed_takes}`). Methods run with '
             'their default parameters and the shipped models, as `camstab evaluate` runs '
             'them (streaming `update()`; `rts` offline). `us_per_pose`: median cost of one '
             'update in this run (evaluation runs two processes side by side; see '
             '`camstab bench` for the per-pose cost). Synthetic takes use test seeds only '
             '(training/splits.py).', '',
             f'## Synthetic test split: overall ({len(jobs)} takes, {len(SCENARIOS)} '
             f'scenarios x {args.takes}, {SECONDS:g} s at {RATE_HZ:g} Hz, default tracker '
             'noise)', '', table(overall), '', '**Target:** ' + verdict(overall), '',
             f'## Synthetic test split: mixed conditions ({len(mixed_jobs)} takes: random '
             'scenario, 24-240 Hz, noise from quiet optical to inside-out, outliers, '
             'dropouts, stamp jitter, FreeD quantisation; the training generator on test '
             'seeds)', '', table(mixed_overall), '', '**Target:** ' + verdict(mixed_overall), '',
             '## Synthetic test split per scenario', '']
    for scenario in SCENARIOS:
        lines += [f'### {scenario}', '', table(per_scenario[scenario]), '']
    lines += ['## Classical parameter sweeps (trade-off curves of the figure)', '',
              table({f'{label.split(":")[0]} ' + ', '.join(
                  f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                  for k, v in params.items()): values for label, params, values in sweep},
                  METRIC_NAMES, 'method, parameters'), '']
    lines += ['## Real motion: TUM fr1_xyz motion capture + simulated tracker noise', '',
              'Truth: the motion-capture trajectory (100 Hz, 30 s, handheld Kinect). Noise: '
              "the simulator's presets added to it (seed 7).", '']
    for level in REAL_NOISE:
        lines += [f'### noise preset `{level}`', '', table(tum_noise[level]), '',
                  '**Target:** ' + verdict(tum_noise[level]), '']
    lines += ['## Real tracker: TUM fr1_xyz RGB-D SLAM estimate vs motion capture', '',
              f'{slam_info["poses"]} poses at ~{slam_info["rate_hz"]:.0f} Hz, truth '
              'interpolated at the SLAM stamps. The SLAM file is in the mocap frame up to a '
              'small rigid offset: RMSE before alignment '
              f'{slam_info["rmse_before_alignment_mm"]:.1f} mm; the estimate was rigidly '
              'aligned to the truth (Umeyama, no scale: '
              f'{slam_info["alignment_rotation_deg"]:.2f} deg, '
              f'{slam_info["alignment_shift_mm"]:.1f} mm) before smoothing. The SLAM error '
              'is mostly slow drift, not jitter: no causal smoother can remove it.', '',
              table(slam_rows), '']
    mosys_cols = ('jitter_vs_rts_mm', 'jitter_reduction_pct', 'jitter_vs_rts_deg',
                  'rot_jitter_reduction_pct', 'lag_vs_rts_ms')
    lines += ['## Real tracker: Mo-Sys StarTracker take (no truth)', '',
              f'{mosys_info["poses"]} poses at 25 Hz over {mosys_info["seconds"]:.0f} s '
              f'(travel {mosys_info["travel_m"]:.2f} m, turn {mosys_info["turn_deg"]:.0f} '
              'deg; stamps from the timecode). Reference: the offline `rts` result of the '
              'same take. jitter_vs_rts: RMS frame-to-frame change of (method - rts); '
              'reduction relative to the raw stream; lag: the time shift against rts.', '',
              table(mosys_rows, mosys_cols), '']
    matrix_json = ROOT / 'docs' / 'matrix.json'
    if matrix_json.is_file():
        lines += ['## The tracker matrix: every tracker, rate and motion', '',
                  'From the last run of `.venv/bin/python -m training.matrix` (its table and '
                  'method: [matrix.md](matrix.md)): worst and geometric-mean ratios to the '
                  'raw input over simulated and real takes x `optical_fine`, `optical`, '
                  '`inside_out` x 25/60/240 Hz, with the per-cell oracle.', '',
                  matrix.table(json.loads(matrix_json.read_text())['figures']), '']
    lines += ['## Figures', '',
              '- `docs/figures/tradeoff_jitter_still_vs_rmse.png`: still jitter vs RMSE, '
              'classical methods swept over their parameters, learned models as points.',
              '- `docs/figures/jitter_vs_lag.png`: still jitter vs lag of every method.',
              '- `docs/figures/error_over_time.png`: position error over one test take.', '']
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text('\n'.join(lines))
    json_data = {'overall': overall, 'mixed': mixed_overall, 'per_scenario': per_scenario,
                 'tum_noise': tum_noise, 'tum_slam': slam_rows, 'tum_slam_info': slam_info,
                 'mosys': mosys_rows, 'mosys_info': mosys_info,
                 'sweep': [{'curve': c, 'params': p, 'metrics': v} for c, p, v in sweep]}
    out.with_suffix('.json').write_text(json.dumps(
        json_data, indent=1, default=float).replace('NaN', 'null') + '\n')
    print('\n'.join(lines[:40]))
    print(f'wrote {out} and {out.with_suffix(".json")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
