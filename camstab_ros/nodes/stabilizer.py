"""The `stabilizer` node (`camera_stabilizer`): pose_in -> validation -> smoother -> pose_out.

Topics (relative names, remapped in launch):
- sub `pose_in` geometry_msgs/PoseStamped, sensor-data QoS (best effort, depth 5);
- pub `pose_out` geometry_msgs/PoseStamped, reliable, depth 10: one message per valid
  measurement, with the measurement's header.stamp and frame_id (or `output_frame_id`);
- pub `pose_out_cov` geometry_msgs/PoseWithCovarianceStamped (reliable, depth 10) when
  `publish_cov`, for methods that estimate a covariance;
- pub `path_out` nav_msgs/Path (reliable, depth 1, at 10 Hz) when `publish_path`: the
  last `path_length` outputs;
- pub `/tf` tf2_msgs/TFMessage when `publish_tf` and tf2_msgs is importable;
- pub `/diagnostics` diagnostic_msgs/DiagnosticArray (reliable, depth 10) at 1 Hz.

The subscription callback only buffers the pose and arms a timer that fires one period
(1 / `timer_rate_hz`) later, drains the buffer through a `Stabilizer` (the ROS-free part,
also tested without DDS) and disarms itself: an idle node does not wake at timer_rate_hz.
"""
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

from camstab_ros.core import quaternion as quat
from camstab_ros.core.smoother import (ParameterError, ParamSpec, SmootherStats,
                                       list_methods, make_smoother, smoother_class)
from camstab_ros.core.validation import REASONS, MeasurementValidator
from camstab_ros.nodes import conversions

try:  # tf2_msgs comes with a ROS 2 install, not with rclpy from PyPI.
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None

NODE_NAME = 'camera_stabilizer'
DEFAULT_METHOD = 'kalman'
WRONG_FRAME = 'wrong_frame_id'
DROP_REASONS = tuple(REASONS) + (WRONG_FRAME,)

# Node-level parameters: handed to every smoother that has a parameter of that name, and
# declared once under this name (never also as `<method>.<name>`). Their specs come from
# the registry; dropout_timeout_s also drives the node's own resets.
NODE_LEVEL = ('delay_frames', 'dropout_timeout_s', 'reset_jump_m', 'model_path')

NODE_SPECS = {
    'timer_rate_hz': ParamSpec(
        2000.0, 'the processing timer fires one period after a pose arrives (adds that '
        'much latency; bursts within it are processed together)', 'Hz', 1.0, 10000.0),
    'switch_blend_s': ParamSpec(
        1.0, 'after a change of method or smoother parameter the output cross-fades from the '
        'old smoother to the new one over this long (0: at once)', 's', 0.0, 10.0),
    'input_frame_id': ParamSpec(
        '', 'frame id that input poses must have; empty: the frame of the first pose'),
    'output_frame_id': ParamSpec('', 'frame id of the outputs; empty: the input\'s frame id'),
    'publish_cov': ParamSpec(False, 'publish pose_out_cov (PoseWithCovarianceStamped)'),
    'publish_path': ParamSpec(False, 'publish path_out (nav_msgs/Path) at 10 Hz'),
    'path_length': ParamSpec(500, 'poses kept in path_out', 'poses', 2, 100000),
    'publish_tf': ParamSpec(True, 'broadcast the stabilised pose on /tf (needs tf2_msgs)'),
    'tf_child_frame_id': ParamSpec('camera_stabilized', 'child frame of the /tf transform'),
}

# Measurements kept to warm a new smoother before a run-time switch.
WARMUP_S = 2.0
WARMUP_MAX_FRAMES = 1000
COST_WINDOW = 2048
# An estimate belongs to the pending measurement whose time is this close.
STAMP_MATCH_S = 1e-9
# Rate of the idle check (dropout flush) and of path_out.
HOUSEKEEPING_HZ = 10.0
DIAGNOSTICS_PERIOD_S = 1.0
DROP_LOG_PERIOD_S = 1.0


def causal_methods():
    return tuple(m for m in list_methods() if smoother_class(m).causal)


def node_level_spec(name):
    """The spec of a node-level parameter: that of the first method that has it."""
    for method in list_methods():
        spec = smoother_class(method).PARAMS.get(name)
        if spec is not None:
            return spec
    raise KeyError(f'no registered method has the node-level parameter {name!r}')


def parameter_specs():
    """Every parameter of the node: {name: ParamSpec}, in declaration order."""
    methods = causal_methods()
    specs = {'method': ParamSpec(
        DEFAULT_METHOD,
        'smoothing method (causal methods of the registry)', choices=methods)}
    for name in NODE_LEVEL:
        specs[name] = node_level_spec(name)
    for method in methods:
        for key, spec in smoother_class(method).PARAMS.items():
            if key not in NODE_LEVEL:
                specs[f'{method}.{key}'] = spec
    specs.update(NODE_SPECS)
    return specs


def check_method(name):
    """Raise ParameterError with a reason unless `name` is a causal registered method."""
    cls = smoother_class(name)
    if not cls.causal:
        raise ParameterError(
            f'method {name!r} is not causal (it needs the whole take; use it offline with '
            f'`camstab smooth`); causal methods: {", ".join(causal_methods())}')


def smoother_parameters(method):
    """{node parameter name: smoother parameter name} of a method's parameters."""
    return {(key if key in NODE_LEVEL else f'{method}.{key}'): key
            for key in smoother_class(method).PARAMS}


def build_smoother(values):
    """The smoother configured by parameter values; ParameterError with a reason if invalid."""
    method = values['method']
    check_method(method)
    return make_smoother(method, **{key: values[name]
                                    for name, key in smoother_parameters(method).items()})


@dataclass
class Output:
    """A stabilised pose for the measurement stamped `stamp` (the input's own stamp)."""

    t: float
    stamp: object
    frame_id: str
    position: np.ndarray
    quaternion: np.ndarray
    covariance: np.ndarray


class Stabilizer:
    """Validation, smoothing and bookkeeping of the node, free of ROS.

    Every valid measurement yields exactly one Output, in input order, carrying its own
    stamp (delayed methods emit it later). A gap longer than `dropout_timeout_s` resets
    the smoother: methods with a `dropout_timeout_s` parameter handle stamp gaps
    themselves, `idle()` covers a stream that stops.

    `switch()` replaces the smoother without a jump in the output. Warming the new
    smoother on the last WARMUP_S seconds of measurements gives it a converged state, but
    two methods still differ by their own lag (centimetres apart during a fast move), so
    both then run side by side and the output cross-fades from the old estimate to the
    new one over `blend_s` seconds of measurement time (position lerp, orientation slerp).
    """

    def __init__(self, smoother, dropout_timeout_s, blend_s=1.0, input_frame_id=''):
        self.smoother = smoother
        self.dropout_timeout_s = dropout_timeout_s
        self.blend_s = blend_s
        self.input_frame_id = input_frame_id
        self.validator = MeasurementValidator()
        self.dropped = Counter()      # wrong_frame_id (the validator counts the rest)
        self.node_resets = 0          # gap resets done here rather than by the smoother
        self.received = 0
        self.published = 0
        self.costs_us = deque(maxlen=COST_WINDOW)
        self._past_stats = SmootherStats()
        self._history = deque(maxlen=WARMUP_MAX_FRAMES)
        self._pending = deque()       # (t, stamp, frame_id) of measurements without output
        self._estimates = deque()     # the smoother's estimates not yet released
        self._old = None              # the previous smoother while cross-fading
        self._old_estimates = deque()
        self._switch_t = None
        self._last_t = None
        self._last_out_t = -np.inf

    @property
    def switching(self):
        """True while the output cross-fades from the previous smoother."""
        return self._old is not None

    def process(self, t, position, quaternion, stamp, frame_id):
        """Take one measurement: (drop reason or None, the Outputs it releases)."""
        self.received += 1
        if not self.input_frame_id:
            self.input_frame_id = frame_id
        if frame_id != self.input_frame_id:
            self.dropped[WRONG_FRAME] += 1
            return WRONG_FRAME, []
        reason, q = self.validator.check(t, position, quaternion)
        if reason is not None:
            return reason, []
        position = np.asarray(position, dtype=float)
        outputs = []
        if (self._last_t is not None and t - self._last_t > self.dropout_timeout_s
                and 'dropout_timeout_s' not in self.smoother.PARAMS):
            outputs += self._reset_smoother()
        self._last_t = t
        start = time.perf_counter_ns()
        estimate = self.smoother.update(t, position, q)
        old_estimate = self._old.update(t, position, q) if self._old is not None else None
        self.costs_us.append((time.perf_counter_ns() - start) * 1e-3)  # both while fading
        self._pending.append((t, stamp, frame_id))
        self._history.append((t, position, q))
        while self._history[0][0] < t - WARMUP_S:
            self._history.popleft()
        self._keep(self._estimates, estimate)
        self._keep(self._old_estimates, old_estimate)
        return None, outputs + self._release()

    def idle(self, seconds_without_input):
        """Call periodically: after dropout_timeout_s without input, flush and reset."""
        if self._history and seconds_without_input > self.dropout_timeout_s:
            return self._reset_smoother(clear_stamps=True)
        return []

    def switch(self, smoother):
        """Replace the smoother at run time (warm-up, then cross-fade); returns Outputs."""
        if self._old is not None:  # a switch during a cross-fade starts from the newest
            self._end_blend()
        self._past_stats = self.stats
        self.node_resets = 0
        warm = deque()
        for t, position, q in self._history:
            self._keep(warm, smoother.update(t, position, q))
        smoother.stats = SmootherStats()  # warm-up events were counted by the old smoother
        outputs = []
        if self._history and self.blend_s > 0.0:
            self._old, self._old_estimates = self.smoother, self._estimates
            self._switch_t = self._history[-1][0]
        else:  # no cross-fade: the old smoother's held-back estimates end its share
            self._keep_all(self._estimates, self.smoother.flush())
            outputs = self._release()
        self.smoother, self._estimates = smoother, warm
        return outputs + self._release()

    @property
    def stats(self):
        """Smoother counters summed over every smoother used, plus the node's resets."""
        now = self.smoother.stats
        past = self._past_stats
        return SmootherStats(outliers=past.outliers + now.outliers,
                             resets=past.resets + now.resets + self.node_resets,
                             coasted=past.coasted + now.coasted)

    @property
    def dropped_by_reason(self):
        counts = Counter(self.validator.dropped)
        counts.update(self.dropped)
        return {reason: counts.get(reason, 0) for reason in DROP_REASONS}

    def _keep(self, queue, estimate):
        if estimate is not None and estimate.t > self._last_out_t:
            queue.append(estimate)

    def _keep_all(self, queue, estimates):
        for estimate in estimates:
            self._keep(queue, estimate)

    def _end_blend(self):
        self._old = None
        self._old_estimates = deque()
        self._switch_t = None

    def _reset_smoother(self, clear_stamps=False):
        self._end_blend()
        self._keep_all(self._estimates, self.smoother.flush())
        outputs = self._release()
        self.smoother.reset()
        self.node_resets += 1
        self._history.clear()
        self._pending.clear()
        self._estimates.clear()
        self._last_t = None
        if clear_stamps:
            self.validator.reset()
        return outputs

    def _weight(self, t):
        """Share of the new smoother in the output at measurement time t."""
        if self._old is None:
            return 1.0
        return float(np.clip((t - self._switch_t) / self.blend_s, 0.0, 1.0))

    def _release(self):
        """Outputs for the oldest pending measurements whose estimates are all in."""
        outputs = []
        while self._pending:
            t, stamp, frame_id = self._pending[0]
            weight = self._weight(t)
            new = _find(self._estimates, t) if weight > 0.0 else None
            old = _find(self._old_estimates, t) if weight < 1.0 else None
            if new is _LATER or old is _LATER:
                break
            self._pending.popleft()
            if new is not None:
                self._estimates.popleft()
            if old is not None:
                self._old_estimates.popleft()
            if new is None and old is None:
                continue  # a smoother broke the one-estimate-per-measurement contract
            if new is None or old is None:
                estimate = new or old
                p, q, cov = estimate.position, estimate.quaternion, estimate.covariance
            else:
                p = old.position + weight * (new.position - old.position)
                q = quat.slerp(old.quaternion, new.quaternion, weight)
                cov = new.covariance
            self._last_out_t = t
            self.published += 1
            outputs.append(Output(t, stamp, frame_id, p, q, cov))
            if weight >= 1.0 and self._old is not None:
                self._end_blend()
        return outputs


# _find() result: the estimate for that time has not been computed yet.
_LATER = object()


def _find(queue, t):
    """The estimate at time t, first in an in-order queue once older ones are dropped;
    _LATER if it is still to come; None if the queue has passed t (there is none)."""
    while queue and queue[0].t < t - STAMP_MATCH_S:
        queue.popleft()
    if not queue:
        return _LATER
    return queue[0] if queue[0].t <= t + STAMP_MATCH_S else None


def staged_smoother(specs, values, parameters):
    """Validate a parameter change against the current values: the new smoother it calls
    for, or None when the smoother is unaffected. Raises ParameterError, ValueError or
    OSError (a model file) with the reason for rejecting it."""
    values = dict(values)
    for parameter in parameters:
        if parameter.name not in specs:
            continue
        if parameter.name == 'method':
            check_method(parameter.value)
        values[parameter.name] = specs[parameter.name].coerce(parameter.name, parameter.value)
    changed = {p.name for p in parameters}
    if changed & ({'method'} | set(smoother_parameters(values['method']))):
        return build_smoother(values)
    return None


def percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else float('nan')


class StabilizerNode(Node):
    """Thin ROS shell around `Stabilizer`; see the module docstring for topics."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._specs = parameter_specs()
        for name, spec in self._specs.items():
            self.declare_parameter(name, spec.default, conversions.parameter_descriptor(name, spec))
        values = self._values()
        check_method(values['method'])
        for name, value in values.items():
            self._specs[name].coerce(name, value)
        self._stabilizer = Stabilizer(build_smoother(values), values['dropout_timeout_s'],
                                      values['switch_blend_s'], values['input_frame_id'])
        self._staged = None
        self._buffer = deque()
        self._last_arrival = time.monotonic()
        self._counts_at_tick = (0, 0)
        self._tick_time = time.monotonic()
        self._path = deque(maxlen=values['path_length'])
        self._path_dirty = False
        self._warned = set()
        self._last_drop_log = -np.inf

        self._pub = self.create_publisher(PoseStamped, 'pose_out', 10)
        self._cov_pub = self._path_pub = self._tf_pub = None
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._sub = self.create_subscription(
            PoseStamped, 'pose_in', self._on_pose, qos_profile_sensor_data)
        self._timer = self.create_timer(1.0 / values['timer_rate_hz'], self._on_timer,
                                        autostart=False)
        self._housekeeping_timer = self.create_timer(1.0 / HOUSEKEEPING_HZ,
                                                     self._on_housekeeping)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._configure_outputs(values)
        self._report_model()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.get_logger().info(
            f'stabilising with {values["method"]!r} '
            f'(delay {self._stabilizer.smoother.delay_frames} frames), '
            f'timer {values["timer_rate_hz"]:g} Hz')

    # -- parameters --------------------------------------------------------------------

    def _values(self):
        return {name: self.get_parameter(name).value for name in self._specs}

    def _validate_parameters(self, parameters):
        try:
            self._staged = staged_smoother(self._specs, self._values(), parameters)
        except (ParameterError, ValueError, OSError) as exc:
            self._staged = None
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters):
        values = self._values()
        changed = {p.name for p in parameters}
        stabilizer = self._stabilizer
        stabilizer.dropout_timeout_s = values['dropout_timeout_s']
        stabilizer.blend_s = values['switch_blend_s']
        if 'input_frame_id' in changed:
            stabilizer.input_frame_id = values['input_frame_id']
        if self._staged is not None:
            previous = stabilizer.smoother.name
            self._publish(stabilizer.switch(self._staged))
            self._staged = None
            self.get_logger().info(
                f'smoother now {values["method"]!r} (was {previous!r}), warmed on the last '
                f'{WARMUP_S:g} s of input, cross-fading over {stabilizer.blend_s:g} s; '
                f'changed: {", ".join(sorted(changed))}')
            self._report_model()
        if 'timer_rate_hz' in changed:
            self.destroy_timer(self._timer)
            self._timer = self.create_timer(1.0 / values['timer_rate_hz'], self._on_timer,
                                            autostart=bool(self._buffer))
        if 'path_length' in changed:
            self._path = deque(self._path, maxlen=values['path_length'])
        self._configure_outputs(values)

    def _configure_outputs(self, values):
        """Create or destroy the optional publishers to match publish_cov/path/tf."""
        if values['publish_cov'] and self._cov_pub is None:
            self._cov_pub = self.create_publisher(PoseWithCovarianceStamped, 'pose_out_cov', 10)
        elif not values['publish_cov'] and self._cov_pub is not None:
            self.destroy_publisher(self._cov_pub)
            self._cov_pub = None
        if values['publish_path'] and self._path_pub is None:
            self._path_pub = self.create_publisher(Path, 'path_out', 1)
        elif not values['publish_path'] and self._path_pub is not None:
            self.destroy_publisher(self._path_pub)
            self._path_pub = None
        if values['publish_tf'] and self._tf_pub is None:
            if TFMessage is None:
                self._warn_once('tf', 'tf2_msgs is not importable (rclpy without a ROS 2 '
                                'install): /tf is not published')
            else:
                self._tf_pub = self.create_publisher(TFMessage, '/tf', 100)
        elif not values['publish_tf'] and self._tf_pub is not None:
            self.destroy_publisher(self._tf_pub)
            self._tf_pub = None
        self._output_frame_id = values['output_frame_id']
        self._child_frame_id = values['tf_child_frame_id']

    # -- data path ---------------------------------------------------------------------

    def _on_pose(self, msg):
        self._buffer.append(msg)
        self._last_arrival = time.monotonic()
        if self._timer.is_canceled():
            self._timer.reset()

    def _on_timer(self):
        """Drain the buffer, then disarm until the next pose arrives."""
        self._timer.cancel()
        stabilizer = self._stabilizer
        outputs = []
        while self._buffer:
            msg = self._buffer.popleft()
            t, p, q = conversions.pose_stamped_to_arrays(msg)
            reason, released = stabilizer.process(t, p, q, msg.header.stamp,
                                                  msg.header.frame_id)
            outputs += released
            if reason is not None:
                self._warn_dropped(msg, reason)
        self._publish(outputs)

    def _on_housekeeping(self):
        """Flush and reset after dropout_timeout_s without input; publish the path."""
        self._publish(self._stabilizer.idle(time.monotonic() - self._last_arrival))
        if self._path_pub is not None and self._path_dirty and self._path:
            self._path_pub.publish(conversions.make_path(
                self._path[-1].header.stamp, self._path[-1].header.frame_id, self._path))
            self._path_dirty = False

    def _warn_dropped(self, msg, reason):
        """Log a dropped pose, at most once per second (diagnostics count every one)."""
        now = time.monotonic()
        if now - self._last_drop_log < DROP_LOG_PERIOD_S:
            return
        self._last_drop_log = now
        dropped = self._stabilizer.dropped_by_reason
        self.get_logger().warning(
            f'dropped a pose ({reason}) stamped {msg.header.stamp.sec}.'
            f'{msg.header.stamp.nanosec:09d} in frame {msg.header.frame_id!r}; dropped so far: '
            + ', '.join(f'{r} {n}' for r, n in dropped.items() if n))

    def _publish(self, outputs):
        for out in outputs:
            frame_id = self._output_frame_id or out.frame_id
            msg = conversions.make_pose_stamped(out.stamp, frame_id, out.position,
                                                out.quaternion)
            self._pub.publish(msg)
            if self._cov_pub is not None:
                if out.covariance is not None:
                    self._cov_pub.publish(conversions.make_pose_with_covariance_stamped(
                        out.stamp, frame_id, out.position, out.quaternion, out.covariance))
                else:
                    self._warn_once('cov', f'{self._stabilizer.smoother.name!r} gives no '
                                    'covariance: pose_out_cov is not published')
            if self._path_pub is not None:
                self._path.append(msg)
                self._path_dirty = True
            if self._tf_pub is not None:
                self._tf_pub.publish(TFMessage(transforms=[conversions.make_transform_stamped(
                    out.stamp, frame_id, self._child_frame_id, out.position, out.quaternion)]))

    def _warn_once(self, key, text):
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    # -- diagnostics -------------------------------------------------------------------

    def _publish_diagnostics(self):
        stabilizer = self._stabilizer
        now = time.monotonic()
        elapsed = max(now - self._tick_time, 1e-9)
        received, published = stabilizer.received, stabilizer.published
        input_rate = (received - self._counts_at_tick[0]) / elapsed
        output_rate = (published - self._counts_at_tick[1]) / elapsed
        self._counts_at_tick, self._tick_time = (received, published), now
        smoother = stabilizer.smoother
        stats = stabilizer.stats
        dropped = stabilizer.dropped_by_reason
        costs = np.fromiter(stabilizer.costs_us, dtype=float)
        idle_s = now - self._last_arrival
        if received == 0 or idle_s > max(stabilizer.dropout_timeout_s, DIAGNOSTICS_PERIOD_S):
            level, message = DiagnosticStatus.WARN, f'no input for {idle_s:.1f} s'
        elif getattr(smoother, 'fallback', False):
            level = DiagnosticStatus.WARN
            message = f'{smoother.name}: model unavailable, running kalman'
        else:
            level, message = DiagnosticStatus.OK, f'stabilising with {smoother.name}'
        values = {
            'method': smoother.name,
            'delay_frames': smoother.delay_frames,
            'input_rate_hz': f'{input_rate:.1f}',
            'output_rate_hz': f'{output_rate:.1f}',
            'received': received,
            'published': published,
            'dropped_invalid': sum(dropped.values()),
            **{f'dropped.{reason}': n for reason, n in dropped.items()},
            'renormalized': stabilizer.validator.renormalized,
            'outliers_rejected': stats.outliers,
            'resets': stats.resets,
            'coasted': stats.coasted,
            'processing_us_median': f'{percentile(costs, 50):.1f}',
            'processing_us_p99': f'{percentile(costs, 99):.1f}',
            'model_status': _model_status(smoother),
        }
        status = DiagnosticStatus(
            level=level, name=f'{self.get_name()}: pose stabilisation', message=message,
            hardware_id=stabilizer.input_frame_id or 'camera',
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def _report_model(self):
        """Warn when a learned method could not load its model and runs kalman instead."""
        smoother = self._stabilizer.smoother
        if getattr(smoother, 'fallback', False):
            self.get_logger().warning(f'{smoother.name}: {smoother.model_status}')


def _model_status(smoother):
    return getattr(smoother, 'model_status', 'no model (classical method)')


def main(args=None):
    rclpy.init(args=args)
    node = None
    try:
        node = StabilizerNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ParameterError, ParameterException) as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f'invalid configuration: {exc}')
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
