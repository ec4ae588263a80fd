"""The `camstab` command: simulate, smooth, evaluate and benchmark camera-pose takes.

Exit codes: 0 success, 2 bad input (arguments, parameters, files), 1 other failures.
"""
import argparse
import json
import logging
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np

from camstab_ros import bag_tools, demo, replay, ros_bench
from camstab_ros.core import ParameterError, list_methods, make_smoother, smoother_class
from camstab_ros.core.metrics import METRIC_NAMES, evaluate
from camstab_ros.core.pipeline import stabilize_take
from camstab_ros.io.trajectory import TrajectoryError, read_trajectory, write_trajectory

log = logging.getLogger('camstab')

# Takes longer than this many poses show a progress bar.
PROGRESS_MIN_POSES = 20000
BENCH_SCENARIO = dict(scenario='handheld', seconds=60.0, rate_hz=120.0, seed=7)


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _progress(total, desc):
    if total < PROGRESS_MIN_POSES:
        return None
    from tqdm import tqdm
    return partial(tqdm, total=total, desc=desc, unit='pose', file=sys.stderr, leave=False)


def _parse_params(pairs):
    params = {}
    for pair in pairs or ():
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise UsageError(f'--param expects KEY=VALUE, got {pair!r}')
        params[key.strip()] = value.strip()
    return params


def _make(method, params=None):
    try:
        return make_smoother(method, **(params or {}))
    except ParameterError as exc:
        raise UsageError(str(exc)) from None


def _read(path):
    try:
        return read_trajectory(path)
    except TrajectoryError as exc:
        raise UsageError(str(exc)) from None


def _stabilize(smoother, traj, timed=False):
    try:
        result = stabilize_take(smoother, traj.t, traj.p, traj.q, timed=timed,
                                progress=_progress(len(traj), smoother.name))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for reason, count in sorted(result.dropped.items()):
        rows = ', '.join(str(i + 1) for i in result.dropped_rows[:5])
        log.warning('%d pose(s) invalid (%s), first at pose %s: held the previous estimate',
                    count, reason, rows)
    if result.renormalized:
        log.warning('%d non-unit quaternion(s) renormalised', result.renormalized)
    return result


def _format_table(rows, columns, first='method'):
    def cell(value):
        if isinstance(value, str):
            return value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return 'n/a'
        return f'{value:.3f}' if abs(value) < 1000 else f'{value:.0f}'
    header = [first] + list(columns)
    body = [[name] + [cell(values.get(c)) for c in columns] for name, values in rows.items()]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ['  '.join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append('  '.join('-' * w for w in widths))
    for r in body:
        lines.append('  '.join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))))
    return '\n'.join(lines)


def _write_json(path, data):
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    Path(path).write_text(json.dumps(clean(data), indent=2) + '\n')


def _methods_arg(text):
    methods = [m.strip() for m in text.split(',') if m.strip()]
    for m in methods:
        smoother_class_or_usage(m)
    return methods


def smoother_class_or_usage(method):
    try:
        return smoother_class(method)
    except ParameterError as exc:
        raise UsageError(str(exc)) from None


def cmd_simulate(args):
    from camstab_ros.core.simulation import NOISE_PRESETS, simulate
    try:
        take = simulate(args.scenario, seconds=args.seconds, rate_hz=args.rate, seed=args.seed,
                        noise=NOISE_PRESETS[args.noise])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    comment = (f'camstab simulate --scenario {args.scenario} --seconds {args.seconds} '
               f'--rate {args.rate} --seed {args.seed} --noise {args.noise}')
    write_trajectory(out / 'noisy.tum', take.t, take.noisy_p, take.noisy_q, comment)
    write_trajectory(out / 'truth.tum', take.t, take.truth_p, take.truth_q, comment)
    print(f'wrote {len(take.t)} poses to {out / "noisy.tum"} and {out / "truth.tum"}')
    return 0


def _is_bag(path):
    """A rosbag2 directory or file (anything that is not a trajectory file)."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() in ('.mcap', '.db3', '')


def cmd_smooth(args):
    params = _parse_params(args.param)
    smoother = _make(args.method, params)
    if _is_bag(args.input):
        if not args.topic:
            raise UsageError('smoothing a bag needs --topic (the PoseStamped topic)')
        try:
            summary = bag_tools.smooth_bag(args.input, args.output, args.topic, args.method,
                                           params)
        except bag_tools.BagError as exc:
            raise UsageError(str(exc)) from None
        print(f"{args.method}: smoothed {summary['poses']} poses of {args.topic} -> "
              f"{summary['stabilized_topic']} in {args.output} "
              f"({summary['messages_copied']} other messages copied)")
        return 0
    traj = _read(args.input)
    result = _stabilize(smoother, traj)
    try:
        write_trajectory(args.output, traj.t, result.p, result.q,
                         comment=f'camstab smooth --method {args.method}')
    except (TrajectoryError, OSError) as exc:
        raise UsageError(f'cannot write {args.output}: {exc}') from None
    stats = ', '.join(f'{k} {v}' for k, v in result.stats.items() if v)
    print(f'{args.method}: smoothed {len(traj)} poses -> {args.output}'
          + (f' ({stats})' if stats else ''))
    return 0


def _matched_truth(truth, noisy, truth_path):
    """Truth rows at the noisy stamps (to the microsecond); every noisy stamp must match."""
    keys = {round(t * 1e6): i for i, t in enumerate(truth.t)}
    rows = [keys.get(round(t * 1e6)) for t in noisy.t]
    missing = sum(r is None for r in rows)
    if missing:
        raise UsageError(f'{truth_path}: no truth pose at {missing} of the {len(rows)} '
                         'noisy timestamps (the files must share timestamps)')
    return truth.p[rows], truth.q[rows]


def evaluate_methods(methods, noisy, truth_p, truth_q, params=None):
    """{method: metrics} for each method on a noisy take, with its per-pose cost."""
    results = {}
    for method in methods:
        smoother = _make(method, (params or {}).get(method))
        result = _stabilize(smoother, noisy, timed=True)
        try:
            metrics = evaluate(noisy.t, result.p, result.q, truth_p, truth_q)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        metrics['us_per_pose'] = float(np.median(result.us_per_update))
        results[method] = metrics
    return results


def cmd_evaluate(args):
    methods = args.methods or list_methods()
    noisy, truth = _read(args.noisy), _read(args.truth)
    truth_p, truth_q = _matched_truth(truth, noisy, args.truth)
    results = evaluate_methods(methods, noisy, truth_p, truth_q)
    print(_format_table(results, METRIC_NAMES + ('us_per_pose',)))
    if args.json:
        _write_json(args.json, results)
    return 0


def benchmark(methods, repeats=3):
    """Per-pose cost {method: {median_us, p99_us, ratio}} on a fixed seeded take."""
    from camstab_ros.core.simulation import simulate
    take = simulate(**BENCH_SCENARIO)
    figures = {}
    for method in ['passthrough'] + [m for m in methods if m != 'passthrough']:
        smoother = _make(method)
        costs = np.concatenate([
            stabilize_take(smoother, take.t, take.noisy_p, take.noisy_q,
                           timed=True).us_per_update for _ in range(repeats)])
        figures[method] = {'median_us': float(np.median(costs)),
                           'p99_us': float(np.percentile(costs, 99)),
                           'causal': smoother.causal}
    base = figures['passthrough']['median_us']
    for values in figures.values():
        values['ratio'] = values['median_us'] / base
    return figures


def cmd_bench(args):
    if args.ros:
        from camstab_ros import ros_bench
        return ros_bench.run(args)
    methods = args.methods or list_methods()
    figures = benchmark(methods)
    take = BENCH_SCENARIO
    print(f"per-pose cost on a seeded {take['scenario']} take, {take['seconds']:.0f} s at "
          f"{take['rate_hz']:.0f} Hz, one update() per pose (offline methods: smooth() / N)")
    rows = {m: {**v, 'mode': 'streaming' if v['causal'] else 'offline'}
            for m, v in figures.items()}
    print(_format_table(rows, ('mode', 'median_us', 'p99_us', 'ratio')))
    if args.json:
        _write_json(args.json, figures)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog='camstab', description='Camera-pose stabilisation for virtual production.')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)

    p = sub.add_parser('simulate', help='simulate a camera take with tracker noise',
                       description='Write DIR/noisy.tum and DIR/truth.tum for a simulated take.')
    p.add_argument('--scenario', default='handheld', help='camera move (default handheld)')
    p.add_argument('--seconds', type=float, default=20.0, help='duration in s (default 20)')
    p.add_argument('--rate', type=float, default=60.0, help='tracker rate in Hz (default 60)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    p.add_argument('--noise', default='default', help='tracker noise preset (default default)')
    p.add_argument('--out', required=True, help='output directory')
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser('smooth', help='smooth a recorded take',
                       description='Smooth INPUT into OUTPUT (one pose per input pose, same '
                                   'format: .tum/.txt TUM text or .csv).')
    p.add_argument('--method', default='kalman', help='smoothing method (default kalman): '
                   + ', '.join(list_methods()))
    p.add_argument('--param', action='append', metavar='KEY=VALUE',
                   help='a method parameter, repeatable (see `camstab methods`)')
    p.add_argument('--topic', help='with a rosbag2 INPUT: the PoseStamped topic to smooth; '
                                   'OUTPUT gets every topic plus <topic>_stabilized')
    p.add_argument('input', help='trajectory (.tum, .txt, .csv) or rosbag2 (directory, '
                                 '.mcap, .db3)')
    p.add_argument('output')
    p.set_defaults(func=cmd_smooth)

    p = sub.add_parser('evaluate', help='compare methods against ground truth',
                       description='Smooth NOISY with each method and print the metrics of '
                                   'DESIGN.md against TRUTH (same timestamps).')
    p.add_argument('--truth', required=True, help='ground-truth trajectory')
    p.add_argument('--methods', type=_methods_arg, help='comma-separated (default: all)')
    p.add_argument('--json', help='also write {method: {metric: value}} to this file')
    p.add_argument('noisy')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('bench', help='per-pose cost of each method',
                       description='Median and p99 cost per pose of each method on a fixed '
                                   'seeded take, with the ratio to passthrough.')
    p.add_argument('--methods', type=_methods_arg, help='comma-separated (default: all)')
    p.add_argument('--json', help='also write the figures to this file')
    p.add_argument('--ros', action='store_true',
                   help='instead: end-to-end latency of the stabilizer node over DDS, next to '
                        'a plain relay node (the floor DDS and rclpy impose)')
    ros_bench.add_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('demo', help='live demo: simulator -> stabilizer over real DDS',
                       description='Start the jitter_simulator and stabilizer executables with '
                                   'config/params.yaml on a private ROS_DOMAIN_ID, print a '
                                   'live line per second and a final table, write a plot and '
                                   'an mcap rosbag of the three topics.')
    demo.configure_parser(p)
    p.set_defaults(func=demo.run)

    p = sub.add_parser('replay', help='send a recording over UDP as FreeD (a stand-in '
                                      'tracker)',
                       description='Send a recording as FreeD D1 datagrams with its original '
                                   'timing: Mo-Sys F4 capture, TUM/CSV trajectory or raw '
                                   'FreeD.')
    replay.configure_parser(p)
    p.set_defaults(func=replay.run)

    p = sub.add_parser('bag', help='record, play and inspect rosbag2 bags without rosbag2',
                       description='rosbag2 tools on the rosbags library; bags stay readable '
                                   'by ros2 bag.')
    bag_tools.configure_parser(p)
    p.set_defaults(func=bag_tools.run)

    p = sub.add_parser('methods', help='list methods and their parameters',
                       description='List every smoothing method with its parameters, '
                                   'defaults, units and valid ranges.')
    p.set_defaults(func=cmd_methods)
    return parser


def cmd_methods(args):
    for name in list_methods():
        cls = smoother_class(name)
        print(f'{name}: {cls.description}')
        for key, spec in cls.PARAMS.items():
            print(f'  {key} = {spec.default!r}  ({spec.describe_range()}): {spec.description}')
    return 0


def main(argv=None):
    logging.basicConfig(format='camstab: %(levelname)s: %(message)s', level=logging.INFO)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        return args.func(args)
    except UsageError as exc:
        print(f'camstab: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('camstab: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
