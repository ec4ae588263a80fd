"""The pure core: poses, smoothers, simulation and metrics. Never imports rclpy or TensorFlow."""
from camstab_ros.core.smoother import (  # noqa: F401
    Estimate, ParameterError, ParamSpec, Smoother, list_methods, make_smoother, smoother_class)
