"""
The nodes as separate processes over real DDS (rclpy, Fast DDS, a private domain).

Simulator and stabiliser run as the installed console scripts (or `python -m` from a
source tree, as `camstab demo` does); this process observes them with its own node,
spinning only inside `spin_until`, so no spin thread can outlive the tests.
"""
import argparse
from collections import Counter
import json
import os
import re
import shutil
import signal
import subprocess
import sys

from camstab_ros.core.metrics import evaluate
from camstab_ros.core.simulation import simulate
from camstab_ros.io.rosbag import bag_topics, POSE_STAMPED, read_bag
from camstab_ros.io.trajectory import read_trajectory, write_trajectory
from camstab_ros.nodes.camera_stabilizer import TFMessage
from camstab_ros.nodes.conversions import (make_pose_stamped, pose_stamped_to_arrays,
                                           pose_with_covariance_to_arrays, sec_to_stamp,
                                           stamp_to_ns)
from camstab_ros.share import share_dir
from camstab_ros.tools import demo, ros_bench
from camstab_ros.tools.demo import SIMULATOR_REMAPS, STABILIZER_REMAPS
from camstab_ros.tools.processes import node_command, ros_arguments
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Path
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile
import ros_helpers
from ros_helpers import start, stop


PARAMS_FILE = share_dir() / 'config' / 'params.yaml'
TRUTH, NOISY, STABILIZED = (SIMULATOR_REMAPS['pose_truth'], SIMULATOR_REMAPS['pose_noisy'],
                            STABILIZER_REMAPS['pose_out'])
SIMULATOR_RATE_HZ = 60.0  # config/params.yaml
COV, PATH = STABILIZER_REMAPS['pose_out_cov'], STABILIZER_REMAPS['path_out']
BAD_IN, BAD_OUT = '/bad/pose_in', '/bad/pose_out'
BAD_NODE = 'bad_input_stabilizer'


class Observer(ros_helpers.Observer):
    """The observer of this module: the demo's topics and the bad-input node's output."""

    def __init__(self, domain_id):
        super().__init__(domain_id, (TRUTH, NOISY, STABILIZED, BAD_OUT))
        self.covariances = self.record(COV, PoseWithCovarianceStamped)
        self.paths = self.record(PATH, Path)


@pytest.fixture(scope='module')
def ros(module_ros_domain, tmp_path_factory):
    """
    Start the nodes under test and yield the observer node.

    Simulator -> stabiliser (fixed_lag) wired as in the launch file, a second stabiliser
    fed by the test on /bad/*, and the observer node.
    """
    logs = tmp_path_factory.mktemp('logs')
    env = module_ros_domain.env()
    procs = {
        'jitter_simulator': start(node_command('jitter_simulator') + ros_arguments(
            PARAMS_FILE, {'scenario': 'dolly', 'seed': 2}, SIMULATOR_REMAPS),
            env, logs / 'jitter_simulator.log'),
        # fixed_lag (outputs come 6 frames late, with their own stamps), tuned to smooth
        # hard: offline it leaves ~12 % of the tracker's jitter on this take.
        'stabilizer': start(node_command('stabilizer') + ros_arguments(
            PARAMS_FILE, {'method': 'fixed_lag', 'fixed_lag.process_noise': 0.01},
            STABILIZER_REMAPS), env, logs / 'stabilizer.log'),
        BAD_NODE: start(node_command('stabilizer') + ros_arguments(
            PARAMS_FILE, {'method': 'ema', 'ema.time_constant_s': 1.0,
                          'dropout_timeout_s': 0.3, 'input_frame_id': 'world'},
            {'pose_in': BAD_IN, 'pose_out': BAD_OUT, '__node': BAD_NODE}), env,
            logs / f'{BAD_NODE}.log'),
    }
    observer = Observer(module_ros_domain.domain_id)
    observer.procs = procs
    try:
        observer.spin_until(lambda: all(observer.poses[t] for t in (TRUTH, NOISY, STABILIZED)),
                            what='poses on all three topics')
        # Let start-up settle: three interpreters importing at once can stall the
        # simulator, which then publishes the frames it owes in a burst that the
        # stabiliser's best-effort depth-5 input cannot hold (sensor-data QoS, by design).
        observer.spin_for(2.0)
        yield observer
    finally:
        observer.close()
        for proc in procs.values():
            stop(proc)


def by_stamp(messages):
    return {stamp_to_ns(m.header.stamp): m for m in messages}


def assert_one_output_per_input(ros, out_stamps):
    """
    Check that the outputs carry simulator stamps, in order, once each.

    The outputs also cover the frames between the first and the last output. Checked
    against the simulator's frame grid (60 Hz, no stamp jitter in params.yaml), not against
    what this node saw: on a loaded machine it can miss a message. The stabiliser's input
    is best effort (sensor-data QoS), so a starved machine may lose a pose or two before
    the stabiliser sees it: 2 % may miss.
    """
    reference = stamp_to_ns(ros.poses[TRUTH][0].header.stamp)
    frames = (np.array(out_stamps) - reference) * SIMULATOR_RATE_HZ / 1e9
    assert np.all(np.abs(frames - np.round(frames)) < 1e-6)
    assert out_stamps == sorted(set(out_stamps))
    expected = round(frames[-1] - frames[0]) + 1
    assert len(out_stamps) >= 0.98 * expected, (len(out_stamps), expected)


def metrics_against_truth(messages, truth):
    rows = [(pose_stamped_to_arrays(m), pose_stamped_to_arrays(truth[k]))
            for k, m in by_stamp(messages).items() if k in truth]
    rows.sort(key=lambda r: r[0][0])
    t = np.array([r[0][0] for r in rows])
    return evaluate(t, np.array([r[0][1] for r in rows]), np.array([r[0][2] for r in rows]),
                    np.array([r[1][1] for r in rows]), np.array([r[1][2] for r in rows]))


def test_stabilized_poses_keep_stamps_and_frame_and_cut_jitter(ros):
    start_index = {t: len(ros.poses[t]) for t in (TRUTH, NOISY, STABILIZED)}
    ros.spin_for(4.0)
    noisy = ros.poses[NOISY][start_index[NOISY]:]
    stabilized = ros.poses[STABILIZED][start_index[STABILIZED]:]
    truth = by_stamp(ros.poses[TRUTH])
    assert len(stabilized) > 150  # ~60 Hz
    assert_one_output_per_input(ros, [stamp_to_ns(m.header.stamp) for m in stabilized])
    assert {m.header.frame_id for m in stabilized} == {'world'}
    noisy_metrics = metrics_against_truth(noisy, truth)
    stab_metrics = metrics_against_truth(stabilized, truth)
    assert stab_metrics['jitter_mm'] < 0.25 * noisy_metrics['jitter_mm'], (
        stab_metrics, noisy_metrics)
    diagnostics = ros.diagnostics_of('camera_stabilizer')
    assert diagnostics['method'] == 'fixed_lag'
    assert float(diagnostics['input_rate_hz']) > 30.0
    assert float(diagnostics['processing_us_median']) > 0.0


def set_parameters(ros, node_name, **values):
    client = AsyncParameterClient(ros.node, node_name)
    ros.spin_until(lambda: client.services_are_ready(), what=f'{node_name} parameter services')
    future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    ros.spin_until(future.done, what='set_parameters reply')
    return future.result().results


def test_optional_outputs_covariance_and_path(ros):
    # config/params.yaml turns on pose_out_cov and path_out (length 500, 10 Hz).
    ros.spin_until(lambda: len(ros.covariances) > 30 and len(ros.paths) > 3,
                   what='covariance and path messages')
    poses = by_stamp(ros.poses[STABILIZED])
    for msg in ros.covariances[-30:]:
        stamp = stamp_to_ns(msg.header.stamp)
        _, p, q, cov = pose_with_covariance_to_arrays(msg)
        if stamp in poses:
            np.testing.assert_array_equal(p, pose_stamped_to_arrays(poses[stamp])[1])
        assert np.all(np.diag(cov) > 0.0) and np.allclose(cov, cov.T)
    path = ros.paths[-1]
    assert 0 < len(path.poses) <= 500
    stamps = [stamp_to_ns(p.header.stamp) for p in path.poses]
    assert stamps == sorted(stamps) and stamps[-1] == stamp_to_ns(path.header.stamp)
    assert path.header.frame_id == 'world'


def test_missing_tf2_msgs_is_logged_once(ros):
    log = ros.procs['stabilizer'].log_path.read_text()
    if TFMessage is not None:
        pytest.skip('tf2_msgs is installed here: /tf is published')
    assert log.count('tf2_msgs is not importable') == 1


def test_simulator_plays_the_core_simulation_with_one_stamp_per_frame(ros):
    take = simulate('dolly', seconds=60.0, rate_hz=60.0, seed=2)
    noisy = by_stamp(ros.poses[NOISY])
    truth = [m for m in ros.poses[TRUTH] if stamp_to_ns(m.header.stamp) in noisy]
    # The tracker's noisy poses are unique: they say which frame of the take came first.
    first = pose_stamped_to_arrays(noisy[stamp_to_ns(truth[0].header.stamp)])[1]
    k = int(np.argmin(np.linalg.norm(take.noisy_p - first, axis=1)))
    n = min(len(truth), len(take.t) - k)
    rows = [(pose_stamped_to_arrays(m), pose_stamped_to_arrays(noisy[stamp_to_ns(
        m.header.stamp)])) for m in truth[:n]]
    np.testing.assert_array_equal([r[0][1] for r in rows], take.truth_p[k:k + n])
    np.testing.assert_array_equal([r[1][1] for r in rows], take.noisy_p[k:k + n])
    # Stamps: start + the take's own times, to the nanosecond.
    stamps = np.array([stamp_to_ns(m.header.stamp) for m in truth[:n]])
    offsets = np.round(take.t[k:k + n] * 1e9).astype(np.int64)
    assert np.all(np.abs(np.diff(stamps) - np.diff(offsets)) <= 1)


@pytest.mark.parametrize('loop', [True, False])
def test_simulator_loops_or_stops_at_the_end_of_the_take(ros_domain, tmp_path, loop):
    # 100 frames: 2 s at 50 Hz to see several loops; without looping 5 s at 20 Hz, so that
    # discovery on a loaded machine does not take the whole take.
    seconds, rate_hz = (2.0, 50.0) if loop else (5.0, 20.0)
    observer = Observer(ros_domain.domain_id)
    topic = '/sim_test/pose_truth'
    received = []
    observer.node.create_subscription(PoseStamped, topic, received.append,
                                      QoSProfile(depth=1000))
    log = tmp_path / 'sim.log'
    proc = start(node_command('jitter_simulator') + ros_arguments(
        PARAMS_FILE, {'take_seconds': seconds, 'rate_hz': rate_hz, 'loop': loop},
        {'pose_truth': topic, 'pose_noisy': '/sim_test/pose_noisy'}), ros_domain.env(), log)
    try:
        if loop:
            observer.spin_until(lambda: len(received) > 150, what='more than one take')
        else:
            observer.spin_until(lambda: 'take finished' in log.read_text(),
                                what='the end of the take')
            count = len(received)
            observer.spin_for(0.5)
            assert len(received) == count  # nothing after the end
        assert stop(proc) == 0
    finally:
        stop(proc)
        observer.close()
    stamps = [stamp_to_ns(m.header.stamp) for m in received]
    assert all(np.diff(stamps) > 0)
    if loop:
        # The take replays: a frame comes again one take (100 frames, 2 s) later.
        by_time = by_stamp(received)
        replayed = [s for s in stamps if s + 2_000_000_000 in by_time]
        assert replayed
        assert all(by_time[s + 2_000_000_000].pose == by_time[s].pose for s in replayed)
    else:
        assert 0 < len(received) <= 100
        assert stamps[-1] - stamps[0] < 5_000_000_000


def truth_speed(ros):
    """Speed of the true camera over the last two truth poses, m/s."""
    (t0, p0, _), (t1, p1, _) = (pose_stamped_to_arrays(m) for m in ros.poses[TRUTH][-2:])
    return np.linalg.norm(p1 - p0) / (t1 - t0)


def test_method_switch_during_a_move_continues_without_a_jump(ros):
    # one_euro trails a moving camera by centimetres where fixed_lag does not: switching
    # abruptly mid-move would jump by that much.
    ros.spin_until(lambda: truth_speed(ros) > 0.3, what='the camera to move')
    before = len(ros.poses[STABILIZED])
    results = set_parameters(ros, 'camera_stabilizer', method='one_euro')
    assert results[0].successful, results[0].reason
    ros.spin_until(lambda: ros.diagnostics_of('camera_stabilizer').get('method') == 'one_euro',
                   what='diagnostics reporting one_euro')
    ros.spin_for(1.5)
    outputs = ros.poses[STABILIZED][before:]
    assert_one_output_per_input(ros, [stamp_to_ns(m.header.stamp) for m in outputs])
    truth, noisy = by_stamp(ros.poses[TRUTH]), by_stamp(ros.poses[NOISY])
    rows = [(stamp_to_ns(m.header.stamp), pose_stamped_to_arrays(m)[1]) for m in outputs]
    rows = [(s, p, pose_stamped_to_arrays(noisy[s])[1], pose_stamped_to_arrays(truth[s])[1])
            for s, p in rows if s in truth and s in noisy]
    stamps = np.array([r[0] for r in rows])
    err = np.array([r[1] - r[3] for r in rows])
    noisy_err = np.array([r[2] - r[3] for r in rows])
    consecutive = np.diff(stamps) < 1.5e9 / 60.0  # steps between neighbouring frames only
    steps = np.linalg.norm(np.diff(err, axis=0), axis=1)[consecutive]
    noisy_steps = np.linalg.norm(np.diff(noisy_err, axis=0), axis=1)[consecutive]
    # The cross-fade keeps every step of the output within the tracker's own noise steps.
    assert steps.max() < 2 * noisy_steps.max(), (steps.max(), noisy_steps.max())


def matched_outputs(ros, count=11):
    """Spin until `count` stabilised poses from now on have their input seen; return them."""
    start = len(ros.poses[STABILIZED])

    def matched():
        noisy = by_stamp(ros.poses[NOISY])
        return [m for m in ros.poses[STABILIZED][start:]
                if stamp_to_ns(m.header.stamp) in noisy]
    ros.spin_until(lambda: len(matched()) >= count, what=f'{count} matched outputs')
    return matched()


def latest_outputs_pass_input_through(ros, start, count=11):
    """Tell whether the last `count` outputs since `start` whose input was seen equal it."""
    noisy = by_stamp(ros.poses[NOISY])
    latest = [m for m in ros.poses[STABILIZED][start:]
              if stamp_to_ns(m.header.stamp) in noisy][-count:]
    if len(latest) < count:
        return False
    for msg in latest:
        _, p, q = pose_stamped_to_arrays(msg)
        _, p_in, q_in = pose_stamped_to_arrays(noisy[stamp_to_ns(msg.header.stamp)])
        if np.max(np.abs(p - p_in)) > 1e-12 or abs(abs(np.dot(q, q_in)) - 1.0) > 1e-12:
            return False
    return True


def test_smoother_parameters_take_effect_at_run_time(ros):
    # ema with zero time constants is an exact passthrough; then a 0.2 s average is not.
    # The switch cross-fades over 1 s of stamps: on a loaded machine the node may still be
    # working through them a while after the call, so wait for the passthrough to show.
    start = len(ros.poses[STABILIZED])
    results = set_parameters(ros, 'camera_stabilizer', method='ema',
                             **{'ema.time_constant_s': 0.0, 'ema.rot_time_constant_s': 0.0})
    assert all(r.successful for r in results), [r.reason for r in results]
    ros.spin_until(lambda: latest_outputs_pass_input_through(ros, start),
                   what='ema with zero time constants to pass the input through exactly')
    results = set_parameters(ros, 'camera_stabilizer', **{'ema.time_constant_s': 0.2})
    assert results[0].successful
    ros.spin_for(1.5)
    checked = matched_outputs(ros)
    noisy = by_stamp(ros.poses[NOISY])
    differing = [m for m in checked
                 if m.pose.position != noisy[stamp_to_ns(m.header.stamp)].pose.position]
    assert len(differing) == len(checked) > 10


def test_learned_method_without_its_model_runs_kalman_and_says_so(ros, tmp_path):
    results = set_parameters(ros, 'camera_stabilizer', method='hybrid',
                             model_path=str(tmp_path / 'missing'))
    assert all(r.successful for r in results), [r.reason for r in results]
    ros.spin_until(lambda: ros.diagnostics_of('camera_stabilizer').get('method') == 'hybrid',
                   what='diagnostics reporting hybrid')
    status, values = ros.diagnostics['/camera_stabilizer: pose stabilisation']
    assert status.hardware_id == NOISY  # the tracker source: the input topic
    assert values['model_status'].startswith('fallback to kalman')
    assert str(tmp_path / 'missing') in values['model_status']
    assert status.level == DiagnosticStatus.WARN and 'running kalman' in status.message
    count = len(ros.poses[STABILIZED])
    ros.spin_for(0.5)
    assert len(ros.poses[STABILIZED]) > count + 10  # still stabilising


def test_a_hostile_model_card_set_at_run_time_falls_back_and_the_node_lives(ros, tmp_path):
    # 200,000 nested brackets (RecursionError in a JSON parser), then a card whose weights
    # are /dev/zero (a read that never ends): both are fallbacks to kalman, never a crash
    # or a hang.
    nested = tmp_path / 'nested'
    nested.mkdir()
    (nested / 'model_card.json').write_text('[' * 200000)
    endless = tmp_path / 'endless'
    shutil.copytree(share_dir() / 'models' / 'hybrid', endless)
    card = json.loads((endless / 'model_card.json').read_text())
    card['weights']['file'] = '/dev/zero'
    (endless / 'model_card.json').write_text(json.dumps(card))
    for directory, message in ((nested, 'unreadable model card'),
                               (endless, 'relative path inside the model directory')):
        results = set_parameters(ros, 'camera_stabilizer', method='hybrid',
                                 model_path=str(directory))
        assert all(r.successful for r in results), [r.reason for r in results]
        ros.spin_until(lambda: message in ros.diagnostics_of('camera_stabilizer').get(
            'model_status', ''), timeout=10.0, what='the fallback in diagnostics')
        count = len(ros.poses[STABILIZED])
        ros.spin_for(0.5)
        assert len(ros.poses[STABILIZED]) > count + 10  # still stabilising
    assert ros.procs['stabilizer'].poll() is None


@pytest.mark.parametrize('name, value, reason', [
    ('method', 'rts', 'not causal'),
    ('method', 'nope', "unknown method 'nope'"),
    ('kalman.process_noise', -1.0, 'out of range'),
    ('kalman.measurement_noise_m', 1e-9, "'auto' (0: measured online) or 1e-07"),
    ('kalman.model', 'cubic', "'cubic' is not valid"),
    ('timer_rate_hz', 'fast', 'Wrong parameter type'),
])
def test_invalid_parameter_values_are_rejected_with_a_reason(ros, name, value, reason):
    results = set_parameters(ros, 'camera_stabilizer', **{name: value})
    assert not results[0].successful
    assert reason in results[0].reason
    assert ros.diagnostics_of('camera_stabilizer').get('method') != value


def test_measured_noise_is_the_default_and_a_fixed_figure_is_taken(ros):
    # 0 is 'auto' (below the range of a fixed figure, which ROS must still let through).
    assert set_parameters(ros, 'camera_stabilizer', **{
        'kalman.measurement_noise_m': 0.0005})[0].successful
    assert set_parameters(ros, 'camera_stabilizer', **{
        'kalman.measurement_noise_m': 0.0})[0].successful
    assert 'mm /' in ros.diagnostics_of('camera_stabilizer')['tracker_noise']


def publish_and_wait(ros, publisher, messages):
    for msg in messages:
        publisher.publish(msg)
        ros.spin_for(0.01)


def test_bad_messages_are_dropped_counted_and_a_gap_resets(ros):
    publisher = ros.node.create_publisher(PoseStamped, BAD_IN, 10)
    p, q = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 0.0, 1.0])

    def pose(t, position=p, quaternion=q, frame='world'):
        return make_pose_stamped(sec_to_stamp(t), frame, position, quaternion)

    # The first messages after discovery can be lost: probe until one comes back.
    probe = 0
    while not ros.poses[BAD_OUT]:
        assert probe < 300, 'the bad-input stabiliser never answered'
        publish_and_wait(ros, publisher, [pose(90.0 + 0.01 * probe)])
        ros.spin_for(0.05)
        probe += 1
    # The probe's own dropout reset happens now, not in the sequence: on a loaded machine it
    # can come late, so wait until the reset count holds over two diagnostics 0.5 s apart.
    before = ros.fresh_diagnostics_of(BAD_NODE)
    for _ in range(20):
        ros.spin_for(0.5)
        again = ros.fresh_diagnostics_of(BAD_NODE)
        if again['resets'] == before['resets']:
            break
        before = again
    first = len(ros.poses[BAD_OUT])
    publish_and_wait(ros, publisher, [
        pose(100.00), pose(100.01),
        pose(100.02, position=[np.nan, 0.0, 0.0]),
        pose(100.03, quaternion=[0.0, 0.0, 0.0, 0.0]),
        pose(100.005),                                # stamp goes backwards
        pose(100.04, frame='map'),                   # wrong frame id
        pose(100.05, position=p + 0.01),
    ])
    ros.spin_until(lambda: len(ros.poses[BAD_OUT]) >= first + 3, what='three valid outputs')
    ros.spin_for(0.6)  # longer than dropout_timeout_s (0.3 s): the smoother resets
    far = p + np.array([0.5, 0.0, 0.0])
    publish_and_wait(ros, publisher, [pose(102.0, position=far)])
    ros.spin_until(lambda: len(ros.poses[BAD_OUT]) >= first + 4, what='the output after the gap')
    ros.spin_for(0.5)  # and the stream stops: a second reset
    outputs = ros.poses[BAD_OUT][first:]
    assert [stamp_to_ns(m.header.stamp) for m in outputs] == [
        100_000_000_000, 100_010_000_000, 100_050_000_000, 102_000_000_000]
    # After the reset the 1 s average starts afresh at the measurement itself.
    np.testing.assert_array_equal(pose_stamped_to_arrays(outputs[-1])[1], far)
    after = ros.fresh_diagnostics_of(BAD_NODE)

    def delta(key):
        return int(after[key]) - int(before[key])
    assert {k: delta(f'dropped.{k}') for k in (
        'non_finite', 'zero_quaternion', 'stamp_not_increasing', 'wrong_frame_id')} == {
        'non_finite': 1, 'zero_quaternion': 1, 'stamp_not_increasing': 1, 'wrong_frame_id': 1}
    assert delta('dropped_invalid') == 4
    assert delta('received') == 8
    assert delta('resets') == 2
    assert ros.procs[BAD_NODE].poll() is None  # still running
    log = ros.procs[BAD_NODE].log_path.read_text()
    assert re.search(r'dropped a pose stamped [0-9.]+ in frame .world. \(non_finite\)', log)


AGREE_IN, AGREE_OUT, AGREE_NODE = '/agree/pose_in', '/agree/pose_out', 'agree_stabilizer'


def test_the_node_and_camstab_smooth_give_the_same_output(ros, module_ros_domain, tmp_path):
    """
    Check that the node's outputs over real DDS equal the file `camstab smooth` writes.

    One stream with bad rows, a short dropout and a stamp gap (the case where the node
    and `camstab smooth` used to disagree); equal to the precision of the file.
    """
    # The node restarts the stream after dropout_timeout_s of wall time without input; it
    # must exceed any stall of this process's publishing loop (up to 2.8 s seen under load).
    timeout = 4.0
    proc = start(node_command('stabilizer') + ros_arguments(
        PARAMS_FILE, {'method': 'one_euro', 'publish_tf': 'false', 'dropout_timeout_s': timeout},
        {'pose_in': AGREE_IN, 'pose_out': AGREE_OUT, '__node': AGREE_NODE}),
        module_ros_domain.env(), tmp_path / f'{AGREE_NODE}.log')
    outputs = []
    ros.node.create_subscription(PoseStamped, AGREE_OUT, outputs.append, QoSProfile(depth=1000))
    publisher = ros.node.create_publisher(PoseStamped, AGREE_IN, 10)
    try:
        probe = 0
        while not outputs:  # discovery: the first messages can be lost
            assert probe < 300, 'the stabiliser never answered'
            # The node may take any number of probes before an answer gets back, and an idle
            # restart keeps the noise meter's reading: probes stamped further apart than
            # dropout_timeout_s are each a stream of their own, which leaves no reading.
            publisher.publish(make_pose_stamped(sec_to_stamp(10.0 + 2 * timeout * probe), 'world',
                                                [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]))
            ros.spin_for(0.05)
            probe += 1
        ros.spin_for(timeout + 0.5)  # past dropout_timeout_s: the node resets before the stream
        outputs.clear()
        take = simulate('handheld', seconds=5.0, rate_hz=60.0, seed=9)
        t, p, q = take.t + 3000.0, take.noisy_p.copy(), take.noisy_q.copy()
        p[20] = np.nan
        q[40] = 0.0
        keep = np.ones(len(t), dtype=bool)
        keep[60:70] = False                     # a dropout shorter than the timeout
        t[150:] += timeout + 0.5                # a gap longer than the timeout
        t, p, q = t[keep], p[keep], q[keep]
        for i in range(len(t)):
            if i and t[i] - t[i - 1] > 1.0:
                ros.spin_for(timeout + 0.5)     # the stream pauses as its stamps do
            publisher.publish(make_pose_stamped(sec_to_stamp(t[i]), 'world', p[i], q[i]))
            ros.spin_for(0.01)
        ros.spin_until(lambda: len(outputs) >= len(t) - 2, what='every valid output')
        noisy = tmp_path / 'noisy.tum'
        write_trajectory(noisy, t, p, q)
        smoothed = tmp_path / 'smoothed.tum'
        result = subprocess.run([sys.executable, '-m', 'camstab_ros.cli', 'smooth', '--method',
                                 'one_euro', '--param', f'dropout_timeout_s={timeout}', str(noisy),
                                 str(smoothed)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        offline = read_trajectory(smoothed)
    finally:
        stop(proc)
    valid = [i for i in range(len(t)) if i not in (20, 40)]
    node_t = np.array([pose_stamped_to_arrays(m)[0] for m in outputs])
    np.testing.assert_allclose(node_t, t[valid], rtol=0, atol=1e-6)
    node_p = np.array([pose_stamped_to_arrays(m)[1] for m in outputs])
    node_q = np.array([pose_stamped_to_arrays(m)[2] for m in outputs])
    # TUM text holds 9 decimals.
    np.testing.assert_allclose(node_p, offline.p[valid], rtol=0, atol=2e-9)
    np.testing.assert_allclose(np.abs(np.sum(node_q * offline.q[valid], axis=1)), 1.0,
                               rtol=0, atol=1e-9)


def test_nodes_exit_zero_on_sigint(ros):
    for name, proc in ros.procs.items():
        assert proc.poll() is None, f'{name} died early:\n{proc.log_path.read_text()}'
        assert stop(proc) == 0, f'{name}:\n{proc.log_path.read_text()}'


# A node whose timer callback publishes after the context was shut down, as happens when
# Ctrl-C lands while a callback is being dispatched; and one that fails while running.
RACE_NODE = """
import sys
import rclpy
from camstab_ros.nodes.scaffolding import run_node
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node


class RaceNode(Node):
    NODE_NAME = 'shutdown_race'

    def __init__(self):
        super().__init__(self.NODE_NAME)
        self.publisher = self.create_publisher(PoseStamped, 'race', 10)
        self.create_timer(0.01, self.tick)

    def tick(self):
        if sys.argv[1] == 'shutdown':
            rclpy.shutdown()  # what the SIGINT handler does, here at a known moment
        self.publisher.publish(PoseStamped())
        if sys.argv[1] == 'fail':
            raise RuntimeError('a real failure')


sys.exit(run_node(RaceNode, args=[]))
"""


@pytest.mark.parametrize('case, code', [('shutdown', 0), ('fail', 1)])
def test_a_callback_caught_by_the_shutdown_still_exits_zero(ros_domain_env, case, code):
    proc = subprocess.run([sys.executable, '-c', RACE_NODE, case], env=ros_domain_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stdout + proc.stderr
    # The shutdown case exits quietly; a real failure still shows its traceback.
    assert ('a real failure' in proc.stderr) == (case == 'fail')
    assert ('Traceback' in proc.stderr) == (case == 'fail')


@pytest.mark.parametrize('override, message', [
    ({'method': 'rts'}, 'not causal'),
    ({'kalman.process_noise': -1.0}, 'process_noise'),
])
def test_invalid_start_up_configuration_exits_2_with_the_reason(
        ros_domain_env, override, message):
    proc = subprocess.run(node_command('stabilizer') + ros_arguments(PARAMS_FILE, override, {}),
                          env=ros_domain_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr


def demo_args(tmp_path, domain_id, seconds):
    parser = demo.configure_demo(argparse.ArgumentParser())
    return parser.parse_args(['--seconds', str(seconds), '--out', str(tmp_path / 'demo'),
                              '--domain-id', str(domain_id)])


def test_demo_writes_table_plot_and_bag_of_the_three_topics(tmp_path, ros_domain, capsys):
    assert demo.run_demo(demo_args(tmp_path, ros_domain.domain_id, 3)) == 0
    out = tmp_path / 'demo'
    printed = capsys.readouterr().out
    assert '| stabilized |' in printed and 'latency p50' in printed  # table and live lines
    result = json.loads((out / 'metrics.json').read_text())
    noisy, stabilized = result['noisy'], result['stabilized']
    assert stabilized['matched'] > 100
    assert stabilized['jitter_mm'] < noisy['jitter_mm']
    assert 0.0 < stabilized['latency_p50_ms'] <= stabilized['latency_p99_ms']
    assert result['node_exit_codes'] == {'jitter_simulator': 0, 'stabilizer': 0}
    assert (out / 'table.md').read_text().count('\n') == 4
    assert (out / 'demo.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    from PIL import Image
    with Image.open(out / 'audience.gif') as image:  # the audience's view, animated
        assert image.n_frames >= 25 and image.size == (720, 400)
    assert bag_topics(out / 'bag') == {t: POSE_STAMPED for t in (TRUTH, NOISY, STABILIZED)}
    counts = Counter(m.topic for m in read_bag(out / 'bag', decode=False))
    assert counts[STABILIZED] == stabilized['poses'] and counts[NOISY] == noisy['poses']
    # Drops as reported: noisy poses, from the first stabilised one on, without an output.
    stamps = {t: {stamp_to_ns(m.data.header.stamp) for m in read_bag(out / 'bag', [t])}
              for t in (NOISY, STABILIZED)}
    first = min(stamps[STABILIZED])
    expected = {s for s in stamps[NOISY] if s >= first}
    assert stabilized['dropped'] == len(expected - stamps[STABILIZED])


def test_demo_stops_its_nodes_on_ctrl_c(tmp_path, ros_domain_env):
    code = ('import argparse, sys; from camstab_ros.tools import demo; '
            'p = demo.configure_demo(argparse.ArgumentParser()); '
            'sys.exit(demo.run_demo(p.parse_args(sys.argv[1:])))')
    proc = subprocess.Popen(
        [sys.executable, '-c', code, '--seconds', '60', '--out', str(tmp_path / 'demo'),
         '--domain-id', ros_domain_env['ROS_DOMAIN_ID']],
        env=ros_domain_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        pids = [int(p) for p in re.findall(r'(?:jitter_simulator|stabilizer) (\d+)', first)]
        assert len(pids) == 2, first
        live = proc.stdout.readline()  # the first live line: everything is running
        assert 'stabilised' in live, live
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert 'interrupted' in rest
    # What was recorded is kept: the table, the figure and the bag.
    for name in ('table.md', 'metrics.json', 'demo.png', 'bag'):
        assert (tmp_path / 'demo' / name).exists(), (name, rest)
    for pid in pids:  # reaped by the demo: no such process any more
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_ros_benchmark_measures_stabilizer_and_relay(ros_domain):
    result = ros_bench.ros_latency_benchmark(seconds=2.0, rate_hz=120.0, method='kalman',
                                             domain_id=ros_domain.domain_id)
    for target in ros_bench.TARGETS:
        figures = result[target]
        assert figures['sent'] > 200
        assert figures['received'] + figures['dropped'] == figures['sent']
        assert figures['received'] > 0.9 * figures['sent']
        assert 0.0 < figures['p50_ms'] <= figures['p99_ms'] <= figures['max_ms']
    assert result['node_exit_codes'] == {'stabilizer': 0, 'relay': 0}
    assert float(result['stabilizer_diagnostics']['processing_us_median']) > 0.0
    report = ros_bench.format_report(result)
    assert '| stabilizer |' in report and '| relay |' in report
