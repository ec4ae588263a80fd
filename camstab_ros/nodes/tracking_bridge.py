"""
The `tracking_bridge` node: tracking in -> stabiliser -> tracking out, in one process.

Input and output protocols are parameters (`input_protocol`, `output_protocol`: `freed`
or `opentrackio`), so an old FreeD tracker can feed an OpenTrackIO engine (Unreal 5.7's
LiveLink OpenTrackIO source) and either protocol can pass through. `freed_bridge` is the
FreeD -> FreeD shorthand: the same node with both protocols fixed to FreeD.

Each valid sample goes, in the UDP receiver thread, through the core `Stabilizer` (the
`stabilizer` node's pipeline). With `output_rate: input` every released estimate leaves
at once, carrying what its input carried (FreeD camera id, zoom, focus, spare; an
OpenTrackIO sample's lens, timing, ids and every other field; across protocols see
`io.tracking_udp`). With a frame rate, a thread sends one pose per video frame instant,
interpolated (`core.frame_clock`). ROS serves only for parameters and `/diagnostics`.

Parameters: the UDP input ones of the receivers but frame_id, the output ones of the
senders, input_protocol / output_protocol, output_rate, output_delay_frames and
max_extrapolation_s (all read-only), and the pipeline ones of `stabilizer` (method,
<method>.<param>, the shared smoother parameters, switch_blend_s), which can be changed
at run time.
"""
import sys
import threading
import time

from camstab_ros.core import frame_clock
from camstab_ros.core import stabilizer as pipeline
from camstab_ros.core.params import ParamSpec
from camstab_ros.core.validation import drop_figures
from camstab_ros.io.tracking_udp import (INPUT_SPECS, OUTPUT_SPECS, PROTOCOLS, TimeBase,
                                         TrackingInput, TrackingOutput)
from camstab_ros.nodes.scaffolding import (current_values, declare_parameters, diagnostic_array,
                                           DIAGNOSTICS_PERIOD_S, DropLog, run_node,
                                           watch_parameters)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node


HOUSEKEEPING_HZ = 10.0
LABELS = {'freed': 'FreeD', 'opentrackio': 'OpenTrackIO'}
# The frame-clock thread wakes at least this often (to notice a stop).
FRAME_WAIT_MAX_S = 0.05
PROTOCOL_SPECS = {
    'input_protocol': ParamSpec('freed', 'protocol received', choices=PROTOCOLS),
    'output_protocol': ParamSpec('freed', 'protocol sent', choices=PROTOCOLS),
}


class TrackingBridgeNode(Node):
    """Tracking -> Stabilizer -> tracking; see the module docstring."""

    NODE_NAME = 'tracking_bridge'

    @classmethod
    def parameter_specs(cls):
        """Every parameter of the node: {name: ParamSpec}, in declaration order."""
        return {**pipeline.parameter_specs(), **cls._fixed_specs()}

    @classmethod
    def _fixed_specs(cls):
        return {**PROTOCOL_SPECS, **INPUT_SPECS, **OUTPUT_SPECS, **frame_clock.SPECS}

    def _protocols(self, values):
        return values['input_protocol'], values['output_protocol']

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        self._input = self._output = self._frame_thread = None
        self._specs = pipeline.parameter_specs()
        values = declare_parameters(self, self._specs)
        values.update(declare_parameters(self, self._fixed_specs(), read_only=True))
        self._protocol_in, self._protocol_out = self._protocols(values)
        self._stabilizer = pipeline.Stabilizer.from_values(values)
        self._lock = threading.Lock()
        self._staged = None
        self._last_arrival = time.monotonic()
        self._last_stamp = None
        self._ptp = False  # the stamps are the source's own (PTP) time
        self._time_base = TimeBase.from_values(values)
        self._rate = frame_clock.parse_output_rate(values['output_rate'])
        self._frame_clock = None if self._rate is None else frame_clock.FrameClock(
            self._rate, values['output_delay_frames'], values['max_extrapolation_s'])
        self._output = TrackingOutput.from_values(self._protocol_out, values)
        send_log = DropLog(self.get_logger(), lambda: self._output.dropped)
        self._output.on_drop = lambda reason, detail: send_log(f'an output pose: {detail}',
                                                               reason)
        self._pose_log = DropLog(self.get_logger(), lambda: self._stabilizer.dropped_by_reason)
        self._input = TrackingInput.from_values(self._protocol_in, values, self._on_sample)
        drop_log = DropLog(self.get_logger(), lambda: self._input.dropped)
        self._input.on_drop = lambda reason, data, sender: drop_log(
            f'a {len(data)}-byte datagram from {sender[0]}:{sender[1]}', reason)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diag_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._housekeeping = self.create_timer(1.0 / HOUSEKEEPING_HZ, self._on_housekeeping)
        watch_parameters(self, self._specs, self._validate_parameters,
                         self._apply_parameters)
        self._stop = threading.Event()
        if self._frame_clock is not None:
            self._frame_thread = threading.Thread(target=self._frame_loop,
                                                  name='frame_clock', daemon=True)
            self._frame_thread.start()
        self._input.start()
        host, port = self._input.udp.address
        dest_host, dest_port = self._output.udp.destination
        rate = 'one output per measurement' if self._rate is None else (
            f'one output per frame at {self._rate} fps')
        self.get_logger().info(
            f'bridging {LABELS[self._protocol_in]} udp {host}:{port} -> '
            f'{LABELS[self._protocol_out]} {dest_host}:{dest_port} with '
            f'{values["method"]!r} (delay {self._stabilizer.smoother.delay_frames} frames; '
            f'{rate})')

    @property
    def address(self):
        """(host, port) the bridge listens on."""
        return self._input.udp.address

    # -- data path (receiver thread) ---------------------------------------------------

    def _on_sample(self, measurement, sender, arrival_ns):
        with self._lock:
            self._last_arrival = arrival_ns * 1e-9
            t = self._time_base.stamp(self._last_arrival, measurement.source_time)
            self._last_stamp = t
            self._ptp = self._time_base.use_source and measurement.source_time is not None
            reason, outputs = self._stabilizer.process(
                t, measurement.position, measurement.quaternion, measurement.carried)
            self._send(outputs)
            if reason is not None:
                detail = self._stabilizer.drop_detail(reason)
                self._pose_log(f'a pose from {sender[0]}:{sender[1]}{detail}', reason)

    def _send(self, outputs):
        for out in outputs:
            if self._frame_clock is None:
                self._output.send(out.position, out.quaternion, out.tag)
            else:
                self._frame_clock.add(out.t, out.position, out.quaternion, out.tag)

    # -- frame clock (its own thread) --------------------------------------------------

    def _stamp_now(self):
        """Now in the stamps' time base: the newest stamp plus the time since it came."""
        return self._last_stamp + (time.monotonic() - self._last_arrival)

    def _frame_loop(self):
        while not self._stop.is_set():
            wait = FRAME_WAIT_MAX_S
            with self._lock:
                if self._last_stamp is not None:
                    now = self._stamp_now()
                    for frame in self._frame_clock.due(now):
                        self._output.send(frame.position, frame.quaternion, frame.tag,
                                          (frame.t if self._ptp else None, self._rate))
                    due = self._frame_clock.next_due()
                    if due is not None:
                        wait = min(max(due - now, 0.0), FRAME_WAIT_MAX_S)
            self._stop.wait(wait)

    # -- parameters and housekeeping (executor thread) ---------------------------------

    def _validate_parameters(self, changes):
        self._staged = None
        self._staged = pipeline.staged_smoother(
            self._specs, current_values(self, self._specs), changes)

    def _apply_parameters(self, values, changed):
        with self._lock:
            self._stabilizer.apply_values(values)
            if self._staged is not None:
                self._send(self._stabilizer.switch(self._staged))
                self._staged = None
                self.get_logger().info(f'smoother now {values["method"]!r}')

    def _on_housekeeping(self):
        with self._lock:
            idle_s = time.monotonic() - self._last_arrival
            self._send(self._stabilizer.idle(idle_s))

    def _publish_diagnostics(self):
        with self._lock:
            figures = self._stabilizer.diagnostics()
            received = self._stabilizer.received
            frames = {} if self._frame_clock is None else {
                f'frame_clock_{k}': v for k, v in self._frame_clock.counts.items()}
        label_in, label_out = LABELS[self._protocol_in], LABELS[self._protocol_out]
        level, message = DiagnosticStatus.OK, (
            f'bridging {label_in} -> {label_out} with {figures["method"]}')
        if received == 0:
            level, message = DiagnosticStatus.WARN, f'no valid {label_in} received yet'
        host, port = self._input.udp.address
        dest_host, dest_port = self._output.udp.destination
        self._diag_pub.publish(diagnostic_array(self, 'tracking bridge', level, message, {
            'address': f'{host}:{port}',
            'destination': f'{dest_host}:{dest_port}',
            'input_protocol': self._protocol_in,
            'output_protocol': self._protocol_out,
            'output_rate': 'input' if self._rate is None else str(self._rate),
            'datagrams_received': self._input.udp.received,
            'sent': self._output.udp.sent,
            **drop_figures('dropped_input', self._input.dropped),
            **drop_figures('dropped_output', self._output.dropped),
            **frames,
            **figures,
        }, f'udp://{host}:{port}'))

    def destroy_node(self):
        """Stop the threads and close the sockets, then destroy the node."""
        if self._frame_thread is not None:
            self._stop.set()
            self._frame_thread.join()
        if self._input is not None:
            self._input.stop()
        if self._output is not None:
            self._output.close()
        return super().destroy_node()


class FreedBridgeNode(TrackingBridgeNode):
    """The FreeD -> FreeD shorthand of `tracking_bridge`."""

    NODE_NAME = 'freed_bridge'

    @classmethod
    def _fixed_specs(cls):
        specs = {**INPUT_SPECS, **OUTPUT_SPECS, **frame_clock.SPECS}
        del specs['opentrackio_encoding']
        return specs

    def _protocols(self, values):
        values.setdefault('opentrackio_encoding', 'json')
        return 'freed', 'freed'


def main(args=None):
    """Run the node (console script `tracking_bridge`)."""
    return run_node(TrackingBridgeNode, args)


def main_freed(args=None):
    """Run the FreeD -> FreeD shorthand (console script `freed_bridge`)."""
    return run_node(FreedBridgeNode, args)


if __name__ == '__main__':
    sys.exit(main())
