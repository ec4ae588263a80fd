"""
Helpers of the tests over real DDS: child processes and an observing node.

The observer spins only inside `spin_until` / `spin_for`, so no spin thread can outlive a
test.
"""
from collections import Counter
import signal
import subprocess
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile


TIMEOUT_S = 30.0


def start(command, env, log_path):
    """Start a child process in its own session, its output in log_path."""
    log = open(log_path, 'w')
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.log_path = log_path
    log.close()
    return proc


def stop(proc):
    """Stop a child: SIGINT, then SIGKILL after 10 s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def status_name(node_name, name):
    """Return a node's diagnostic status name: its fully qualified name, then the status."""
    return f'{node_name if node_name.startswith("/") else "/" + node_name}: {name}'


class Observer:
    """A test node recording poses by topic and the latest diagnostics by status name."""

    def __init__(self, domain_id, pose_topics=()):
        """Join domain_id and record PoseStamped on pose_topics and every /diagnostics."""
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('camstab_test_observer', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.poses = {}
        self.diagnostics = {}
        self.diagnostics_received = Counter()
        for topic in pose_topics:
            self.record(topic)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      100)

    def record(self, topic, msg_type=PoseStamped):
        """Record the messages of a topic in a list (returned, and in self.poses)."""
        self.poses[topic] = []
        self.node.create_subscription(msg_type, topic, self.poses[topic].append,
                                      QoSProfile(depth=1000))
        return self.poses[topic]

    def _on_diagnostics(self, msg):
        for status in msg.status:
            self.diagnostics_received[status.name] += 1
            self.diagnostics[status.name] = (status, {kv.key: kv.value for kv in status.values})

    def spin_until(self, predicate, timeout=TIMEOUT_S, what='condition'):
        """Spin until predicate() holds; AssertionError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f'timed out after {timeout:g} s waiting for {what}')
            self.executor.spin_once(timeout_sec=0.02)

    def spin_for(self, seconds):
        """Spin for a while."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def diagnostics_of(self, node_name, name='pose stabilisation'):
        """Return the latest diagnostics values of a node's status (or {})."""
        return self.diagnostics.get(status_name(node_name, name), (None, {}))[1]

    def fresh_diagnostics_of(self, node_name, name='pose stabilisation'):
        """Wait for and return the next diagnostics published by node_name from now on."""
        status = status_name(node_name, name)
        seen = self.diagnostics_received[status]
        self.spin_until(lambda: self.diagnostics_received[status] > seen,
                        what=f'diagnostics of {node_name}')
        return self.diagnostics_of(node_name, name)

    def close(self):
        """Shut the observer's node and context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
