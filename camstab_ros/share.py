"""Locate the package's share directory (config/, launch/, models/) in any layout."""
from pathlib import Path


PACKAGE = 'camstab_ros'


def share_dir():
    """
    Return the installed share/camstab_ros of a colcon or pip install, else the source tree.

    Walks up from this file: a colcon/pip install keeps the package under
    <prefix>/lib/pythonX.Y/site-packages and its data under <prefix>/share/camstab_ros;
    an editable (development) install finds the source tree with package.xml.
    """
    here = Path(__file__).resolve().parent
    for parent in here.parents:
        installed = parent / 'share' / PACKAGE
        if (installed / 'package.xml').is_file():
            return installed
        if (parent / 'package.xml').is_file() and (parent / PACKAGE).is_dir():
            return parent
    raise FileNotFoundError(f'cannot find the share directory of {PACKAGE} above {here}')
