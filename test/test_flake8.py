"""ament_flake8 over the package, its tests, training, launch files and setup.py."""
from ament_flake8.main import main_with_errors
from helpers import PROJECT
import pytest


# Everything but the virtual environment and build output.
CHECKED = ('camstab_ros', 'test', 'training', 'launch', 'setup.py')


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    rc, errors = main_with_errors(argv=[str(PROJECT / path) for path in CHECKED])
    assert rc == 0, f'found {len(errors)} code style errors / warnings:\n' + '\n'.join(errors)
