"""
Static checks of the launch files, config/params.yaml and config/demo.rviz.

`launch` and RViz are not installable here, so the launch files are parsed, not run: every
executable they start must be a console script of the package, every file they name must
be installed by setup.py, the demo's wiring must be the one `camstab demo` uses, and the
parameter file must be the rendering of every node's parameter specs.
"""
import ast
import re
import runpy
import subprocess
import sys

from camstab_ros.nodes import camera_stabilizer, jitter_simulator, tracking_bridge
from camstab_ros.tools import demo, params_yaml
from helpers import PROJECT
import pytest
import setuptools
import yaml


LAUNCH = PROJECT / 'launch' / 'demo.launch.py'
BRIDGE_LAUNCH = PROJECT / 'launch' / 'tracking_bridge.launch.py'
PARAMS = PROJECT / 'config' / 'params.yaml'
RVIZ = PROJECT / 'config' / 'demo.rviz'
NODE_SPECS = {node.NODE_NAME: node.parameter_specs() for node in params_yaml.NODES}
STABILIZER = camera_stabilizer.CameraStabilizerNode.NODE_NAME
SIMULATOR = jitter_simulator.JitterSimulatorNode.NODE_NAME
BRIDGE = tracking_bridge.TrackingBridgeNode.NODE_NAME


@pytest.fixture(scope='module')
def setup_kwargs():
    """Return the arguments setup.py passes to setuptools.setup (globs evaluated in the tree)."""
    captured = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(setuptools, 'setup', lambda **kwargs: captured.update(kwargs))
        patch.chdir(PROJECT)
        runpy.run_path(str(PROJECT / 'setup.py'), run_name='__main__')
    return captured


def _call_name(node):
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, 'attr', '')


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _call_name(n) == name]


def _keyword(call, name):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


@pytest.fixture(scope='module')
def launch_tree():
    return ast.parse(LAUNCH.read_text())


@pytest.fixture(scope='module')
def bridge_tree():
    return ast.parse(BRIDGE_LAUNCH.read_text())


@pytest.fixture(scope='module')
def launch_nodes(launch_tree):
    return _nodes(launch_tree)


def _nodes(launch_tree):
    """{node name: {package, executable, remappings, call}} of every Node(...) action."""
    nodes = {}
    for call in _calls(launch_tree, 'Node'):
        remappings = _keyword(call, 'remappings')
        nodes[ast.literal_eval(_keyword(call, 'name'))] = {
            'package': ast.literal_eval(_keyword(call, 'package')),
            'executable': ast.literal_eval(_keyword(call, 'executable')),
            'remappings': dict(ast.literal_eval(remappings)) if remappings else {},
            'call': call}
    return nodes


def test_every_executable_of_the_package_is_a_console_script(launch_nodes, setup_kwargs):
    scripts = {entry.split('=')[0].strip(): entry.split('=')[1].strip()
               for entry in setup_kwargs['entry_points']['console_scripts']}
    ours = {n['executable'] for n in launch_nodes.values() if n['package'] == 'camstab_ros'}
    assert ours == {'jitter_simulator', 'stabilizer'}
    assert scripts['stabilizer'] == 'camstab_ros.nodes.camera_stabilizer:main'
    assert scripts['jitter_simulator'] == 'camstab_ros.nodes.jitter_simulator:main'
    others = {n['package'] for n in launch_nodes.values()} - {'camstab_ros'}
    assert others == {'rviz2'}


def test_every_file_the_launch_file_names_is_installed(launch_tree, setup_kwargs):
    installed = {}
    for destination, files in setup_kwargs['data_files']:
        for name in files:
            installed[f'{destination}/{name.rsplit("/", 1)[-1]}'] = name
    named = []
    for call in _calls(launch_tree, 'PathJoinSubstitution'):
        parts = call.args[0].elts
        assert _call_name(parts[0]) == 'FindPackageShare'
        assert ast.literal_eval(parts[0].args[0]) == 'camstab_ros'
        named.append('/'.join(ast.literal_eval(p) for p in parts[1:]))
    assert sorted(named) == ['config/demo.rviz', 'config/params.yaml']
    for relative in named + ['launch/demo.launch.py']:
        source = installed.get(f'share/camstab_ros/{relative}')
        assert source is not None, f'{relative} is not installed by setup.py'
        assert (PROJECT / source).is_file()


def test_the_bridge_launch_file_starts_the_bridge_with_its_installed_parameters(
        bridge_tree, setup_kwargs):
    nodes = _nodes(bridge_tree)
    assert {n['executable'] for n in nodes.values()} == {'tracking_bridge'}
    assert BRIDGE in nodes
    scripts = dict(entry.replace(' ', '').split('=')
                   for entry in setup_kwargs['entry_points']['console_scripts'])
    assert scripts['tracking_bridge'] == 'camstab_ros.nodes.tracking_bridge:main'
    assert scripts['freed_bridge'] == 'camstab_ros.nodes.tracking_bridge:main_freed'
    installed = [name for destination, files in setup_kwargs['data_files']
                 for name in files if destination == 'share/camstab_ros/launch']
    assert 'launch/tracking_bridge.launch.py' in installed
    declared = {}
    for call in _calls(bridge_tree, 'DeclareLaunchArgument'):
        name = ast.literal_eval(call.args[0])
        assert ast.literal_eval(_keyword(call, 'description')).strip(), name
        default = _keyword(call, 'default_value')
        declared[name] = ast.literal_eval(default) if isinstance(default, ast.Constant) else None
    used = {ast.literal_eval(c.args[0]) for c in _calls(bridge_tree, 'LaunchConfiguration')}
    assert used == set(declared)
    # Every argument but the file is a bridge parameter, with the parameter's default.
    specs = NODE_SPECS[BRIDGE]
    for name, default in declared.items():
        if name != 'params_file':
            assert str(specs[name].default) == default, name


def test_launch_arguments_are_described_and_used(launch_tree):
    declared = {}
    for call in _calls(launch_tree, 'DeclareLaunchArgument'):
        description = _keyword(call, 'description')
        name = ast.literal_eval(call.args[0])
        assert description is not None and ast.literal_eval(description).strip(), name
        default = _keyword(call, 'default_value')
        declared[name] = ast.literal_eval(default) if isinstance(default, ast.Constant) else None
    assert set(declared) == {'method', 'scenario', 'params_file', 'use_rviz'}
    used = {ast.literal_eval(c.args[0]) for c in _calls(launch_tree, 'LaunchConfiguration')}
    assert used == set(declared)
    # `camstab demo` passes the same defaults as the launch file, the nodes' own defaults.
    assert declared['method'] == demo.DEFAULT_METHOD == NODE_SPECS[
        STABILIZER]['method'].default
    assert declared['scenario'] == demo.DEFAULT_SCENARIO == NODE_SPECS[
        SIMULATOR]['scenario'].default


def test_rviz_runs_only_with_use_rviz(launch_nodes):
    condition = _keyword(launch_nodes['rviz2']['call'], 'condition')
    assert _call_name(condition) == 'IfCondition'
    assert ast.literal_eval(condition.args[0].args[0]) == 'use_rviz'
    for name in (STABILIZER, SIMULATOR):
        assert _keyword(launch_nodes[name]['call'], 'condition') is None


def test_launch_wiring_is_the_demo_wiring(launch_nodes):
    assert launch_nodes[SIMULATOR]['remappings'] == demo.SIMULATOR_REMAPS
    assert launch_nodes[STABILIZER]['remappings'] == demo.STABILIZER_REMAPS
    assert demo.STABILIZER_REMAPS['pose_in'] == demo.SIMULATOR_REMAPS['pose_noisy']


def test_params_yaml_is_keyed_by_node_and_declares_only_real_parameters():
    params = yaml.safe_load(PARAMS.read_text())
    assert set(params) == set(NODE_SPECS)
    for node, specs in NODE_SPECS.items():
        values = params[node]['ros__parameters']
        assert set(values) == set(specs), node
        for name, value in values.items():
            default = specs[name].default
            # ROS parameter types are strict: 1 is not a double, '' stays a string.
            assert type(value) is type(default), (node, name, value)
            specs[name].coerce(name, value)


def test_every_params_yaml_entry_states_its_unit_and_default():
    specs = None
    checked = 0
    for line in PARAMS.read_text().splitlines():
        node = re.fullmatch(r'(\w+):', line)
        if node:
            specs = NODE_SPECS[node.group(1)]
            continue
        entry = re.fullmatch(r'    ([\w.]+): (.*?)  # (.*)', line)
        if entry is None:
            assert not re.fullmatch(r'    [\w.]+: .*', line), f'no comment: {line!r}'
            continue
        name, comment = entry.group(1), entry.group(3)
        spec = specs[name]
        default = yaml.safe_load(re.search(r'default (.*)$', comment).group(1))
        assert default == spec.default, (name, comment)
        if spec.unit:
            assert comment.startswith(spec.unit + ', '), (name, comment)
        checked += 1
    assert checked == sum(len(s) for s in NODE_SPECS.values())


def test_rviz_shows_truth_noisy_and_stabilised_in_the_poses_frame():
    config = yaml.safe_load(RVIZ.read_text())['Visualization Manager']
    frame = yaml.safe_load(PARAMS.read_text())['jitter_simulator']['ros__parameters'][
        'frame_id']
    assert config['Global Options']['Fixed Frame'] == frame
    displays = {d['Topic']['Value']: d for d in config['Displays'] if 'Topic' in d}
    poses = (demo.SIMULATOR_REMAPS['pose_truth'], demo.SIMULATOR_REMAPS['pose_noisy'],
             demo.STABILIZER_REMAPS['pose_out'])
    paths = (demo.SIMULATOR_REMAPS['path_truth'], demo.SIMULATOR_REMAPS['path_noisy'],
             demo.STABILIZER_REMAPS['path_out'])
    for topic in poses:
        assert displays[topic]['Class'] == 'rviz_default_plugins/Pose'
    for topic in paths:
        assert displays[topic]['Class'] == 'rviz_default_plugins/Path'
    colours = [displays[t]['Color'] for t in poses]
    assert len(set(colours)) == 3
    assert [displays[t]['Color'] for t in paths] == colours  # a pose and its trail match


def test_params_yaml_is_the_rendering_of_the_parameter_specs():
    assert PARAMS.read_text() == params_yaml.render(), (
        'config/params.yaml is stale: run python -m camstab_ros.tools.params_yaml')


def test_params_yaml_tool_checks_without_writing_and_refuses_bad_options(
        monkeypatch, capsys, tmp_path):
    tool = [sys.executable, '-m', 'camstab_ros.tools.params_yaml']
    runs = {args: subprocess.run(tool + [args], capture_output=True, text=True, timeout=60,
                                 cwd=PROJECT)
            for args in ('--help', '--check', '--bogus')}
    assert runs['--help'].returncode == 0 and '--check' in runs['--help'].stdout
    assert runs['--check'].returncode == 0 and 'up to date' in runs['--check'].stdout
    assert runs['--bogus'].returncode == 2
    stale = tmp_path / 'params.yaml'
    stale.write_text('stale\n')
    monkeypatch.setattr(params_yaml, 'PARAMS_PATH', stale)
    assert params_yaml.main(['--check']) == 1
    assert 'is stale' in capsys.readouterr().err
    assert stale.read_text() == 'stale\n'
    assert params_yaml.main([]) == 0 and stale.read_text() == params_yaml.render()


def test_every_node_of_the_package_is_in_params_yaml(setup_kwargs):
    scripts = {entry.split('=')[1].strip().split(':')[0]
               for entry in setup_kwargs['entry_points']['console_scripts']}
    node_modules = {module for module in scripts if module.startswith('camstab_ros.nodes.')}
    assert node_modules == {node.__module__ for node in params_yaml.NODES}
