"""
The `jitter_simulator` node: a simulated camera move and a noisy tracker reporting it.

Publishes (relative names, remapped in launch):
- `pose_truth` geometry_msgs/PoseStamped (reliable, depth 10): the true camera pose;
- `pose_noisy` geometry_msgs/PoseStamped (reliable, depth 10): what the tracker reports,
  with the same stamp;
- `path_truth`, `path_noisy` nav_msgs/Path (reliable, depth 1, 10 Hz) when `publish_path`:
  the last `path_length` poses of each, for RViz.
A take of `take_seconds` is simulated at start-up by `camstab_ros.core.simulation`
(scenario, seed, tracker noise) and played in real time at `rate_hz`: stamps are the
start time plus the take's own (possibly jittered) stamps, and frames the tracker drops
are not published on either topic. With `loop` the take restarts after its end (the
camera jumps back to its first pose); without it the node stops publishing and idles.
Parameters are read-only: restart the node to change the take.
"""
from collections import deque
from dataclasses import fields
import sys

from camstab_ros.core import simulation
from camstab_ros.core.params import ParamSpec
from camstab_ros.nodes import conversions
from camstab_ros.nodes.scaffolding import declare_parameters, run_node
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.node import Node


NS_PER_S = 1_000_000_000
PATH_RATE_HZ = 10.0

# Valid ranges and units of the tracker-noise fields (TrackerNoise holds the defaults).
_NOISE_RANGES = {
    'pos_sigma_m': ('white position noise per axis', 'm', 0.0, 0.1),
    'rot_sigma_deg': ('white rotation noise per axis', 'deg', 0.0, 10.0),
    'drift_pos_m': ('random-walk position drift, std after 1 s', 'm', 0.0, 0.1),
    'drift_rot_deg': ('random-walk rotation drift, std after 1 s', 'deg', 0.0, 10.0),
    'coloured_pos_m': ('coloured (AR(1)) position noise per axis, stationary std', 'm', 0.0,
                       0.1),
    'coloured_rot_deg': ('coloured (AR(1)) rotation noise per axis, stationary std', 'deg',
                         0.0, 10.0),
    'coloured_time_s': ('correlation time of the coloured noise', 's', 0.001, 60.0),
    'spike_rate_hz': ('isolated one-frame outliers per second', 'Hz', 0.0, 100.0),
    'spike_m': ('outlier position magnitude', 'm', 0.0, 10.0),
    'spike_deg': ('outlier rotation magnitude', 'deg', 0.0, 180.0),
    'dropout_rate': ('fraction of frames the tracker drops, in bursts', '', 0.0,
                     simulation.MAX_DROPOUT_RATE),
    'stamp_jitter_s': ('std of timestamp jitter', 's', 0.0, 0.01),
    'freed_quantize': ('round to FreeD D1 steps (1/64 mm, 1/32768 deg)', '', None, None),
    'relocalize_rate_hz': ('re-localisation jumps per second', 'Hz', 0.0, 10.0),
    'relocalize_jump_m': ('size of each re-localisation jump', 'm', 0.0, 100.0),
}


def _simulator_specs():
    """Every parameter of the node: {name: ParamSpec}, in declaration order."""
    specs = {
        'scenario': ParamSpec('dolly', 'simulated camera move',
                              choices=simulation.SCENARIOS),
        'seed': ParamSpec(0, 'seed of the motion and the noise', '', 0, 2 ** 31 - 1),
        'rate_hz': ParamSpec(60.0, 'tracker frame rate', 'Hz', simulation.MIN_RATE_HZ,
                             simulation.MAX_RATE_HZ),
        'take_seconds': ParamSpec(60.0, 'length of the simulated take', 's', 1.0, 3600.0),
        'loop': ParamSpec(True, 'restart the take when it ends'),
        'frame_id': ParamSpec('world', 'frame id of the published poses'),
        'publish_path': ParamSpec(False, 'publish path_truth and path_noisy at 10 Hz'),
        'path_length': ParamSpec(500, 'poses kept in each path', 'poses', 2, 100000),
    }
    defaults = simulation.TrackerNoise()
    for field in fields(simulation.TrackerNoise):
        description, unit, low, high = _NOISE_RANGES[field.name]
        specs[f'noise.{field.name}'] = ParamSpec(getattr(defaults, field.name), description,
                                                 unit, low, high)
    return specs


class JitterSimulatorNode(Node):
    """Plays a simulated take on pose_truth and pose_noisy in real time."""

    NODE_NAME = 'jitter_simulator'

    @staticmethod
    def parameter_specs():
        """Every parameter of the node (all read-only): {name: ParamSpec}."""
        return _simulator_specs()

    def __init__(self, **kwargs):
        super().__init__(self.NODE_NAME, **kwargs)
        values = declare_parameters(self, self.parameter_specs(), read_only=True)
        noise = simulation.TrackerNoise(**{
            key[len('noise.'):]: value for key, value in values.items()
            if key.startswith('noise.')})
        self._take = simulation.simulate(values['scenario'], values['take_seconds'],
                                         values['rate_hz'], values['seed'], noise)
        self._loop = values['loop']
        self._frame_id = values['frame_id']
        # Stamps of the k-th play of the take: start + k * period + take.t
        self._period_ns = round((self._take.t[-1] + 1.0 / values['rate_hz']) * NS_PER_S)
        self._offsets_ns = [round(t * NS_PER_S) for t in self._take.t]
        self._start_ns = self.get_clock().now().nanoseconds
        self._play = 0
        self._next = 0
        self._truth_pub = self.create_publisher(PoseStamped, 'pose_truth', 10)
        self._noisy_pub = self.create_publisher(PoseStamped, 'pose_noisy', 10)
        self._timer = self.create_timer(1.0 / values['rate_hz'], self._on_timer)
        self._paths = None
        if values['publish_path']:
            self._paths = {
                name: (self.create_publisher(Path, name, 1), deque(maxlen=values['path_length']))
                for name in ('path_truth', 'path_noisy')}
            self._path_timer = self.create_timer(1.0 / PATH_RATE_HZ, self._publish_paths)
        self.get_logger().info(
            f'playing {values["scenario"]!r} (seed {values["seed"]}, '
            f'{len(self._take.t)} frames, {values["take_seconds"]:g} s) at '
            f'{values["rate_hz"]:g} Hz in frame {self._frame_id!r}'
            + (', looping' if self._loop else ''))

    def _on_timer(self):
        """Publish every frame whose stamp is due."""
        take = self._take
        now_ns = self.get_clock().now().nanoseconds
        while True:
            if self._next == len(take.t):
                if not self._loop:
                    self.get_logger().info('take finished; not looping, publishing stopped')
                    self.destroy_timer(self._timer)
                    return
                self._play += 1
                self._next = 0
            i = self._next
            stamp_ns = self._start_ns + self._play * self._period_ns + self._offsets_ns[i]
            if stamp_ns > now_ns:
                return
            stamp = conversions.ns_to_stamp(stamp_ns)
            truth = conversions.make_pose_stamped(
                stamp, self._frame_id, take.truth_p[i], take.truth_q[i])
            noisy = conversions.make_pose_stamped(
                stamp, self._frame_id, take.noisy_p[i], take.noisy_q[i])
            self._truth_pub.publish(truth)
            self._noisy_pub.publish(noisy)
            if self._paths is not None:
                self._paths['path_truth'][1].append(truth)
                self._paths['path_noisy'][1].append(noisy)
            self._next += 1

    def _publish_paths(self):
        for publisher, poses in self._paths.values():
            if poses:
                publisher.publish(conversions.make_path(
                    poses[-1].header.stamp, self._frame_id, poses))


def main(args=None):
    """Run the node (console script `jitter_simulator`)."""
    return run_node(JitterSimulatorNode, args)


if __name__ == '__main__':
    sys.exit(main())
