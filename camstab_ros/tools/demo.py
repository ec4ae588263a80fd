"""
`camstab demo`: the live demo over real DDS, without `launch`.

Starts the installed `jitter_simulator` and `stabilizer` executables as separate processes
with config/params.yaml and the remappings of launch/demo.launch.py, on a private
ROS_DOMAIN_ID limited to this host; records /camera/pose_truth, /camera/pose_noisy and
/camera/pose_stabilized; prints a live line per second; then writes to the output
directory: `table.md` and `metrics.json` (noisy and stabilised against the truth, matched
by stamp), `demo.png` (the noisy and the stabilised pose's errors against the truth over
time: position in mm, rotation in deg, on screen in px; the stillest second shaded) and
`bag/` (rosbag2, mcap, the three topics as received). Every child is
stopped on exit and on Ctrl-C: SIGINT, a grace period, then SIGKILL.
"""
from pathlib import Path
import shutil
import sys
import time

from camstab_ros.core import quaternion as quat
from camstab_ros.core.metrics import DEFAULT_VIEW, evaluate, screen_errors
from camstab_ros.core.params import ParameterError
from camstab_ros.core.simulation import SCENARIOS
from camstab_ros.core.stabilizer import check_method
from camstab_ros.io.rosbag import BagWriter, POSE_STAMPED
from camstab_ros.share import share_dir
from camstab_ros.tools.animate import write_animation
from camstab_ros.tools.common import add_view_arguments, UsageError, view_of, write_json
from camstab_ros.tools.processes import (Children, choose_domain_id, node_command, private_context,
                                         private_env, ros_arguments, sigint_as_flag, spin_while)
import numpy as np


TRUTH, NOISY, STABILIZED = '/camera/pose_truth', '/camera/pose_noisy', '/camera/pose_stabilized'
TOPICS = (TRUTH, NOISY, STABILIZED)
# The remappings of launch/demo.launch.py (test_launch_static checks they agree).
SIMULATOR_REMAPS = {'pose_truth': TRUTH, 'pose_noisy': NOISY,
                    'path_truth': '/camera/path_truth', 'path_noisy': '/camera/path_noisy'}
STABILIZER_REMAPS = {'pose_in': NOISY, 'pose_out': STABILIZED,
                     'pose_out_cov': '/camera/pose_stabilized_cov',
                     'path_out': '/camera/path_stabilized'}
# Launch-argument defaults of launch/demo.launch.py.
DEFAULT_METHOD = 'kalman'
DEFAULT_SCENARIO = 'dolly'
STARTUP_TIMEOUT_S = 30.0
DRAIN_S = 1.0  # > dropout_timeout_s: a delayed method flushes its last frames
STILL_WINDOW_S = 1.0
# Seconds of the audience's view the demo animates (audience.gif).
ANIMATION_SECONDS = 6.0
# The stabiliser's first second (its noise meter and filter settling) is not a hold.
WARMUP_S = 1.0


class DemoError(Exception):
    """The demo could not run or produced no stabilised poses (exit code 1)."""


def configure_demo(parser):
    """Add the demo's options to an argparse parser."""
    parser.add_argument('--seconds', type=float, default=20.0,
                        help='recording time once all three topics have data (default 20)')
    parser.add_argument('--method', default=DEFAULT_METHOD,
                        help=f'stabiliser method (default {DEFAULT_METHOD})')
    parser.add_argument('--scenario', default=DEFAULT_SCENARIO,
                        help=f'simulated camera move (default {DEFAULT_SCENARIO})')
    parser.add_argument('--out', type=Path, default=Path('out/demo'),
                        help='output directory (default out/demo)')
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS_DOMAIN_ID for the demo (default: a random one in 1..100)')
    parser.add_argument('--params-file', type=Path, default=None,
                        help='node parameters (default: the installed config/params.yaml)')
    add_view_arguments(parser)
    return parser


class Recording:
    """What the demo node received: per topic, rows (stamp ns, receive ns, p, q, raw)."""

    def __init__(self):
        self.rows = {topic: [] for topic in TOPICS}
        self.diagnostics = {}
        self.interrupted = False   # Ctrl-C after every topic had data: keep what came

    def add(self, topic, raw, msg, receive_ns, wall_ns):
        stamp = msg.header.stamp
        pose = msg.pose
        self.rows[topic].append((
            stamp.sec * 1_000_000_000 + stamp.nanosec, receive_ns, wall_ns,
            (pose.position.x, pose.position.y, pose.position.z),
            (pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w),
            bytes(raw)))

    def count(self, topic):
        return len(self.rows[topic])

    def arrays(self, topic, since=0):
        """(stamps ns, receive ns, p (N, 3), q (N, 4)) of the rows from index `since`."""
        rows = self.rows[topic][since:]
        return (np.array([r[0] for r in rows], np.int64).reshape(-1),
                np.array([r[1] for r in rows], np.int64).reshape(-1),
                np.array([r[3] for r in rows], float).reshape(-1, 3),
                np.array([r[4] for r in rows], float).reshape(-1, 4))


def _start_node(recording, context):
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from rclpy.qos import QoSProfile
    from rclpy.serialization import deserialize_message

    node = Node('camstab_demo', context=context)
    qos = QoSProfile(depth=1000)

    def recorder(topic):
        def callback(raw):
            receive_ns = time.perf_counter_ns()
            recording.add(topic, raw, deserialize_message(raw, PoseStamped), receive_ns,
                          time.time_ns())
        return callback

    for topic in TOPICS:
        node.create_subscription(PoseStamped, topic, recorder(topic), qos, raw=True)

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name.startswith('/camera_stabilizer:'):
                recording.diagnostics = {kv.key: kv.value for kv in status.values}
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    return node


def match(a_stamps, b_stamps):
    """Return the indices (ia, ib) of the stamps in both (stamps unique within each)."""
    _, ia, ib = np.intersect1d(a_stamps, b_stamps, assume_unique=True, return_indices=True)
    return ia, ib


def compare(recording, since=None, view=DEFAULT_VIEW):
    """
    Metrics of noisy and stabilised against truth, latency and drops.

    since: {topic: row index} to compare only recent rows (the live line).
    """
    since = since or {}
    truth_s, _, truth_p, truth_q = recording.arrays(TRUTH, since.get(TRUTH, 0))
    noisy_s, noisy_r, noisy_p, noisy_q = recording.arrays(NOISY, since.get(NOISY, 0))
    stab_s, stab_r, stab_p, stab_q = recording.arrays(STABILIZED, since.get(STABILIZED, 0))
    result = {}
    for name, (stamps, p, q) in (('noisy', (noisy_s, noisy_p, noisy_q)),
                                 ('stabilized', (stab_s, stab_p, stab_q))):
        it, ie = match(truth_s, stamps)
        finite = np.all(np.isfinite(p[ie]), axis=1) & np.all(np.isfinite(q[ie]), axis=1)
        it, ie = it[finite], ie[finite]
        metrics = {}
        if len(ie) >= 3:
            order = np.argsort(stamps[ie])
            it, ie = it[order], ie[order]
            metrics = evaluate(stamps[ie] * 1e-9, p[ie], q[ie], truth_p[it], truth_q[it],
                               view)
        result[name] = {'poses': int(len(stamps)), 'matched': int(len(ie)), **metrics}
    # Latency: pose_noisy receive -> pose_stabilized receive, same stamp.
    inn, ist = match(noisy_s, stab_s)
    latency_ms = (stab_r[ist] - noisy_r[inn]) * 1e-6
    if len(latency_ms):
        result['stabilized'].update(latency_p50_ms=float(np.percentile(latency_ms, 50)),
                                    latency_p99_ms=float(np.percentile(latency_ms, 99)),
                                    latency_max_ms=float(latency_ms.max()))
    # Drops, counted once both topics of a pair have data: truth frames without their noisy
    # pose (transport), noisy poses without their stabilised pose (transport or stabiliser).
    for name, source, received in (('noisy', truth_s, noisy_s),
                                   ('stabilized', noisy_s, stab_s)):
        if len(source) and len(received):
            expected = source[source >= max(source.min(), received.min())]
            result[name]['dropped'] = int(len(expected) - len(match(expected, received)[0]))
    return result


TABLE_COLUMNS = (('screen_rmse_px', '{:.2f}'), ('screen_jitter_px', '{:.2f}'),
                 ('screen_jitter_still_px', '{:.2f}'),
                 ('pos_rmse_mm', '{:.3f}'), ('jitter_mm', '{:.3f}'), ('jitter_deg', '{:.4f}'),
                 ('lag_ms', '{:.1f}'), ('latency_p50_ms', '{:.2f}'),
                 ('latency_p99_ms', '{:.2f}'), ('dropped', '{:d}'))


def format_table(result):
    """Format the final table (markdown): noisy and stabilised against truth."""
    header = '| topic | poses | ' + ' | '.join(c for c, _ in TABLE_COLUMNS) + ' |'
    lines = [header, '|' + '---|' * (len(TABLE_COLUMNS) + 2)]
    for name in ('noisy', 'stabilized'):
        row = result[name]
        cells = []
        for column, fmt in TABLE_COLUMNS:
            value = row.get(column)
            cells.append('-' if value is None or value != value else fmt.format(value))
        lines.append(f'| {name} | {row["poses"]} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def live_line(elapsed, recording, since, window_s):
    rates = {t: (recording.count(t) - since[t]) / window_s for t in TOPICS}
    text = (f'{elapsed:5.1f} s  truth {rates[TRUTH]:5.1f} Hz  noisy {rates[NOISY]:5.1f} Hz  '
            f'stabilised {rates[STABILIZED]:5.1f} Hz')
    try:
        result = compare(recording, since)
    except ValueError:
        return text
    noisy, stab = result['noisy'], result['stabilized']
    if 'screen_jitter_px' in noisy and 'screen_jitter_px' in stab:
        text += (f'  on screen: error {noisy["screen_rmse_px"]:.2f} -> '
                 f'{stab["screen_rmse_px"]:.2f} px, shake {noisy["screen_jitter_px"]:.2f} -> '
                 f'{stab["screen_jitter_px"]:.2f} px')
    if 'latency_p50_ms' in stab:
        text += f'  latency p50 {stab["latency_p50_ms"]:.2f} ms'
    diagnostics = recording.diagnostics
    if diagnostics:
        text += (f'  [{diagnostics.get("method")}: {diagnostics.get("processing_us_median")} us'
                 f'/pose, dropped {diagnostics.get("dropped_invalid")}]')
    return text


def write_bag(path, recording):
    """Write the three topics as received, at their receive times, to a bag at path."""
    if (path / 'metadata.yaml').is_file():
        shutil.rmtree(path)  # a bag of a previous demo run
    records = sorted((row[2], topic, row[5]) for topic in TOPICS
                     for row in recording.rows[topic])
    with BagWriter(path, 'mcap') as bag:
        for topic in TOPICS:
            bag.add_topic(topic, POSE_STAMPED)
        for wall_ns, topic, raw in records:
            bag.write(topic, wall_ns, raw)
        return bag.count


def stillest_window(t, p, window_s, skip_s=0.0):
    """(start, end) of the window_s stretch after skip_s where the true position moves least."""
    usable = t >= t[0] + skip_s
    if t[-1] - t[0] - skip_s <= window_s:
        usable[:] = True
    t, p = t[usable], p[usable]
    if t[-1] - t[0] <= window_s:
        return t[0], t[-1]
    speed = np.r_[0.0, np.linalg.norm(np.diff(p, axis=0), axis=1)]
    travelled = np.cumsum(speed)
    ends = np.searchsorted(t, t + window_s)
    valid = ends < len(t)
    starts = np.flatnonzero(valid)
    moved = travelled[ends[valid]] - travelled[starts]
    i = starts[int(np.argmin(moved))]
    return t[i], t[i] + window_s


def plot(path, recording, title, view=DEFAULT_VIEW):
    """
    Plot the noisy and the stabilised pose's errors against the truth over time to path.

    Three panels: position error (mm), rotation error (deg) and the on-screen error of the
    view (px), on the stamps all three topics share. The stillest second of the truth
    after the stabiliser's warm-up (WARMUP_S) is shaded: where floating shows.
    """
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    shared = common_poses(recording)
    fig, axes = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
    fig.subplots_adjust(left=0.08, right=0.97, top=0.93, bottom=0.08, hspace=0.12)
    axes[0].set_title(f'{title}: error against the truth (screen: {view.width_px:g} px wide, '
                      f'{view.fov_deg:g} deg, wall at {view.wall_m:g} m)')
    units = ('position error (mm)', 'rotation error (deg)', 'on-screen error (px)')
    for ax, unit in zip(axes, units):
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel('time (s)')
    if shared is None:
        axes[0].text(0.5, 0.5, 'no stamps shared by the three topics', ha='center',
                     transform=axes[0].transAxes)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    t, truth = shared[0], shared[1]
    for (p, q), topic, color, width in ((shared[2], NOISY, 'tab:red', 0.6),
                                        (shared[3], STABILIZED, 'tab:blue', 1.0)):
        errors = (np.linalg.norm(p - truth[0], axis=1) * 1e3,
                  np.degrees(quat.angle_between(q, truth[1])),
                  np.sqrt(np.mean(np.sum(screen_errors(p, q, *truth, view) ** 2, axis=-1),
                                  axis=1)))
        label = 'noisy (tracker)' if topic == NOISY else 'stabilised'
        for ax, values in zip(axes, errors):
            ax.plot(t, values, color=color, lw=width, label=label)
    lo, hi = stillest_window(t, truth[0], STILL_WINDOW_S, WARMUP_S)
    for ax in axes:
        ax.axvspan(lo, hi, color='0.85', zorder=0)
        ax.set_ylim(bottom=0.0)
    axes[0].legend(loc='upper right', title=f'shaded: the stillest {STILL_WINDOW_S:g} s')
    fig.savefig(path, dpi=110)
    plt.close(fig)


def common_poses(recording):
    """
    Return (t in s from the first, truth, noisy, stabilised) on the shared stamps.

    Each pose is (p (N, 3), q (N, 4)); None when fewer than two stamps are shared.
    """
    arrays = {topic: recording.arrays(topic) for topic in TOPICS}
    common = np.intersect1d(np.intersect1d(arrays[TRUTH][0], arrays[NOISY][0]),
                            arrays[STABILIZED][0])
    if len(common) < 2:
        return None
    return ((common - common[0]) * 1e-9, _at_stamps(arrays[TRUTH], common),
            _at_stamps(arrays[NOISY], common), _at_stamps(arrays[STABILIZED], common))


def _at_stamps(topic_arrays, stamps):
    """(p, q) of a topic's rows at the given stamps (each present), hemisphere-aligned."""
    t, _, p, q = topic_arrays
    rows = {stamp: i for i, stamp in enumerate(t.tolist())}
    index = [rows[s] for s in stamps.tolist()]
    return p[index], q[index]


def record(args, children, context, params_file, interrupted):
    """Start the nodes; record until args.seconds after all three topics have data."""
    from rclpy.executors import SingleThreadedExecutor

    recording = Recording()
    node = _start_node(recording, context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        pids = {
            'jitter_simulator': children.start(
                'jitter_simulator', node_command('jitter_simulator') + ros_arguments(
                    params_file, {'scenario': args.scenario}, SIMULATOR_REMAPS)),
            'stabilizer': children.start(
                'stabilizer', node_command('stabilizer') + ros_arguments(
                    params_file, {'method': args.method}, STABILIZER_REMAPS))}
        print(f'demo: {args.method!r} on {args.scenario!r}, ROS_DOMAIN_ID '
              f'{children.env["ROS_DOMAIN_ID"]}, {args.seconds:g} s; pids '
              + ', '.join(f'{name} {pid}' for name, pid in pids.items()), flush=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S

        def starting():
            if children.failed():
                raise DemoError('a node exited during start-up: ' + _failures(children))
            if time.monotonic() > deadline:
                missing = [t for t in TOPICS if recording.count(t) == 0]
                raise DemoError(f'nothing received on {", ".join(missing)} within '
                                f'{STARTUP_TIMEOUT_S:g} s')
            return min(recording.count(t) for t in TOPICS) == 0

        spin_while(executor, starting, interrupted, 0.1)
        start = time.monotonic()
        live = {'tick': start, 'since': {t: recording.count(t) for t in TOPICS}}

        def recording_on():
            if children.failed():
                raise DemoError('a node exited: ' + _failures(children))
            now = time.monotonic()
            if now - live['tick'] >= 1.0:
                print(live_line(now - start, recording, live['since'], now - live['tick']),
                      flush=True)
                live['tick'], live['since'] = now, {t: recording.count(t) for t in TOPICS}
            return now - start < args.seconds

        try:
            spin_while(executor, recording_on, interrupted)
            # Stop the source first, then collect the stabiliser's last outputs.
            children.stop('jitter_simulator')
            end = time.monotonic() + DRAIN_S
            spin_while(executor, lambda: time.monotonic() < end, interrupted)
        except KeyboardInterrupt:
            recording.interrupted = True
    finally:
        executor.shutdown()
        node.destroy_node()
    return recording


def _failures(children):
    return '; '.join(f'{name} exit {code}:\n{children.log_tail(name)}'
                     for name, code in children.failed().items())


def run_demo(args):
    """Run the demo; returns the exit code (0 ok, 1 failure, 130 interrupted)."""
    try:  # bad input: one line, exit 2, before any node starts
        check_method(args.method)
        if args.scenario not in SCENARIOS:
            raise UsageError(f'unknown scenario {args.scenario!r}; valid scenarios: '
                             + ', '.join(SCENARIOS))
        params_file = Path(args.params_file or share_dir() / 'config' / 'params.yaml')
        if not params_file.is_file():
            raise UsageError(f'parameter file {params_file} not found')
        domain_id = choose_domain_id(args.domain_id)
    except (ParameterError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    children = Children(private_env(domain_id), out)
    status = 0
    try:
        with private_context(domain_id) as context, sigint_as_flag() as interrupted:
            try:
                recording = record(args, children, context, params_file, interrupted)
            finally:
                codes = children.stop_all()
    except KeyboardInterrupt:
        print('demo interrupted: nodes stopped before any data came', file=sys.stderr)
        return 130
    except DemoError as exc:
        print(f'demo failed: {exc}', file=sys.stderr)
        return 1
    bad_exits = {name: code for name, code in codes.items() if code != 0}
    if bad_exits:
        print('demo: nodes did not exit cleanly: ' + ', '.join(
            f'{name} exit {code} (log: {out / (name + ".log")})'
            for name, code in bad_exits.items()), file=sys.stderr)
        status = 1
    result = compare(recording, view=view_of(args))
    result['diagnostics'] = recording.diagnostics
    result['node_exit_codes'] = codes
    result.update(method=args.method, scenario=args.scenario, seconds=args.seconds,
                  domain_id=domain_id)
    table = format_table(result)
    print(table)
    diagnostics = recording.diagnostics
    if diagnostics:
        print(f'stabiliser: {diagnostics.get("processing_us_median")} us/pose median, '
              f'{diagnostics.get("processing_us_p99")} us p99; invalid input dropped '
              f'{diagnostics.get("dropped_invalid")}, outliers '
              f'{diagnostics.get("outliers_rejected")}, resets {diagnostics.get("resets")}')
    (out / 'table.md').write_text(table + '\n')
    write_json(out / 'metrics.json', result)
    count = write_bag(out / 'bag', recording)
    plot(out / 'demo.png', recording, f'camstab demo: {args.method} on {args.scenario}',
         view_of(args))
    shared = common_poses(recording)
    if shared is not None:
        write_animation(out / 'audience.gif', *shared, view_of(args),
                        seconds=ANIMATION_SECONDS)
    print(f'wrote {out / "table.md"}, {out / "metrics.json"}, {out / "demo.png"}, '
          f'{out / "audience.gif"} and {out / "bag"} ({count} messages)')
    if recording.interrupted:
        print('demo interrupted: nodes stopped; the figures above are of what was '
              'recorded', file=sys.stderr)
        return 130
    if result['stabilized']['matched'] == 0:
        print('demo failed: no stabilised pose matched the truth', file=sys.stderr)
        status = 1
    return status
