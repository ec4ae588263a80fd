"""camstab_ros: camera-pose stabilisation for virtual production."""
__version__ = '0.1.0'
