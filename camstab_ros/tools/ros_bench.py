"""
`camstab bench --ros`: end-to-end latency of the stabiliser node over real DDS.

A driver node publishes the noisy poses of a simulated take at `rate_hz` to two nodes in
their own processes, at the same ticks: the installed `stabilizer` and a plain relay
(subscription -> publish in the callback, same QoS), the floor that DDS and rclpy impose.
Latency is publish on `pose_in` -> receive on `pose_out` in the driver (one clock), per
message matched by stamp; drops are poses sent without a reply. Everything runs on a
private ROS_DOMAIN_ID limited to this host. The resident memory of both nodes is sampled
once a second. With `hostile`, every HOSTILE_PERIOD_S the stabiliser also gets one pose
no tracker can send (a rotation of the cases of the bad-input table), which must be
dropped and counted without disturbing the stream (a soak test of the robustness rules).

`python -m camstab_ros.tools.ros_bench` runs the relay node.
"""
from pathlib import Path
import sys
import tempfile
import time

from camstab_ros.nodes.conversions import make_pose_stamped, ns_to_stamp, stamp_to_ns
from camstab_ros.nodes.scaffolding import run_node
from camstab_ros.tools.common import UsageError, write_json
from camstab_ros.tools.processes import (Children, choose_domain_id, node_command, private_context,
                                         private_env, rss_mb, sigint_as_flag, spin_while)
from geometry_msgs.msg import PoseStamped
import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data


TARGETS = ('stabilizer', 'relay')
HOSTILE_PERIOD_S = 2.0
WARMUP_S = 1.0
DISCOVERY_TIMEOUT_S = 30.0
DRAIN_S = 1.0


class BenchError(RuntimeError):
    """The benchmark's nodes did not start or did not answer."""


def run_ros_bench(args):
    """Run the benchmark from parsed arguments, print the report; exit code."""
    try:
        result = ros_latency_benchmark(args.seconds, args.rate_hz, args.method,
                                       args.domain_id, args.hostile)
    except ValueError as exc:  # bad input, e.g. a take too long to simulate
        raise UsageError(str(exc)) from None
    except BenchError as exc:
        print(f'bench --ros failed: {exc}', file=sys.stderr)
        return 1
    print(format_report(result))
    if getattr(args, 'json', None):
        write_json(args.json, result)
    return 0 if all(result[t]['received'] for t in TARGETS) else 1


class RelayNode(Node):
    """pose_in -> pose_out in the subscription callback, with the stabiliser's QoS."""

    NODE_NAME = 'camstab_relay'

    def __init__(self):
        super().__init__(self.NODE_NAME)
        publisher = self.create_publisher(PoseStamped, 'pose_out', 10)
        self.create_subscription(PoseStamped, 'pose_in', publisher.publish,
                                 qos_profile_sensor_data)


def _latency_stats(sent, received):
    """Compute latency figures in ms from sent {stamp: ns} and received {stamp: ns}."""
    latencies = np.array([(received[s] - sent[s]) * 1e-6 for s in received if s in sent])
    figures = {'sent': len(sent), 'received': len(latencies),
               'dropped': len(sent) - len(latencies)}
    if len(latencies):
        figures.update(p50_ms=float(np.percentile(latencies, 50)),
                       p99_ms=float(np.percentile(latencies, 99)),
                       max_ms=float(latencies.max()), mean_ms=float(latencies.mean()))
    return figures


def ros_latency_benchmark(seconds=60.0, rate_hz=240.0, method='kalman', domain_id=None,
                          hostile=False):
    """
    Measure stabiliser and relay latency in one run.

    Returns a dict of figures: {'stabilizer': {sent, received, dropped, p50_ms, p99_ms,
    max_ms, mean_ms}, 'relay': {...}, 'stabilizer_diagnostics': {...}, 'seconds',
    'rate_hz', 'method', 'domain_id'}.
    """
    from camstab_ros.core.simulation import simulate

    if not (seconds > 0 and 1.0 <= rate_hz <= 1000.0):
        raise ValueError(f'need seconds > 0 and 1 <= rate_hz <= 1000, got {seconds}, {rate_hz}')
    domain_id = choose_domain_id(domain_id)
    take = simulate('handheld', seconds + WARMUP_S + 1.0, rate_hz, seed=3)
    with tempfile.TemporaryDirectory(prefix='camstab_ros_bench_') as log_dir:
        return _run_nodes(take, seconds, rate_hz, method, domain_id,
                          Children(private_env(domain_id), Path(log_dir)), hostile)


def _run_nodes(take, seconds, rate_hz, method, domain_id, children, hostile):
    with private_context(domain_id) as context, sigint_as_flag() as interrupted:
        try:
            children.start('stabilizer', node_command('stabilizer') + [
                '--ros-args', '-p', f'method:={method}', '-p', 'publish_tf:=false',
                '-r', 'pose_in:=/bench/stabilizer/pose_in',
                '-r', 'pose_out:=/bench/stabilizer/pose_out'])
            children.start('relay', [
                sys.executable, '-m', 'camstab_ros.tools.ros_bench', '--ros-args',
                '-r', 'pose_in:=/bench/relay/pose_in', '-r', 'pose_out:=/bench/relay/pose_out'])
            result = _drive(context, take, seconds, rate_hz, children, interrupted, hostile)
        finally:
            codes = children.stop_all()
    result.update(seconds=seconds, rate_hz=rate_hz, method=method, domain_id=domain_id,
                  node_exit_codes=codes, hostile=hostile)
    return result


def _hostile_pose(k, stamp_ns, position, quaternion):
    """Return the k-th hostile pose (a rotation of the cases no tracker can send)."""
    cases = (
        (stamp_ns, (float('nan'), 0.0, 0.0), quaternion, 'world'),
        (stamp_ns, position, (1e300, 0.0, 0.0, 1e300), 'world'),     # valid: renormalised
        (stamp_ns, (1e300, 0.0, 0.0), quaternion, 'world'),
        (stamp_ns, position, (0.0, 0.0, 0.0, 0.0), 'world'),
        (stamp_ns + 10 ** 15, position, quaternion, 'world'),        # 1e6 s in the future
        (stamp_ns - 10 ** 11, position, quaternion, 'world'),        # 100 s back
        (stamp_ns, position, quaternion, 'evil_frame'),
    )
    stamp, p, q, frame = cases[k % len(cases)]
    return make_pose_stamped(ns_to_stamp(stamp), frame, p, q)


def _drive(context, take, seconds, rate_hz, children, interrupted, hostile=False):
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node('camstab_bench_driver', context=context)
    publishers = {t: node.create_publisher(PoseStamped, f'/bench/{t}/pose_in', 10)
                  for t in TARGETS}
    sent = {t: {} for t in TARGETS}
    received = {t: {} for t in TARGETS}
    diagnostics = {}
    measuring = {'on': False}

    def on_reply(target):
        def callback(msg):
            now = time.perf_counter_ns()
            stamp_ns = stamp_to_ns(msg.header.stamp)
            if stamp_ns in sent[target]:
                received[target][stamp_ns] = now
        return callback

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name.startswith('/camera_stabilizer:'):
                diagnostics.update({kv.key: kv.value for kv in status.values})

    for target in TARGETS:
        node.create_subscription(PoseStamped, f'/bench/{target}/pose_out', on_reply(target), 100)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    frame = {'i': 0, 'hostile': 0}
    base_ns = time.time_ns()
    rss = {t: [] for t in TARGETS}
    hostile_every = max(int(HOSTILE_PERIOD_S * rate_hz), 1)

    def tick():
        i = frame['i'] % len(take.t)
        stamp_ns = base_ns + round(frame['i'] * 1e9 / rate_hz)
        msg = make_pose_stamped(ns_to_stamp(stamp_ns), 'world', take.noisy_p[i], take.noisy_q[i])
        order = TARGETS if frame['i'] % 2 == 0 else TARGETS[::-1]
        for target in order:
            publish_ns = time.perf_counter_ns()
            publishers[target].publish(msg)
            if measuring['on']:
                sent[target][stamp_ns] = publish_ns
        if hostile and measuring['on'] and frame['i'] % hostile_every == hostile_every // 2:
            # 1 ms after the good pose (float seconds of a ROS stamp resolve ~0.2 us).
            publishers['stabilizer'].publish(_hostile_pose(
                frame['hostile'], stamp_ns + 1_000_000, take.noisy_p[i], take.noisy_q[i]))
            frame['hostile'] += 1
        frame['i'] += 1

    def sample_rss():
        if measuring['on']:
            for target in TARGETS:
                rss[target].append(rss_mb(children.pid(target)))

    try:
        deadline = time.monotonic() + DISCOVERY_TIMEOUT_S

        def discovering():
            failed = children.failed()
            if failed or time.monotonic() > deadline:
                raise BenchError('the nodes did not come up: ' + '; '.join(
                    f'{name} (exit {failed.get(name)}): {children.log_tail(name, 3)}'
                    for name in children.procs))
            return not all(publishers[t].get_subscription_count() and
                           node.count_publishers(f'/bench/{t}/pose_out') for t in TARGETS)

        spin_while(executor, discovering, interrupted)

        def run_for(duration_s):
            end = time.monotonic() + duration_s
            spin_while(executor, lambda: time.monotonic() < end, interrupted, 0.01)

        timer = node.create_timer(1.0 / rate_hz, tick)
        rss_timer = node.create_timer(1.0, sample_rss)
        run_for(WARMUP_S)  # poses sent while the pipeline warms up are not counted
        measuring['on'] = True
        run_for(seconds)
        measuring['on'] = False
        node.destroy_timer(timer)
        node.destroy_timer(rss_timer)
        run_for(DRAIN_S + 1.0)  # replies in flight, then diagnostics of an idle node
    finally:
        executor.shutdown()
        node.destroy_node()
    result = {t: {**_latency_stats(sent[t], received[t]), **_rss_figures(rss[t])}
              for t in TARGETS}
    result['stabilizer_diagnostics'] = dict(diagnostics)
    result['hostile_sent'] = frame['hostile']
    return result


def _rss_figures(samples):
    """Summarise once-a-second RSS samples (MB): first, last and largest."""
    if not samples:
        return {}
    return {'rss_first_mb': samples[0], 'rss_last_mb': samples[-1],
            'rss_max_mb': max(samples)}


def format_report(result):
    """Format the latency figures of both nodes as a table."""
    lines = [f'end-to-end latency pose_in -> pose_out over DDS, {result["rate_hz"]:g} Hz for '
             f'{result["seconds"]:g} s (stabiliser method {result["method"]})',
             '| node | sent | received | dropped | p50_ms | p99_ms | max_ms |',
             '|---|---|---|---|---|---|---|']
    for target in TARGETS:
        r = result[target]
        figures = ' | '.join(f'{r[k]:.3f}' if k in r else '-'
                             for k in ('p50_ms', 'p99_ms', 'max_ms'))
        lines.append(f'| {target} | {r["sent"]} | {r["received"]} | {r["dropped"]} | '
                     f'{figures} |')
    for target in TARGETS:
        r = result[target]
        if 'rss_first_mb' in r:
            lines.append(f'{target} RSS: {r["rss_first_mb"]:.1f} MB after warm-up, '
                         f'{r["rss_last_mb"]:.1f} MB at the end, max {r["rss_max_mb"]:.1f} MB')
    diag = result.get('stabilizer_diagnostics') or {}
    if diag:
        lines.append(f'stabiliser update(): median {diag.get("processing_us_median")} us, '
                     f'p99 {diag.get("processing_us_p99")} us (its own timing)')
        accounted = int(diag.get('published', 0)) + int(diag.get('pending', 0)) + int(
            diag.get('dropped_invalid', 0))
        lines.append(f'stabiliser accounting: received {diag.get("received")} = published '
                     f'{diag.get("published")} + pending {diag.get("pending")} + dropped '
                     f'{diag.get("dropped_invalid")}: '
                     + ('holds' if str(accounted) == diag.get('received') else 'BROKEN'))
        if result.get('hostile'):
            reasons = {k[len('dropped.'):]: v for k, v in diag.items()
                       if k.startswith('dropped.') and v != '0'}
            lines.append(f'hostile poses sent: {result["hostile_sent"]}; dropped by reason: '
                         + ', '.join(f'{k} {v}' for k, v in reasons.items()))
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(run_node(RelayNode))
