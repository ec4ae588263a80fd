"""ament_pep257 over the package, its tests, training, launch files and setup.py."""
from ament_pep257.main import main
from helpers import PROJECT
import pytest


CHECKED = ('camstab_ros', 'test', 'training', 'launch', 'setup.py')


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257():
    rc = main(argv=[str(PROJECT / path) for path in CHECKED])
    assert rc == 0, 'found code style errors / warnings'
