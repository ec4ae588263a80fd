"""
What every node of the package shares: main(), parameters, diagnostics, drop logging.

- `run_node()`: the distro's main() idiom (init, spin, destroy, try_shutdown), exit code 2
  with the reason on a configuration error;
- `declare_parameters()`: every parameter declared once from its core `ParamSpec`, with a
  `ParameterDescriptor` (description with unit and default, range), values checked;
- `watch_parameters()`: validation in an on-set callback and the change applied after it
  (post-set callback where rclpy has one, Iron and newer; on Humble in the on-set callback
  once the change is valid);
- `diagnostic_array()`: one DiagnosticStatus in a stamped DiagnosticArray;
- `DropLog`: a rate-limited warning for dropped input (diagnostics count every one).
"""
import time

from camstab_ros.core.params import ParameterError
from camstab_ros.io.udp import UdpError
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException


EXIT_CONFIG = 2
DIAGNOSTICS_PERIOD_S = 1.0
DROP_LOG_PERIOD_S = 1.0
# Errors of a node's configuration: reported in one line, exit code EXIT_CONFIG.
CONFIG_ERRORS = (ParameterError, ParameterException, UdpError, ValueError)
# Errors a run-time parameter change is rejected with (OSError: a model file).
CHANGE_ERRORS = (ParameterError, ValueError, OSError)


def run_node(node_class, args=None):
    """Run one node until Ctrl-C or shutdown; exit code (2: bad configuration)."""
    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except CONFIG_ERRORS as exc:
        rclpy.logging.get_logger(node_class.NODE_NAME).fatal(f'cannot start: {exc}')
        return EXIT_CONFIG
    except RuntimeError:
        # Ctrl-C shuts the context down from the signal handler, and a callback already
        # dispatched then publishes into it: rclpy raises RCLError ("publisher's context is
        # invalid"). That is the shutdown, not a failure; any other error is raised.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def parameter_descriptor(name, spec, read_only=False):
    """Describe a core ParamSpec as a ParameterDescriptor, so ROS rejects bad values itself."""
    unit = f' [{spec.unit}]' if spec.unit else ''
    descriptor = ParameterDescriptor(
        name=name, description=f'{spec.description}{unit}; default {spec.default!r}',
        read_only=read_only, dynamic_typing=spec.any_type)
    if spec.choices:
        descriptor.additional_constraints = spec.describe_range()
    if isinstance(spec.default, bool) or spec.low is None or spec.high is None:
        return descriptor
    if isinstance(spec.default, int):
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.low), to_value=int(spec.high), step=1)]
    elif isinstance(spec.default, float):
        # An 'auto' parameter also takes 0, below its range: ROS checks 0..high, the
        # core check (on set) the rest.
        low = 0.0 if spec.auto else float(spec.low)
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=low, to_value=float(spec.high), step=0.0)]
        if spec.auto:
            descriptor.additional_constraints = spec.describe_range()
    return descriptor


def declare_parameters(node, specs, read_only=False):
    """Declare specs on node; return {name: value}, checked (ParameterError if invalid)."""
    for name, spec in specs.items():
        node.declare_parameter(name, spec.default,
                               parameter_descriptor(name, spec, read_only))
    return {name: spec.coerce(name, node.get_parameter(name).value)
            for name, spec in specs.items()}


def current_values(node, specs):
    """{name: value} of the node's parameters in specs."""
    return {name: node.get_parameter(name).value for name in specs}


def watch_parameters(node, specs, validate, apply):
    """
    Route run-time parameter changes of node to validate and apply.

    validate({name: value}) raises one of CHANGE_ERRORS with the reason to reject the
    change; apply(values, changed names) runs once it is accepted, with every value of
    specs as it now is.
    """
    post_set = getattr(node, 'add_post_set_parameters_callback', None)

    def on_set(parameters):
        changes = {p.name: p.value for p in parameters}
        try:
            validate(changes)
        except CHANGE_ERRORS as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if post_set is None:
            values = current_values(node, specs)
            values.update({k: v for k, v in changes.items() if k in specs})
            apply(values, set(changes))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    if post_set is not None:
        post_set(lambda parameters: apply(current_values(node, specs),
                                          {p.name for p in parameters}))


def diagnostic_array(node, name, level, message, values, hardware_id):
    """
    Make a DiagnosticArray, stamped now, of one status named '<node>: <name>'.

    <node> is the fully qualified name (two namespaced nodes never share a status name);
    hardware_id names the tracker source: the input topic, or the UDP address.
    """
    status = DiagnosticStatus(
        level=level, name=f'{node.get_fully_qualified_name()}: {name}', message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = node.get_clock().now().to_msg()
    return array


class DropLog:
    """Warns about dropped input at most once per DROP_LOG_PERIOD_S, with the counts."""

    def __init__(self, logger, counts):
        """Log to logger; counts() returns {reason: count} of everything dropped so far."""
        self.logger = logger
        self.counts = counts
        self._last = -float('inf')

    def __call__(self, what, reason):
        """Log that `what` was dropped for `reason` (unless logged within the period)."""
        now = time.monotonic()
        if now - self._last < DROP_LOG_PERIOD_S:
            return
        self._last = now
        counts = ', '.join(f'{r} {n}' for r, n in self.counts().items() if n)
        self.logger.warning(f'dropped {what} ({reason}); dropped so far: {counts}')
