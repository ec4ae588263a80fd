"""
The `camera_stabilizer` node (executable `stabilizer`): pose_in -> Stabilizer -> pose_out.

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
(1 / `timer_rate_hz`) later, drains the buffer through the core `Stabilizer` and disarms
itself: an idle node does not wake at timer_rate_hz.
"""
from collections import deque
import sys
import time

from camstab_ros.core import stabilizer as pipeline
from camstab_ros.core.params import ParamSpec
from camstab_ros.nodes import conversions
from camstab_ros.nodes.scaffolding import (declare_parameters, diagnostic_array,
                                           DIAGNOSTICS_PERIOD_S, DropLog, run_node,
                                           watch_parameters)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Path
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data


try:  # tf2_msgs comes with a ROS 2 install, not with rclpy from PyPI.
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None

# The node's own parameters (the pipeline's come from core.stabilizer.parameter_specs).
NODE_SPECS = {
    'timer_rate_hz': ParamSpec(
        2000.0, 'the processing timer fires one period after a pose arrives (adds that '
        'much latency; bursts within it are processed together)', 'Hz', 1.0, 10000.0),
    'input_frame_id': ParamSpec(
        '', 'frame id that input poses must have; empty: the frame of the first pose, '
        'until the stream pauses or another frame streams alone for dropout_timeout_s'),
    'max_future_s': ParamSpec(
        1.0, 'a pose stamped further ahead of the node clock than this is dropped '
        '(stamp_in_future); ten in a row are a clock step, and the offset is adopted',
        's', 0.001, 1e6),
    'output_frame_id': ParamSpec('', "frame id of the outputs; empty: the input's frame id"),
    'publish_cov': ParamSpec(False, 'publish pose_out_cov (PoseWithCovarianceStamped)'),
    'publish_path': ParamSpec(False, 'publish path_out (nav_msgs/Path) at 10 Hz'),
    'path_length': ParamSpec(500, 'poses kept in path_out', 'poses', 2, 100000),
    'publish_tf': ParamSpec(True, 'broadcast the stabilised pose on /tf (needs tf2_msgs)'),
    'tf_child_frame_id': ParamSpec('camera_stabilized', 'child frame of the /tf transform'),
}
# Rate of the idle check (dropout flush) and of path_out.
HOUSEKEEPING_HZ = 10.0


class CameraStabilizerNode(Node):
    """Thin ROS shell around the core `Stabilizer`; see the module docstring for topics."""

    NODE_NAME = 'camera_stabilizer'

    @staticmethod
    def parameter_specs():
        """Every parameter of the node: {name: ParamSpec}, in declaration order."""
        return {**pipeline.parameter_specs(), **NODE_SPECS}

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        self._specs = self.parameter_specs()
        values = declare_parameters(self, self._specs)
        self._stabilizer = pipeline.Stabilizer.from_values(
            values, frame_id=values['input_frame_id'], max_future_s=values['max_future_s'])
        self._staged = None
        self._buffer = deque()
        self._last_arrival = time.monotonic()
        self._counts_at_tick = (0, 0)
        self._tick_time = time.monotonic()
        self._path = deque(maxlen=values['path_length'])
        self._path_dirty = False
        self._warned = set()
        self._drop_log = DropLog(self.get_logger(),
                                 lambda: self._stabilizer.dropped_by_reason)

        self._pub = self.create_publisher(PoseStamped, 'pose_out', 10)
        self._cov_pub = self._path_pub = self._tf_pub = None
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._sub = self.create_subscription(
            PoseStamped, 'pose_in', self._on_pose, qos_profile_sensor_data)
        self._timer = self._create_processing_timer(values['timer_rate_hz'], armed=False)
        self._housekeeping_timer = self.create_timer(1.0 / HOUSEKEEPING_HZ,
                                                     self._on_housekeeping)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._configure_outputs(values)
        self._report_model()
        watch_parameters(self, self._specs, self._validate_parameters,
                         self._apply_parameters)
        self.get_logger().info(
            f'stabilising with {values["method"]!r} '
            f'(delay {self._stabilizer.smoother.delay_frames} frames), '
            f'timer {values["timer_rate_hz"]:g} Hz')

    def _create_processing_timer(self, rate_hz, armed):
        # Created, then cancelled: `autostart` does not exist in Humble's rclpy.
        timer = self.create_timer(1.0 / rate_hz, self._on_timer)
        if not armed:
            timer.cancel()
        return timer

    # -- parameters --------------------------------------------------------------------

    def _validate_parameters(self, changes):
        values = {name: self.get_parameter(name).value for name in self._specs}
        self._staged = None
        self._staged = pipeline.staged_smoother(self._specs, values, changes)

    def _apply_parameters(self, values, changed):
        stabilizer = self._stabilizer
        stabilizer.apply_values(values)
        stabilizer.max_future_s = values['max_future_s']
        if 'input_frame_id' in changed:
            stabilizer.lock_frame(values['input_frame_id'])
        if self._staged is not None:
            previous = stabilizer.smoother.name
            self._publish(stabilizer.switch(self._staged))
            self._staged = None
            self.get_logger().info(
                f'smoother now {values["method"]!r} (was {previous!r}), warmed on the last '
                f'{pipeline.WARMUP_S:g} s of input, cross-fading over '
                f'{stabilizer.blend_s:g} s; changed: {", ".join(sorted(changed))}')
            self._report_model()
        if 'timer_rate_hz' in changed:
            self.destroy_timer(self._timer)
            self._timer = self._create_processing_timer(values['timer_rate_hz'],
                                                        armed=bool(self._buffer))
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
        outputs = []
        now = self.get_clock().now().nanoseconds * 1e-9
        while self._buffer:
            msg = self._buffer.popleft()
            t, p, q = conversions.pose_stamped_to_arrays(msg)
            reason, released = self._stabilizer.process(t, p, q, msg.header.stamp,
                                                        msg.header.frame_id, now)
            outputs += released
            if reason is not None:
                stamp = msg.header.stamp
                detail = self._stabilizer.drop_detail(reason)
                self._drop_log(f'a pose stamped {stamp.sec}.{stamp.nanosec:09d} in frame '
                               f'{msg.header.frame_id!r}{detail}', reason)
        self._publish(outputs)

    def _on_housekeeping(self):
        """Flush and reset after dropout_timeout_s without input; publish the path."""
        self._publish(self._stabilizer.idle(time.monotonic() - self._last_arrival))
        if self._path_pub is not None and self._path_dirty and self._path:
            self._path_pub.publish(conversions.make_path(
                self._path[-1].header.stamp, self._path[-1].header.frame_id, self._path))
            self._path_dirty = False

    def _publish(self, outputs):
        for out in outputs:
            frame_id = self._output_frame_id or out.frame_id
            stamp = out.tag  # the input's header.stamp
            msg = conversions.make_pose_stamped(stamp, frame_id, out.position, out.quaternion)
            self._pub.publish(msg)
            if self._cov_pub is not None:
                if out.covariance is not None:
                    self._cov_pub.publish(conversions.make_pose_with_covariance_stamped(
                        stamp, frame_id, out.position, out.quaternion, out.covariance))
                else:
                    self._warn_once('cov', f'{self._stabilizer.smoother.name!r} gives no '
                                    'covariance: pose_out_cov is not published')
            if self._path_pub is not None:
                self._path.append(msg)
                self._path_dirty = True
            if self._tf_pub is not None:
                self._tf_pub.publish(TFMessage(transforms=[conversions.make_transform_stamped(
                    stamp, frame_id, self._child_frame_id, out.position, out.quaternion)]))

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
        rates = {'input_rate_hz': f'{(received - self._counts_at_tick[0]) / elapsed:.1f}',
                 'output_rate_hz': f'{(published - self._counts_at_tick[1]) / elapsed:.1f}'}
        self._counts_at_tick, self._tick_time = (received, published), now
        smoother = stabilizer.smoother
        idle_s = now - self._last_arrival
        if received == 0 or idle_s > max(stabilizer.dropout_timeout_s, DIAGNOSTICS_PERIOD_S):
            level, message = DiagnosticStatus.WARN, f'no input for {idle_s:.1f} s'
        elif smoother.fallback:
            level = DiagnosticStatus.WARN
            message = f'{smoother.name}: model unavailable, running kalman'
        else:
            level, message = DiagnosticStatus.OK, f'stabilising with {smoother.name}'
        self._diag_pub.publish(diagnostic_array(
            self, 'pose stabilisation', level, message, {**rates, **stabilizer.diagnostics()},
            self._sub.topic_name))

    def _report_model(self):
        """Warn when a learned method could not load its model and runs kalman instead."""
        smoother = self._stabilizer.smoother
        if smoother.fallback:
            self.get_logger().warning(f'{smoother.name}: {smoother.model_status}')


def main(args=None):
    """Run the node (console script `stabilizer`)."""
    return run_node(CameraStabilizerNode, args)


if __name__ == '__main__':
    sys.exit(main())
