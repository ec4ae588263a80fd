"""
Synthetic camera moves (the ground truth) and what a tracker reports of them.

The true motion of a scenario is a continuous function of time fixed by the seed: eased
moves (minimum-jerk profiles) between holds, plus filtered Gaussian noise generated on a
fixed 500 Hz grid and interpolated with cubic splines. A take at any rate therefore
samples the same motion. Poses follow REP 103: metres, x forward, y left, z up; the camera
body looks along its x axis, yaw pans to the left and positive pitch tips the nose down.

Seeds: `SeedSequence(seed)` spawns one child for the motion and one for the tracker noise,
and each motion component or noise effect draws from its own grandchild, so changing the
noise (or switching one effect on) never changes the motion or the other effects.
"""
from dataclasses import dataclass, fields, replace
import math
import numbers
import os
from typing import NamedTuple

from camstab_ros.core import quaternion as quat
import numpy as np
from scipy import signal
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation


SCENARIOS = ('locked_off', 'pan', 'tilt', 'dolly', 'crane', 'orbit', 'handheld', 'whip_pan',
             'steadicam')
MIN_RATE_HZ = 1.0
MAX_RATE_HZ = 1000.0

GRID_HZ = 500.0          # sampling of the filtered-noise components before interpolation
# Peak memory of simulate() per grid and output sample (measured: 0.41 MB per second of a
# 240 Hz handheld take, over 300-1200 s).
BYTES_PER_SAMPLE = 600
PREROLL_S = 30.0         # filter settling time simulated before t = 0
MIN_JERK_PEAK = 1.875    # peak speed of a minimum-jerk move = 1.875 * distance / duration
# Tripod head pivot -> camera tracking point, in the camera frame: the camera sits on top
# of the head, so pans and tilts also move it a little.
HEAD_OFFSET_M = np.array([0.05, 0.0, 0.12])
STEP_LENGTH_M = 0.75      # one walking step (gait bob once per step, sway once per stride)

FREED_POS_STEP_M = 1.0 / 64000.0    # FreeD D1: 1/64 mm
FREED_ANGLE_STEP_DEG = 1.0 / 32768.0
MAX_DROPOUT_RATE = 0.5
DROPOUT_MEAN_BURST_FRAMES = 2.0
# Stamp jitter is clipped to this fraction of the neighbouring frame intervals, which keeps
# the stamps strictly increasing.
JITTER_LIMIT = 0.45


@dataclass(frozen=True)
class TrackerNoise:
    """
    Tracker error model, SI units (m, deg, s, Hz).

    The defaults are a typical optical tracker. Rotational errors are rotation vectors
    applied in the camera frame.
    """

    pos_sigma_m: float = 0.0005      # white noise per axis
    rot_sigma_deg: float = 0.02      # white noise per axis (small rotation vector)
    drift_pos_m: float = 0.0         # random-walk drift, std after 1 s
    drift_rot_deg: float = 0.0
    coloured_pos_m: float = 0.0      # coloured (AR(1)) noise per axis: its stationary std
    coloured_rot_deg: float = 0.0
    coloured_time_s: float = 0.3     # correlation time of the coloured noise (wanders)
    spike_rate_hz: float = 0.0       # isolated one-frame outliers per second
    spike_m: float = 0.05            # outlier magnitude (random direction)
    spike_deg: float = 1.0
    dropout_rate: float = 0.0        # fraction of frames missing, in bursts (mean 2 frames)
    stamp_jitter_s: float = 0.0      # std of timestamp jitter (stamps stay increasing)
    freed_quantize: bool = False     # FreeD steps: 1/64 mm, 1/32768 deg on pan/tilt/roll
    relocalize_rate_hz: float = 0.0  # re-localisation: a persistent position offset step
    relocalize_jump_m: float = 0.5   # size of each step (random direction)

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == 'freed_quantize':
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f'TrackerNoise.freed_quantize must be true or false, '
                                     f'got {value!r}')
                continue
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value) or value < 0.0):
                raise ValueError(f'TrackerNoise.{field.name} must be a finite number >= 0, '
                                 f'got {value!r}')
        if self.dropout_rate > MAX_DROPOUT_RATE:
            raise ValueError(f'TrackerNoise.dropout_rate must be at most {MAX_DROPOUT_RATE}, '
                             f'got {self.dropout_rate!r}')


NOISE_PRESETS = {
    'none': TrackerNoise(pos_sigma_m=0.0, rot_sigma_deg=0.0),
    'quiet_optical': TrackerNoise(pos_sigma_m=0.0002, rot_sigma_deg=0.005),
    'default': TrackerNoise(),
    # The trackers of DESIGN.md's matrix: a high-end optical tracker; a typical optical
    # tracker, part of its error coloured (wandering over tens of frames); inside-out
    # tracking, mostly coloured, with rare 3 cm / 1 deg spikes. Totals: 0.05 mm / 0.002
    # deg, 0.5 mm / 0.02 deg, 2 mm / 0.08 deg per axis.
    'optical_fine': TrackerNoise(pos_sigma_m=0.00005, rot_sigma_deg=0.002),
    'optical': TrackerNoise(pos_sigma_m=0.0004, rot_sigma_deg=0.016, coloured_pos_m=0.0003,
                            coloured_rot_deg=0.012),
    'inside_out': TrackerNoise(pos_sigma_m=0.0008, rot_sigma_deg=0.032, coloured_pos_m=0.0018,
                               coloured_rot_deg=0.073, coloured_time_s=0.5,
                               spike_rate_hz=0.05, spike_m=0.03, spike_deg=1.0),
    'stress': TrackerNoise(pos_sigma_m=0.001, rot_sigma_deg=0.04, spike_rate_hz=0.5,
                           dropout_rate=0.02, stamp_jitter_s=0.001, freed_quantize=True),
}


@dataclass
class Take:
    """A simulated take: tracker stamps, the true pose and the reported pose per row."""

    scenario: str
    rate_hz: float
    seed: int
    t: np.ndarray            # (N,) tracker stamps in s, strictly increasing
    truth_p: np.ndarray      # (N, 3) m, true position at each frame's capture time
    truth_q: np.ndarray      # (N, 4) x, y, z, w
    noisy_p: np.ndarray      # (N, 3) what the tracker reports
    noisy_q: np.ndarray      # (N, 4)
    spike: np.ndarray        # (N,) bool, frames carrying an outlier
    relocalized: np.ndarray  # (N,) bool, first frame after each re-localisation jump


# --- argument checks ---------------------------------------------------------------------

def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f'seed must be an integer >= 0, got {seed!r}')
    return int(seed)


def _check_clock(scenario, seconds, rate_hz):
    if scenario not in SCENARIOS:
        raise ValueError(f'unknown scenario {scenario!r}; valid scenarios: '
                         + ', '.join(SCENARIOS))
    if not isinstance(rate_hz, numbers.Real) or not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise ValueError(f'rate_hz must be between {MIN_RATE_HZ:g} and {MAX_RATE_HZ:g} Hz, '
                         f'got {rate_hz!r}')
    if not isinstance(seconds, numbers.Real) or not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f'seconds must be a finite duration > 0, got {seconds!r}')
    frames = int(round(seconds * rate_hz))
    if frames < 2:
        raise ValueError(f'a take of {seconds!r} s at {rate_hz!r} Hz has fewer than 2 frames')
    need, limit = seconds * (GRID_HZ + rate_hz) * BYTES_PER_SAMPLE, memory_limit_bytes()
    if need > limit:
        raise ValueError(f'a take of {seconds:g} s at {rate_hz:g} Hz needs about '
                         f'{need / 2 ** 30:.3g} GiB to simulate; the limit is '
                         f"{limit / 2 ** 30:.3g} GiB (half of this machine's memory): "
                         'simulate shorter takes')
    return frames


def memory_limit_bytes():
    """Return the most memory a simulation may take: half of the physical memory."""
    try:
        return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows): assume 8 GiB
        return 4 * 2 ** 30


def _check_trajectory(t, p, q):
    t = np.asarray(t, dtype=float)
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if t.ndim != 1 or len(t) < 2:
        raise ValueError(f't must be a 1-D array of at least 2 stamps, got shape {t.shape}')
    if p.shape != (len(t), 3) or q.shape != (len(t), 4):
        raise ValueError(f'p and q must have shapes ({len(t)}, 3) and ({len(t)}, 4), '
                         f'got {p.shape} and {q.shape}')
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise ValueError('t, p and q must be finite')
    if np.any(np.diff(t) <= 0.0):
        raise ValueError('stamps t must be strictly increasing')
    return t, p, quat.make_continuous(quat.normalize(q))


# --- building blocks of the true motion -----------------------------------------------------

def _rng(seed_sequence):
    """Return the next independent generator spawned from seed_sequence."""
    return np.random.default_rng(seed_sequence.spawn(1)[0])


class _Schedule(NamedTuple):
    initial: np.ndarray   # (k,) value before the first move
    start: np.ndarray     # (M,) s
    duration: np.ndarray  # (M,) s
    origin: np.ndarray    # (M, k) value at the start of each move
    delta: np.ndarray     # (M, k) change over each move


def _moves(rng, seconds, hold_s, initial, draw):
    """
    Eased moves separated by holds (seconds, uniform in hold_s) until `seconds`.

    draw(rng, value) returns the (delta, duration) of the next move from value.
    """
    value = np.atleast_1d(np.asarray(initial, dtype=float))
    initial = value
    starts, durations, origins, deltas = [], [], [], []
    time = rng.uniform(*hold_s)
    while time < seconds:
        delta, duration = draw(rng, value)
        starts.append(time)
        durations.append(duration)
        origins.append(value)
        deltas.append(np.atleast_1d(delta))
        value = value + deltas[-1]
        time += duration + rng.uniform(*hold_s)
    k = len(initial)
    return _Schedule(initial, np.array(starts), np.array(durations),
                     np.reshape(origins, (-1, k)), np.reshape(deltas, (-1, k)))


def _eased(t, schedule):
    """Value (N, k) and rate of change (N, k) of a schedule at times t."""
    if len(schedule.start) == 0:
        value = np.broadcast_to(schedule.initial, (len(t), len(schedule.initial))).copy()
        return value, np.zeros_like(value)
    i = np.maximum(np.searchsorted(schedule.start, t, side='right') - 1, 0)
    u = np.clip((t - schedule.start[i]) / schedule.duration[i], 0.0, 1.0)
    shape = u ** 3 * (10.0 + u * (6.0 * u - 15.0))          # minimum-jerk profile
    slope = 30.0 * u ** 2 * (1.0 - u) ** 2 / schedule.duration[i]
    delta = schedule.delta[i]
    return schedule.origin[i] + delta * shape[:, None], delta * slope[:, None]


def _bounded_delta(rng, value, amplitude, bounds):
    """Draw a step of random size and sign that keeps value inside bounds (reversing if needed)."""
    delta = rng.uniform(*amplitude) * rng.choice((-1.0, 1.0))
    if not bounds[0] <= value + delta <= bounds[1]:
        delta = -delta
    return float(np.clip(value + delta, *bounds) - value)


def _duration(distance, peak_speed, min_duration_s):
    return max(min_duration_s, MIN_JERK_PEAK * abs(distance) / peak_speed)


def _scalar_moves(t, seconds, rng, amplitude, peak_speed, bounds, hold_s, min_duration_s):
    """One eased channel starting at 0: steps of |amplitude| at peak_speed within bounds."""
    def draw(rng, value):
        delta = _bounded_delta(rng, value[0], amplitude, bounds)
        return delta, _duration(delta, rng.uniform(*peak_speed), min_duration_s)
    return _eased(t, _moves(rng, seconds, hold_s, 0.0, draw))[0][:, 0]


def _filtered_noise(t, seconds, rng, sos, rms):
    """
    Stationary Gaussian noise through filter sos, one column per entry of rms, at t.

    Generated causally on the fixed GRID_HZ grid (after PREROLL_S of settling), scaled to
    the requested RMS with the filter's noise gain, then interpolated by a cubic spline.
    """
    rms = np.asarray(rms, dtype=float)
    preroll = int(PREROLL_S * GRID_HZ)
    n = preroll + int(math.ceil(seconds * GRID_HZ)) + 4
    filtered = signal.sosfilt(sos, rng.standard_normal((n, len(rms))), axis=0)[preroll:]
    impulse = signal.sosfilt(sos, np.r_[1.0, np.zeros(preroll - 1)])
    gain = math.sqrt(float(np.sum(impulse ** 2)))
    grid = np.arange(len(filtered)) / GRID_HZ
    return CubicSpline(grid, filtered * (rms / gain), axis=0)(t)


def _lowpass(cutoff_hz):
    return signal.butter(2, cutoff_hz, 'lowpass', fs=GRID_HZ, output='sos')


def _camera_rotation(yaw, tilt_up, roll):
    """Camera orientation from pan (yaw, left positive), tilt (up positive) and roll, rad."""
    angles = np.column_stack(np.broadcast_arrays(yaw, -np.asarray(tilt_up), roll))
    return Rotation.from_euler('ZYX', angles)


def _on_head(pivot, yaw, tilt_up):
    """Place a camera on a pan/tilt head: its tracking point sits HEAD_OFFSET_M from the pivot."""
    rotation = _camera_rotation(yaw, tilt_up, 0.0)
    return pivot + rotation.apply(HEAD_OFFSET_M), rotation


def _look_at(position, target):
    """Yaw and upward tilt (rad) that point the camera from position at target."""
    d = np.asarray(target) - position
    return np.arctan2(d[:, 1], d[:, 0]), np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))


def _tripod_pivot(rng):
    return np.array([rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0), rng.uniform(1.3, 1.5)])


def _walk(t, seconds, rng, centre, radius_m, spacing_m, distance_m, peak_speed, hold_s):
    """
    Simulate a walker on a smooth random path near a stage centre, stopping between walks.

    The path is a cubic spline through waypoints spacing_m apart.

    Returns position (N, 2), heading (N,) rad, speed (N,) m/s and distance walked (N,) m.
    """
    def draw(rng, value):
        distance = rng.uniform(*distance_m)
        return distance, _duration(distance, rng.uniform(*peak_speed), 1.5)
    schedule = _moves(rng, seconds, hold_s, 0.0, draw)
    walked, speed = (a[:, 0] for a in _eased(t, schedule))
    total = float(np.sum(schedule.delta))
    # Waypoints: gentle random turns, pulled back towards the centre more and more firmly
    # as the walker nears the edge of the stage.
    centre = np.asarray(centre, dtype=float)
    points = [centre]
    direction = rng.uniform(-np.pi, np.pi)
    for _ in range(int(total / spacing_m) + 3):
        offset = centre - points[-1]
        towards = np.arctan2(offset[1], offset[0])
        pull = min(1.0, (np.linalg.norm(offset) / radius_m) ** 2)
        turn = pull * np.angle(np.exp(1j * (towards - direction)))
        direction += np.clip(turn, -0.8, 0.8) + rng.uniform(-0.5, 0.5)
        points.append(points[-1] + spacing_m * np.array([np.cos(direction),
                                                         np.sin(direction)]))
    path = CubicSpline(np.arange(len(points)) * spacing_m, np.array(points), axis=0)
    # Arc-length table, to move along the path at the scheduled walking speed.
    knots = np.linspace(0.0, path.x[-1], int(path.x[-1] / 0.02) + 2)
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(path(knots), axis=0), axis=1))]
    along = np.interp(walked, arc, knots)
    tangent = path(along, 1)
    return path(along), np.arctan2(tangent[:, 1], tangent[:, 0]), speed, walked


def _gait(heading, speed, walked, bob_m, sway_m):
    """
    Compute the walking bob: vertical once per step, sideways once per stride, growing with speed.

    Returns the (N, 2) sideways and (N,) vertical displacement and the stride phase.
    """
    envelope = np.minimum(speed, 1.0)        # full amplitude from 1 m/s
    phase = np.pi * walked / STEP_LENGTH_M  # half a stride per step
    left = np.column_stack([-np.sin(heading), np.cos(heading)])
    side = (sway_m * envelope * np.sin(phase))[:, None] * left
    return side, bob_m * envelope * np.sin(2.0 * phase), phase


# --- the scenarios: (t, seconds, seed sequence) -> (position (N, 3), Rotation) ------------

def _locked_off(t, seconds, ss):
    rng = _rng(ss)
    yaw = np.full(len(t), rng.uniform(-np.pi, np.pi))
    tilt = np.full(len(t), np.radians(rng.uniform(-10.0, 5.0)))
    return _on_head(_tripod_pivot(rng), yaw, tilt)


def _pan(t, seconds, ss):
    rng = _rng(ss)
    yaw = rng.uniform(-np.pi, np.pi) + _scalar_moves(
        t, seconds, _rng(ss), np.radians((15.0, 90.0)), np.radians((10.0, 60.0)),
        np.radians((-120.0, 120.0)), (1.0, 3.0), 0.8)
    tilt = np.full(len(t), np.radians(rng.uniform(-10.0, 5.0)))
    return _on_head(_tripod_pivot(rng), yaw, tilt)


def _tilt(t, seconds, ss):
    rng = _rng(ss)
    tilt = np.radians(rng.uniform(-5.0, 5.0)) + _scalar_moves(
        t, seconds, _rng(ss), np.radians((5.0, 30.0)), np.radians((8.0, 40.0)),
        np.radians((-35.0, 35.0)), (1.0, 3.0), 0.8)
    yaw = np.full(len(t), rng.uniform(-np.pi, np.pi))
    return _on_head(_tripod_pivot(rng), yaw, tilt)


def _whip_pan(t, seconds, ss):
    rng = _rng(ss)
    yaw = rng.uniform(-np.pi, np.pi) + _scalar_moves(
        t, seconds, _rng(ss), np.radians((60.0, 180.0)), np.radians((300.0, 800.0)),
        np.radians((-180.0, 180.0)), (1.5, 4.0), 0.15)
    tilt = np.full(len(t), np.radians(rng.uniform(-8.0, 5.0)))
    return _on_head(_tripod_pivot(rng), yaw, tilt)


def _dolly(t, seconds, ss):
    """Move along a straight track with holds; the operator trims the pan while moving."""
    rng = _rng(ss)
    track_m = rng.uniform(6.0, 10.0)
    heading = rng.uniform(-np.pi, np.pi)
    start = np.array([rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0), rng.uniform(1.1, 1.5)])
    look = heading + rng.choice((0.0, np.pi / 2, -np.pi / 2))  # push-in or side tracking
    tilt = np.full(len(t), np.radians(rng.uniform(-8.0, 4.0)))
    trim = np.radians((-15.0, 15.0))

    def draw(rng, value):
        ds = _bounded_delta(rng, value[0], (0.5, 3.0), (0.0, track_m))
        dyaw = _bounded_delta(rng, value[1], np.radians((0.0, 5.0)), trim)
        return (ds, dyaw), _duration(ds, rng.uniform(0.3, 1.0), 1.5)
    along = rng.uniform(0.2, 0.8) * track_m
    value = _eased(t, _moves(_rng(ss), seconds, (1.0, 3.0), (along, 0.0), draw))[0]
    pivot = start + value[:, :1] * np.array([np.cos(heading), np.sin(heading), 0.0])
    return _on_head(pivot, look + value[:, 1], tilt)


def _crane(t, seconds, ss):
    """Raise, lower and swing a jib arm; the remote head keeps a subject in frame."""
    rng = _rng(ss)
    column = np.array([rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0), rng.uniform(1.4, 1.8)])
    arm_m = rng.uniform(3.0, 4.5)
    facing = rng.uniform(-np.pi, np.pi)
    reach = arm_m + rng.uniform(2.5, 5.0)
    subject = column + np.array([reach * np.cos(facing), reach * np.sin(facing), 0.0])
    subject[2] = rng.uniform(1.0, 1.6)

    def draw(rng, value):
        d_elev = _bounded_delta(rng, value[0], np.radians((8.0, 35.0)),
                                np.radians((-10.0, 35.0)))
        d_swing = _bounded_delta(rng, value[1], np.radians((0.0, 40.0)),
                                 np.radians((-50.0, 50.0)))
        arc = arm_m * math.hypot(d_elev, math.cos(value[0]) * d_swing)
        return (d_elev, d_swing), _duration(arc, rng.uniform(0.4, 1.2), 2.0)
    initial = (np.radians(rng.uniform(-5.0, 15.0)), 0.0)
    value = _eased(t, _moves(_rng(ss), seconds, (1.0, 3.0), initial, draw))[0]
    elev, swing = value[:, 0], facing + value[:, 1]
    p = column + arm_m * np.column_stack([np.cos(elev) * np.cos(swing),
                                          np.cos(elev) * np.sin(swing), np.sin(elev)])
    yaw, tilt = _look_at(p, subject)
    return p, _camera_rotation(yaw, tilt, 0.0)


def _orbit(t, seconds, ss):
    """Circle a subject on eased arcs, mostly in one direction, always looking at it."""
    rng = _rng(ss)
    subject = np.array([rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0), rng.uniform(1.1, 1.5)])
    radius, height = rng.uniform(2.0, 4.0), rng.uniform(1.3, 1.7)
    angle0 = rng.uniform(-np.pi, np.pi)
    direction = rng.choice((-1.0, 1.0))

    def draw(rng, value):
        sign = direction if rng.random() < 0.75 else -direction
        delta = sign * rng.uniform(*np.radians((60.0, 270.0)))
        return delta, _duration(delta, rng.uniform(*np.radians((8.0, 25.0))), 2.0)
    angle = angle0 + _eased(t, _moves(_rng(ss), seconds, (1.0, 3.0), 0.0, draw))[0][:, 0]
    wander = _filtered_noise(t, seconds, _rng(ss), _lowpass(0.05), (0.15, 0.08))
    r = radius + wander[:, 0]
    p = np.column_stack([subject[0] + r * np.cos(angle), subject[1] + r * np.sin(angle),
                         height + wander[:, 1]])
    yaw, tilt = _look_at(p, subject)
    return p, _camera_rotation(yaw, tilt, 0.0)


def _handheld(t, seconds, ss):
    """
    Simulate an operator standing and taking short walks (true camera motion).

    Body sway, gait, reframing pans and 8-12 Hz physiological tremor.
    """
    rng = _rng(ss)
    centre = rng.uniform(-2.0, 2.0, 2)
    height = rng.uniform(1.45, 1.65)
    yaw0 = rng.uniform(-np.pi, np.pi)
    tilt0 = np.radians(rng.uniform(-8.0, 4.0))
    xy, heading, speed, walked = _walk(t, seconds, _rng(ss), centre, 3.0, 1.0, (1.0, 4.0),
                                       (0.4, 1.0), (2.0, 6.0))
    pan = _scalar_moves(t, seconds, _rng(ss), np.radians((10.0, 45.0)),
                        np.radians((15.0, 40.0)), np.radians((-90.0, 90.0)), (1.5, 5.0), 0.8)
    tilt = _scalar_moves(t, seconds, _rng(ss), np.radians((2.0, 10.0)),
                         np.radians((5.0, 20.0)), np.radians((-15.0, 15.0)), (2.0, 6.0), 0.8)
    sway_p = _filtered_noise(t, seconds, _rng(ss), _lowpass(0.8), (0.006, 0.006, 0.004))
    sway_r = _filtered_noise(t, seconds, _rng(ss), _lowpass(1.0), np.radians((0.4, 0.4, 0.6)))
    band = signal.butter(4, (8.0, 12.0), 'bandpass', fs=GRID_HZ, output='sos')
    tremor = _filtered_noise(t, seconds, _rng(ss), band,
                             (0.0004,) * 3 + tuple(np.radians((0.04,) * 3)))
    side, bob, phase = _gait(heading, speed, walked, 0.012, 0.008)
    p = np.column_stack([xy + side, height + bob]) + sway_p + tremor[:, :3]
    yaw = yaw0 + pan + sway_r[:, 0] + tremor[:, 3]
    tilt_up = tilt0 + tilt + sway_r[:, 1] + tremor[:, 4]
    roll = sway_r[:, 2] + tremor[:, 5] + np.radians(0.5) * np.minimum(speed, 1.0) * np.sin(
        phase)
    return p, _camera_rotation(yaw, tilt_up, roll)


def _steadicam(t, seconds, ss):
    """Simulate a floating walk along a smooth path with stops, gentle 1-2 Hz bob, slow drift."""
    rng = _rng(ss)
    centre = rng.uniform(-2.0, 2.0, 2)
    height = rng.uniform(1.2, 1.5)
    look = rng.choice((0.0, np.pi))  # following, or leading the actor
    tilt0 = np.radians(rng.uniform(-5.0, 3.0))
    xy, heading, speed, walked = _walk(t, seconds, _rng(ss), centre, 4.0, 3.0, (3.0, 12.0),
                                       (0.6, 1.4), (1.0, 4.0))
    drift_p = _filtered_noise(t, seconds, _rng(ss), _lowpass(0.3), (0.008, 0.008, 0.005))
    drift_r = _filtered_noise(t, seconds, _rng(ss), _lowpass(0.25),
                              np.radians((1.5, 0.6, 0.5)))
    side, bob, _ = _gait(heading, speed, walked, 0.006, 0.004)
    p = np.column_stack([xy + side, height + bob]) + drift_p
    return p, _camera_rotation(heading + look + drift_r[:, 0], tilt0 + drift_r[:, 1],
                               drift_r[:, 2])


_SCENARIO_MOTION = {
    'locked_off': _locked_off, 'pan': _pan, 'tilt': _tilt, 'dolly': _dolly,
    'crane': _crane, 'orbit': _orbit, 'handheld': _handheld, 'whip_pan': _whip_pan,
    'steadicam': _steadicam,
}


def simulate_truth(scenario, seconds, rate_hz, seed):
    """
    Sample a scenario's true camera motion on the uniform clock k / rate_hz, k < seconds * rate.

    Returns (t (N,), p (N, 3), q (N, 4)); the same seed gives the same continuous motion at
    every rate.
    """
    frames = _check_clock(scenario, seconds, rate_hz)
    motion = np.random.SeedSequence(_check_seed(seed)).spawn(2)[0]
    t = np.arange(frames) / float(rate_hz)
    p, rotation = _SCENARIO_MOTION[scenario](t, float(seconds), motion)
    return t, p, quat.make_continuous(rotation.as_quat())


# --- tracker noise ---------------------------------------------------------------------

def _unit_vectors(rng, n):
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _events(rng, rate_hz, interval):
    """Frames where a Poisson event of rate_hz happens (probability rate * interval)."""
    return rng.random(len(interval)) < np.minimum(rate_hz * interval, 1.0)


def _dropped(rng, n, rate):
    """
    Draw which of n frames are missing (a boolean mask), with dropped fraction rate.

    Kept and dropped runs alternate, of geometric length (a two-state Markov chain) with
    mean burst DROPOUT_MEAN_BURST_FRAMES.
    """
    dropped = np.zeros(n, dtype=bool)
    if rate <= 0.0:
        return dropped
    mean_kept = DROPOUT_MEAN_BURST_FRAMES * (1.0 - rate) / rate
    runs = []
    covered = 0
    while covered < n:  # draws ~n / run length at once; a second pass is rare
        pairs = int(n / (mean_kept + DROPOUT_MEAN_BURST_FRAMES)) + 8
        run = np.column_stack([rng.geometric(1.0 / mean_kept, pairs),
                               rng.geometric(1.0 / DROPOUT_MEAN_BURST_FRAMES, pairs)]).ravel()
        runs.append(run)
        covered += int(run.sum())
    edges = np.cumsum(np.concatenate(runs))  # kept run ends where a burst starts, and so on
    change = np.zeros(n + 1, dtype=int)
    np.add.at(change, np.minimum(edges[0::2], n), 1)
    np.add.at(change, np.minimum(edges[1::2], n), -1)
    return np.cumsum(change[:n]) > 0


def _freed_quantize(p, q):
    """Positions and pan/tilt/roll angles rounded to the FreeD D1 steps."""
    p = np.round(p / FREED_POS_STEP_M) * FREED_POS_STEP_M
    angles = np.degrees(Rotation.from_quat(q).as_euler('ZYX'))
    angles = np.round(angles / FREED_ANGLE_STEP_DEG) * FREED_ANGLE_STEP_DEG
    return p, Rotation.from_euler('ZYX', np.radians(angles)).as_quat()


def _ar1(rng, interval, time_s, shape):
    """
    Return unit-variance AR(1) noise of the given shape, correlated over time_s.

    Sample k follows x_k = a x_(k-1) + sqrt(1 - a^2) w_k with a = exp(-dt_k / time_s):
    stationary from the first sample, whatever the frame intervals.
    """
    white = rng.standard_normal(shape)
    a = np.exp(-interval / max(time_s, 1e-9))
    out = np.empty(shape)
    out[0] = white[0]
    for k in range(1, shape[0]):
        out[k] = a[k] * out[k - 1] + np.sqrt(1.0 - a[k] ** 2) * white[k]
    return out


def add_tracker_noise(t, p, q, noise, seed):
    """
    Return what a tracker with error model `noise` reports of the true poses (t, p, q).

    Row k of the result is frame k of the input unless dropped; with stamp jitter its stamp
    moves but its truth stays the pose at the true capture time t[k]. Re-localisation adds
    a persistent position offset. rate_hz of the Take is 1 / median frame interval and its
    scenario is ''.
    """
    t, p, q = _check_trajectory(t, p, q)
    if not isinstance(noise, TrackerNoise):
        raise ValueError(f'noise must be a TrackerNoise, got {type(noise).__name__}')
    rng_white, rng_drift, rng_spike, rng_jump, rng_stamp, rng_drop, rng_coloured = (
        np.random.default_rng(s) for s in
        np.random.SeedSequence(_check_seed(seed)).spawn(2)[1].spawn(7))
    n = len(t)
    dt = np.diff(t)
    interval = np.r_[dt[0], dt]
    rot_sigma, drift_rot = np.radians(noise.rot_sigma_deg), np.radians(noise.drift_rot_deg)
    white = rng_white.standard_normal((n, 6))
    err_p = noise.pos_sigma_m * white[:, :3]
    err_r = rot_sigma * white[:, 3:]
    if noise.drift_pos_m > 0.0 or noise.drift_rot_deg > 0.0:
        walk = np.cumsum(rng_drift.standard_normal((n, 6)) * np.sqrt(interval)[:, None], axis=0)
        walk -= walk[0]
        err_p += noise.drift_pos_m * walk[:, :3]
        err_r += drift_rot * walk[:, 3:]
    if noise.coloured_pos_m > 0.0 or noise.coloured_rot_deg > 0.0:
        coloured = _ar1(rng_coloured, interval, noise.coloured_time_s, (n, 6))
        err_p += noise.coloured_pos_m * coloured[:, :3]
        err_r += np.radians(noise.coloured_rot_deg) * coloured[:, 3:]
    spike = _events(rng_spike, noise.spike_rate_hz, interval)
    spike[1:] &= ~spike[:-1]  # isolated: never two outliers in a row
    err_p[spike] += noise.spike_m * _unit_vectors(rng_spike, n)[spike]
    err_r[spike] += np.radians(noise.spike_deg) * _unit_vectors(rng_spike, n)[spike]
    jump = _events(rng_jump, noise.relocalize_rate_hz, interval)
    jump[0] = False
    err_p += np.cumsum(np.where(jump[:, None],
                                noise.relocalize_jump_m * _unit_vectors(rng_jump, n), 0.0),
                       axis=0)
    noisy_p = p + err_p
    noisy_q = quat.multiply(q, quat.exp_map(err_r))
    if noise.freed_quantize:
        noisy_p, noisy_q = _freed_quantize(noisy_p, noisy_q)
    noisy_q = quat.align_hemisphere(noisy_q, q)
    stamps = t
    if noise.stamp_jitter_s > 0.0:
        limit = JITTER_LIMIT * np.minimum(interval, np.r_[dt, dt[-1]])
        stamps = t + np.clip(noise.stamp_jitter_s * rng_stamp.standard_normal(n), -limit, limit)
    keep = ~_dropped(rng_drop, n, noise.dropout_rate)
    segment = np.cumsum(jump)[keep]  # which offset each kept frame carries
    return Take(scenario='', rate_hz=float(1.0 / np.median(dt)), seed=int(seed),
                t=stamps[keep], truth_p=p[keep], truth_q=q[keep], noisy_p=noisy_p[keep],
                noisy_q=noisy_q[keep], spike=spike[keep],
                relocalized=np.r_[False, segment[1:] != segment[:-1]])


def simulate(scenario, seconds=20.0, rate_hz=60.0, seed=0, noise=TrackerNoise()):
    """Simulate a take of a scenario: the true motion and what a tracker with `noise` reports."""
    t, p, q = simulate_truth(scenario, seconds, rate_hz, seed)
    take = add_tracker_noise(t, p, q, noise, seed)
    return replace(take, scenario=scenario, rate_hz=float(rate_hz))
