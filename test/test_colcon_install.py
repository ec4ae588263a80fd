"""`colcon build` of the package in a temporary workspace: the installed layout is real."""
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

from helpers import PROJECT
import pytest


PACKAGE_CONTENT = ('camstab_ros', 'launch', 'config', 'models', 'resource', 'package.xml',
                   'setup.py', 'setup.cfg', 'LICENSE', 'README.md')
COLCON = Path(sys.executable).parent / 'colcon'


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    if not COLCON.exists():
        pytest.skip(f'colcon not installed next to {sys.executable}')
    ws = tmp_path_factory.mktemp('ws')
    src = ws / 'src' / 'camstab_ros'
    src.mkdir(parents=True)
    for name in PACKAGE_CONTENT:
        path = PROJECT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns('__pycache__'))
        elif path.exists():
            shutil.copy2(path, src / name)
    build = subprocess.run([str(COLCON), 'build', '--event-handlers', 'console_direct-'],
                           cwd=ws, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return ws


def run_installed(ws, command, **kwargs):
    """
    Run a command of the install space in the workspace, with install/setup.bash sourced.

    This is how `ros2 run camstab_ros ...` would run it.
    """
    lib = ws / 'install' / 'camstab_ros' / 'lib' / 'camstab_ros'
    return subprocess.Popen(['bash', '-c', f'. install/setup.bash && exec {lib}/{command}'],
                            cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def test_share_directory_holds_launch_config_and_models(workspace):
    share = workspace / 'install' / 'camstab_ros' / 'share' / 'camstab_ros'
    assert (share / 'package.xml').is_file()
    assert (share / 'launch' / 'demo.launch.py').is_file()
    assert (share / 'config' / 'params.yaml').is_file()
    assert (share / 'config' / 'demo.rviz').is_file()
    for name in ('lstm', 'hybrid'):
        assert (share / 'models' / name / 'model_card.json').is_file()
    index = workspace / 'install' / 'camstab_ros' / 'share' / 'ament_index'
    assert (index / 'resource_index' / 'packages' / 'camstab_ros').is_file()


def test_console_scripts_are_installed_where_ros2_run_finds_them(workspace):
    lib = workspace / 'install' / 'camstab_ros' / 'lib' / 'camstab_ros'
    for script in ('camstab', 'stabilizer', 'jitter_simulator', 'freed_receiver',
                   'freed_sender', 'freed_bridge', 'opentrackio_receiver', 'opentrackio_sender',
                   'tracking_bridge'):
        assert os.access(lib / script, os.X_OK), f'{script} missing from {lib}'


def test_installed_camstab_runs_from_the_install_space(workspace):
    proc = run_installed(workspace, 'camstab smooth --help')
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert 'usage: camstab smooth' in out
    proc = subprocess.Popen(
        ['bash', '-c', f'. install/setup.bash && exec {sys.executable} -c '
         '"import camstab_ros.share as s; print(s.share_dir())"'],
        cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=60)
    assert str(workspace / 'install' / 'camstab_ros' / 'share' / 'camstab_ros') in out


@pytest.mark.parametrize('node', ['stabilizer', 'jitter_simulator'])
def test_installed_nodes_start_and_exit_cleanly_on_sigint(workspace, node, ros_domain_env):
    proc = run_installed(workspace, node, env=ros_domain_env, start_new_session=True)
    time.sleep(4.0)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
