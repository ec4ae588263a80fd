from glob import glob
import os

from setuptools import find_packages, setup


package_name = 'camstab_ros'


def model_files():
    """(share dir, files) for every model directory under models/."""
    entries = []
    for directory in sorted(glob('models/*/')):
        files = sorted(f for f in glob(os.path.join(directory, '*')) if os.path.isfile(f))
        if files:
            entries.append((os.path.join('share', package_name, directory.rstrip('/')), files))
    return entries


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'training']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.rviz')),
    ] + model_files(),
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='camstab_ros developers',
    maintainer_email='dev@camstab.org',
    description='Camera-pose stabiliser for virtual production (Kalman + LSTM smoothing).',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'camstab = camstab_ros.cli:main',
            'stabilizer = camstab_ros.nodes.camera_stabilizer:main',
            'jitter_simulator = camstab_ros.nodes.jitter_simulator:main',
            'freed_receiver = camstab_ros.nodes.tracking_receiver:main',
            'freed_sender = camstab_ros.nodes.tracking_sender:main',
            'freed_bridge = camstab_ros.nodes.tracking_bridge:main_freed',
            'opentrackio_receiver = camstab_ros.nodes.tracking_receiver:main_opentrackio',
            'opentrackio_sender = camstab_ros.nodes.tracking_sender:main_opentrackio',
            'tracking_bridge = camstab_ros.nodes.tracking_bridge:main',
        ],
    },
)
