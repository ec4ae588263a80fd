"""
Child processes and private ROS contexts shared by the demo and the benchmarks.

- `node_command()`: the command that starts an installed executable of the package;
- `Children`: child processes in their own sessions, stopped with SIGINT then SIGKILL;
- `private_env()`, `private_context()`, `choose_domain_id()`: a ROS_DOMAIN_ID of our own,
  discovery limited to this host;
- `sigint_as_flag()`, `spin_while()`: Ctrl-C as a flag the spinning loop polls.
"""
from contextlib import contextmanager
import os
from pathlib import Path
import random
import shutil
import signal
import subprocess
import sys
import threading


# Entry points (module, function) of the executables, for a source tree without installed
# console scripts (setup.py names the same ones).
NODES = {'jitter_simulator': ('camstab_ros.nodes.jitter_simulator', 'main'),
         'stabilizer': ('camstab_ros.nodes.camera_stabilizer', 'main'),
         'freed_bridge': ('camstab_ros.nodes.tracking_bridge', 'main_freed'),
         'tracking_bridge': ('camstab_ros.nodes.tracking_bridge', 'main'),
         'freed_receiver': ('camstab_ros.nodes.tracking_receiver', 'main'),
         'freed_sender': ('camstab_ros.nodes.tracking_sender', 'main'),
         'opentrackio_receiver': ('camstab_ros.nodes.tracking_receiver', 'main_opentrackio'),
         'opentrackio_sender': ('camstab_ros.nodes.tracking_sender', 'main_opentrackio')}
STOP_GRACE_S = 5.0
# Private domain ids are drawn from 1..100 (0 is the default; ids above 101 can collide
# with ephemeral ports on Linux).
DOMAIN_RANGE = (1, 100)


@contextmanager
def sigint_as_flag():
    """
    Turn SIGINT (Ctrl-C) into a flag that the caller's loop polls.

    A KeyboardInterrupt raised asynchronously can land inside rclpy's C code (message
    construction during a take), which turns it into another exception; polling a flag
    keeps the shutdown path clean. Outside the main thread signals cannot be handled and
    the flag stays clear.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def spin_while(executor, keep_going, interrupted, timeout_sec=0.05):
    """Spin until keep_going() is false; KeyboardInterrupt when the flag is set."""
    while keep_going():
        if interrupted.is_set():
            raise KeyboardInterrupt
        executor.spin_once(timeout_sec=timeout_sec)


def node_command(name):
    """
    Return the command that starts the executable `name` of the package.

    The installed console script (next to this Python, else on PATH); from a source tree
    without one, Python calling its entry point.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    module, function = NODES[name]
    return [sys.executable, '-c',
            f'import sys; from {module} import {function}; sys.exit({function}())']


def ros_arguments(params_file, overrides, remaps):
    args = ['--ros-args', '--params-file', str(params_file)]
    for key, value in overrides.items():
        args += ['-p', f'{key}:={value}']
    for source, target in remaps.items():
        args += ['-r', f'{source}:={target}']
    return args


class Children:
    """Child processes in their own sessions (a terminal's Ctrl-C reaches only us)."""

    def __init__(self, env, log_dir):
        self.env = env
        self.log_dir = log_dir
        self.procs = {}

    def start(self, name, command):
        log = open(self.log_dir / f'{name}.log', 'wb')
        proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = (proc, log)
        return proc.pid

    def failed(self):
        """{name: exit code} of children that have exited."""
        return {name: p.returncode for name, (p, _) in self.procs.items()
                if p.poll() is not None}

    def stop(self, name):
        """SIGINT, wait up to STOP_GRACE_S, then SIGKILL; returns the exit code."""
        proc, log = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        return proc.returncode

    def pid(self, name):
        """Return the process id of child `name`."""
        return self.procs[name][0].pid

    def stop_all(self):
        return {name: self.stop(name) for name in list(self.procs)}

    def log_tail(self, name, lines=10):
        text = (self.log_dir / f'{name}.log').read_text(errors='replace').splitlines()
        return '\n'.join(text[-lines:])


def rss_mb(pid):
    """Return the resident memory of process pid in MB (NaN when it cannot be read)."""
    try:
        with open(f'/proc/{pid}/status') as status:
            for line in status:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return float('nan')


def private_env(domain_id):
    """Environment for child nodes on domain_id, discovery limited to this host."""
    return dict(os.environ, ROS_DOMAIN_ID=str(domain_id),
                ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')


@contextmanager
def private_context(domain_id):
    """
    Yield an rclpy Context of our own on domain_id, discovery limited to this host.

    rclpy installs no signal handlers in it (see sigint_as_flag).
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    saved = os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE')
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # read by init
    context = rclpy.Context()
    try:
        rclpy.init(context=context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
    finally:
        if saved is None:
            del os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']
        else:
            os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = saved
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


def choose_domain_id(requested):
    """Return the requested domain id (checked), or a random one in DOMAIN_RANGE if None."""
    if requested is not None:
        if not 0 <= requested <= 232:
            raise ValueError(f'--domain-id must be 0..232, got {requested}')
        return requested
    return random.SystemRandom().randint(*DOMAIN_RANGE)
