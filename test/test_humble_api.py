"""
The package runs on ROS 2 Humble's rclpy.

What Humble lacks is never called directly, and the nodes work with those features hidden
(test/humble_rclpy/sitecustomize.py).
"""
import ast
import os
from pathlib import Path
import subprocess
import sys
import time

from camstab_ros.nodes.conversions import make_pose_stamped, sec_to_stamp
from camstab_ros.share import share_dir
from camstab_ros.tools.processes import node_command, ros_arguments
from geometry_msgs.msg import PoseStamped
from helpers import PROJECT
import pytest
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from ros_helpers import Observer, start, stop


# rclpy API newer than Humble: {name: the distribution that added it}. A call of one of
# these must go through detection (getattr(obj, name, None)), never directly.
HUMBLE_LACKS = {
    'add_post_set_parameters_callback': 'Iron',
    'add_pre_set_parameters_callback': 'Iron',
    'remove_post_set_parameters_callback': 'Iron',
    'remove_pre_set_parameters_callback': 'Iron',
}
# Keyword arguments newer than Humble: {keyword: the distribution that added it}.
HUMBLE_LACKS_KEYWORDS = {'autostart': 'Jazzy'}
SHIM = Path(__file__).resolve().parent / 'humble_rclpy'
POSE_IN, POSE_OUT, NODE = '/humble/pose_in', '/humble/pose_out', 'humble_stabilizer'


def package_sources():
    return sorted((PROJECT / 'camstab_ros').rglob('*.py'))


def test_nothing_humble_lacks_is_called_directly():
    found = []
    for path in package_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in HUMBLE_LACKS:
                    found.append(f'{path.name}:{node.lineno} {func.attr}()')
                found += [f'{path.name}:{node.lineno} {k.arg}=' for k in node.keywords
                          if k.arg in HUMBLE_LACKS_KEYWORDS]
    assert not found


def test_the_shim_hides_what_humble_lacks():
    code = ('from rclpy.node import Node; import sys; '
            'sys.exit(hasattr(Node, "add_post_set_parameters_callback"))')
    env = dict(os.environ, PYTHONPATH=str(SHIM), CAMSTAB_HUMBLE_RCLPY='1')
    assert subprocess.run([sys.executable, '-c', code], env=env).returncode == 0


@pytest.fixture
def humble_stabilizer(ros_domain, tmp_path):
    env = ros_domain.env()
    env.update(PYTHONPATH=os.pathsep.join(filter(None, (str(SHIM), env.get('PYTHONPATH')))),
               CAMSTAB_HUMBLE_RCLPY='1')
    proc = start(node_command('stabilizer') + ros_arguments(
        share_dir() / 'config' / 'params.yaml', {'method': 'kalman', 'publish_tf': 'false'},
        {'pose_in': POSE_IN, 'pose_out': POSE_OUT, '__node': NODE}),
        env, tmp_path / f'{NODE}.log')
    observer = Observer(ros_domain.domain_id, (POSE_OUT,))
    observer.publisher = observer.node.create_publisher(PoseStamped, POSE_IN, 10)
    try:
        yield observer, proc, tmp_path / f'{NODE}.log'
    finally:
        observer.close()
        stop(proc)


def test_the_stabiliser_runs_and_takes_parameters_on_humble_rclpy(humble_stabilizer):
    observer, proc, log = humble_stabilizer
    t0 = time.time()
    sent = 0
    while len(observer.poses[POSE_OUT]) < 20:
        assert sent < 600 and proc.poll() is None, log.read_text()[-2000:]
        observer.publisher.publish(make_pose_stamped(
            sec_to_stamp(t0 + sent / 100.0), 'world', (1.0, 2.0, 1.5), (0.0, 0.0, 0.0, 1.0)))
        observer.spin_for(0.01)
        sent += 1
    client = observer.node.create_client(SetParameters, f'/{NODE}/set_parameters')
    observer.spin_until(client.service_is_ready, what='parameter service')
    request = SetParameters.Request(parameters=[
        Parameter('method', value='one_euro').to_parameter_msg()])
    future = client.call_async(request)
    observer.spin_until(future.done, what='set_parameters reply')
    assert future.result().results[0].successful
    observer.spin_until(
        lambda: observer.diagnostics_of(NODE).get('method') == 'one_euro',
        what='the new method in /diagnostics (the Humble path applies it on set)')
    assert proc.poll() is None
