"""
The structure rules of DESIGN.md, checked on the source, not by eye.

- the pure core and io never load rclpy (nor TensorFlow), and neither does the CLI until a
  sub-command that needs ROS runs;
- data flows one way: core <- io <- nodes <- tools <- cli; no layer imports a later one;
- a node module never imports another node module (shared code lives in the scaffolding
  and the conversions);
- no import cycle anywhere in the package; no sys.path edits in the package or training.
"""
import ast
from importlib import metadata
import re
import sys

from helpers import modules_loaded_by, PROJECT
import pytest


PACKAGE = PROJECT / 'camstab_ros'
# Each layer may import only the layers before it (and itself).
LAYERS = ('core', 'io', 'nodes', 'tools')


def module_name(path):
    parts = path.relative_to(PROJECT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob('*.py'))}


def imports_of(path):
    """Every camstab_ros module a file imports, at any level (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f'{node.module}.{alias.name}' if f'{node.module}.{alias.name}' in MODULES
                     else node.module for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split('.')[0] == 'camstab_ros')
    return found


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def layer(module):
    parts = module.split('.')
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.mark.parametrize('statement', [
    'import camstab_ros.cli',
    'import camstab_ros.cli; camstab_ros.cli.build_parser("smooth"); '
    'camstab_ros.cli.build_parser("evaluate"); camstab_ros.cli.build_parser("bench")',
    'import pkgutil, importlib, camstab_ros.core, camstab_ros.io\n'
    'for package in (camstab_ros.core, camstab_ros.io):\n'
    '    for info in pkgutil.iter_modules(package.__path__):\n'
    '        importlib.import_module(package.__name__ + "." + info.name)',
])
def test_the_core_io_and_cli_load_no_rclpy_and_no_tensorflow(statement):
    assert modules_loaded_by(statement, (
        'rclpy', 'rcl_interfaces', 'geometry_msgs', 'tensorflow', 'tf_keras', 'keras')) == '[]'


def test_layers_import_only_earlier_layers():
    wrong = []
    for module, imported in GRAPH.items():
        own = layer(module)
        if own is None:
            continue
        for target in imported:
            other = layer(target)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                wrong.append(f'{module} imports {target}')
        if own in ('core', 'io') and any(t.endswith('.cli') for t in imported):
            wrong.append(f'{module} imports the CLI')
    assert not wrong, wrong


def test_no_node_module_imports_another_node_module():
    node_modules = {name for name, path in MODULES.items() if layer(name) == 'nodes'
                    and any(isinstance(n, ast.ClassDef) and any(
                        getattr(b, 'id', None) == 'Node' for b in n.bases)
                        for n in ast.walk(ast.parse(path.read_text())))}
    assert {'camstab_ros.nodes.camera_stabilizer', 'camstab_ros.nodes.tracking_bridge'} <= \
        node_modules
    wrong = [f'{module} imports {target}' for module in node_modules
             for target in GRAPH[module] if target in node_modules and target != module]
    assert not wrong, wrong


def find_cycle(graph):
    """One import cycle of graph as a list of modules, or None."""
    state = {}

    def visit(module, path):
        state[module] = 'open'
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 'open':
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[module] = 'done'
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    assert find_cycle(GRAPH) is None, ' -> '.join(find_cycle(GRAPH))
    # The check finds one when there is one.
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']


def test_nothing_edits_sys_path():
    files = list(PACKAGE.rglob('*.py')) + list((PROJECT / 'training').glob('*.py'))
    offenders = [str(f.relative_to(PROJECT)) for f in files if 'sys.path' in f.read_text()]
    assert not offenders, offenders


def _normalised(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def _closure(requirements):
    """Every installed distribution the requirement names pull in (normalised names)."""
    seen, todo = set(), [_normalised(r) for r in requirements]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_normalised(re.split(r'[ ;<>=!~\[(]', r, maxsplit=1)[0]) for r in requires
                 if 'extra ==' not in r]
    return seen


# Imported where present only: tf2_msgs is not on PyPI (the stabiliser logs it once and
# runs without /tf).
OPTIONAL_IMPORTS = {'tf2_msgs'}


def test_the_package_needs_only_the_run_time_requirements():
    # `make demo` installs requirements-run.txt alone (no TensorFlow): everything the
    # package imports must come with it; requirements.txt adds training and tests on top.
    lines = (PROJECT / 'requirements-run.txt').read_text().splitlines()
    run = [line.split('==')[0] for line in lines if line and not line.startswith('#')]
    assert not {'tensorflow', 'tf-keras', 'pytest'} & {_normalised(r) for r in run}
    assert '-r requirements-run.txt' in (PROJECT / 'requirements.txt').read_text()
    available = _closure(run)
    providers = metadata.packages_distributions()
    missing = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top in sys.stdlib_module_names or top in OPTIONAL_IMPORTS | {'camstab_ros'}:
                    continue
                dists = {_normalised(d) for d in providers.get(top, [])}
                if not dists & available:
                    missing.add(f'{top} ({path.name})')
    assert not missing
