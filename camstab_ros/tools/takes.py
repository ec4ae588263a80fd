"""`camstab simulate|smooth|evaluate|methods`: takes on disk through the one pipeline."""
from functools import partial
from pathlib import Path
import sys

from camstab_ros.core.evaluation import evaluate_methods, matched_truth, run_take
from camstab_ros.core.lstm_model import ModelError
from camstab_ros.core.methods import list_methods, smoother_class
from camstab_ros.core.metrics import METRIC_NAMES
from camstab_ros.core.simulation import NOISE_PRESETS, simulate
from camstab_ros.core.stabilizer import stabilizer_for
from camstab_ros.io.trajectory import read_trajectory, TrajectoryError, write_trajectory
from camstab_ros.tools.common import (add_view_arguments, format_table, methods_arg, parse_params,
                                      UsageError, view_of, write_json)
import numpy as np


# Takes longer than this many poses show a progress bar.
PROGRESS_MIN_POSES = 20000


def _progress(total, desc):
    if total < PROGRESS_MIN_POSES:
        return None
    from tqdm import tqdm
    tqdm.monitor_interval = 0  # no monitor thread: a process with threads never forks
    return partial(tqdm, total=total, desc=desc, unit='pose', file=sys.stderr, leave=False)


# Seconds per unit of --time-unit; a median frame interval outside STEP_RANGE_S (a tracker
# at 1 Hz to 100 kHz) means stamps in another unit.
TIME_UNITS = {'s': 1.0, 'ms': 1e-3, 'us': 1e-6, 'ns': 1e-9}
STEP_RANGE_S = (1e-5, 1.0)


def read_take(path, time_unit='s'):
    """Read a trajectory; its stamps in seconds (UsageError when they cannot be)."""
    try:
        traj = read_trajectory(path)
    except TrajectoryError as exc:
        raise UsageError(str(exc)) from None
    t = traj.t * TIME_UNITS[time_unit]
    if len(t) > 1:
        step = float(np.median(np.diff(t)))
        if not STEP_RANGE_S[0] <= step <= STEP_RANGE_S[1]:
            raise UsageError(
                f"{path}: the median time step is {step:.3g} s, not a tracker's (1 Hz to "
                f'100 kHz): are the stamps in another unit? Say it with --time-unit '
                f'{{{",".join(TIME_UNITS)}}} (now {time_unit})')
    return traj, t


def add_time_unit_argument(parser):
    """Add --time-unit to parser."""
    parser.add_argument('--time-unit', choices=tuple(TIME_UNITS), default='s',
                        help='unit of the stamps in the files (default s)')


def configure_simulate(parser):
    """Add the options of `camstab simulate` to parser."""
    parser.add_argument('--scenario', default='handheld', help='camera move (default handheld)')
    parser.add_argument('--seconds', type=float, default=20.0, help='duration in s (default 20)')
    parser.add_argument('--rate', type=float, default=60.0, help='tracker rate in Hz (default 60)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--noise', default='default',
                        help='tracker noise preset (default default): '
                        + ', '.join(NOISE_PRESETS))
    parser.add_argument('--out', required=True, help='output directory')


def run_simulate(args):
    """Write DIR/noisy.tum and DIR/truth.tum for a simulated take."""
    if args.noise not in NOISE_PRESETS:
        raise UsageError(f'unknown noise preset {args.noise!r}; available: '
                         + ', '.join(NOISE_PRESETS))
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


def configure_smooth(parser):
    """Add the options of `camstab smooth` to parser."""
    parser.add_argument('--method', default='kalman', help='smoothing method (default '
                        'kalman): ' + ', '.join(list_methods()))
    parser.add_argument('--param', action='append', metavar='KEY=VALUE',
                        help='a method parameter, repeatable (see `camstab methods`); '
                        'dropout_timeout_s, reset_jump_m and max_position_m apply to every '
                        'method')
    parser.add_argument('--topic', help='with a rosbag2 INPUT: the PoseStamped topic to '
                        'smooth; OUTPUT gets every topic plus <topic>_stabilized')
    parser.add_argument('--strict', action='store_true',
                        help='exit 2 when a learned method cannot load its model (without '
                        'it: a warning, and the method runs kalman instead)')
    add_time_unit_argument(parser)
    parser.add_argument('input', help='trajectory (.tum, .txt, .csv) or rosbag2 (directory, '
                        '.mcap, .db3)')
    parser.add_argument('output')


def _is_bag(path):
    """Tell whether path is a rosbag2 directory or file (not a trajectory file)."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() in ('.mcap', '.db3', '')


def run_smooth(args):
    """Smooth a trajectory file or a bag's pose topic through the pipeline."""
    params = parse_params(args.param)
    stabilizer_for(args.method, params)  # parameter errors before any file is read
    if _is_bag(args.input):
        from camstab_ros.tools.bag_tools import BagError, smooth_bag
        if not args.topic:
            raise UsageError('smoothing a bag needs --topic (the PoseStamped topic)')
        try:
            summary = smooth_bag(args.input, args.output, args.topic, args.method, params,
                                 args.strict)
        except (BagError, ModelError) as exc:
            raise UsageError(str(exc)) from None
        print(f"{args.method}: smoothed {summary['poses']} poses of {args.topic} -> "
              f"{summary['stabilized_topic']} in {args.output} "
              f"({summary['messages_copied']} other messages copied)")
        print(f"tracker noise (white, high-frequency part): {summary['tracker_noise']}")
        return 0
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise UsageError(f'{args.output}: the output would overwrite the input; choose '
                         'another path')
    traj, t = read_take(args.input, args.time_unit)
    try:
        result = run_take(args.method, t, traj.p, traj.q, params,
                          progress=_progress(len(traj), args.method), strict=args.strict)
    except (ValueError, ModelError) as exc:
        raise UsageError(str(exc)) from None
    write_trajectory(args.output, traj.t, result.p, result.q,
                     comment=f'camstab smooth --method {args.method}')
    stats = ', '.join(f'{k} {v}' for k, v in result.stats.items() if v)
    print(f'{args.method}: smoothed {len(traj)} poses -> {args.output}'
          + (f' ({stats})' if stats else ''))
    print(f'tracker noise (white, high-frequency part): {result.tracker_noise}')
    return 0


def configure_evaluate(parser):
    """Add the options of `camstab evaluate` to parser."""
    parser.add_argument('--truth', required=True, help='ground-truth trajectory')
    parser.add_argument('--methods', type=methods_arg, help='comma-separated (default: all)')
    parser.add_argument('--json', help='also write {method: {metric: value}} to this file')
    add_view_arguments(parser)
    parser.add_argument('--strict', action='store_true',
                        help='exit 2 when a learned method cannot load its model (without '
                        'it: a warning, and the method runs kalman instead)')
    add_time_unit_argument(parser)
    parser.add_argument('noisy')


def run_evaluate(args):
    """Print the metrics of each method on NOISY against TRUTH."""
    methods = args.methods or list_methods()
    (noisy, t), (truth, truth_t) = (read_take(args.noisy, args.time_unit),
                                    read_take(args.truth, args.time_unit))
    try:
        truth_p, truth_q = matched_truth(truth_t, truth.p, truth.q, t)
    except ValueError as exc:
        raise UsageError(f'{args.truth}: {exc}') from None
    try:
        results = evaluate_methods(methods, t, noisy.p, noisy.q, truth_p, truth_q,
                                   strict=args.strict, view=view_of(args))
        noise = run_take('passthrough', t, noisy.p, noisy.q).tracker_noise
    except (ValueError, ModelError) as exc:
        raise UsageError(str(exc)) from None
    print(f'tracker noise (white, high-frequency part): {noise}')
    print(format_table(results, METRIC_NAMES + ('us_per_pose',)))
    if args.json:
        write_json(args.json, results)
    return 0


def configure_methods(parser):
    """`camstab methods` has no options."""


def run_methods(args):
    """List every method with its parameters, defaults, units and valid ranges."""
    for name in list_methods():
        cls = smoother_class(name)
        print(f'{name}: {cls.description}')
        for key, spec in cls.PARAMS.items():
            default = (f'{spec.default:g}' if isinstance(spec.default, float)
                       else repr(spec.default))
            print(f'  {key} = {default}  ({spec.describe_range()}): {spec.description}')
    return 0
