"""
Output on the video frame clock: one pose per video frame instant, not one per measurement.

A stabiliser produces poses at the tracker's own instants (irregular, 24-240 Hz); a render
engine samples tracking once per video frame. With `output_rate` set to a frame rate, a
bridge sends instead one pose per frame instant, interpolated at that instant from the
stabilised samples around it (position linearly, orientation by slerp on the shortest
path, so a quaternion sign flip between samples never spins).

- The grid: frame k is at T_k = k / rate seconds, computed from integers (k * den / num,
  correctly rounded), so it does not drift over hours. It is aligned to the stamps' epoch:
  with PTP stamps the frame instants fall on the genlocked frame boundaries.
- Release: frame k is released, by `due(now)`, once now >= T_k + delay_frames / rate
  (`now` in the stamps' time base; RELEASE_SLACK_S of float rounding allowed). Frames
  come out in order, each exactly once; frames a rare `due` call missed still come out,
  but at most MAX_CATCH_UP overdue frames at a time: older ones are skipped and counted
  (`skipped`).
- The first frame is the first grid instant at or after the first sample: nothing is
  released for instants before the data.
- Late data: a frame beyond the newest sample is extrapolated with the velocity of the
  last two samples (position linearly, orientation by their relative rotation), at most
  `max_extrapolation_s` beyond the sample: later frames get the pose at that limit
  (`extrapolated`, `extrapolation_limited`). A frame more than `stale_s` beyond its
  sample is not sent (`stale`): when the tracker is gone the output stops rather than
  freeze. A gap between two samples longer than `stale_s` is a break in the stream: the
  frames in it are treated as beyond the earlier sample, never interpolated across it.
- Bad input never crashes: a stamp at or before the newest is ignored (`out_of_order`),
  unless it is more than `stale_s` back: then the stream restarted, and the clock starts
  over on the new stamps (`restarts`);
  a non-finite stamp or position or a zero quaternion is dropped (`invalid`); a
  non-unit quaternion is renormalised. After a stream restart call `reset()`.
"""
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.params import ParamSpec
from camstab_ros.core.validation import MIN_QUATERNION_NORM
import numpy as np


MIN_FPS = 1
MAX_FPS = 1000
# Frame rates written as decimals that mean the NTSC rationals (N * 1000 / 1001).
NTSC_RATES = {
    Fraction('23.976'): Fraction(24000, 1001),
    Fraction('23.98'): Fraction(24000, 1001),
    Fraction('29.97'): Fraction(30000, 1001),
    Fraction('47.952'): Fraction(48000, 1001),
    Fraction('59.94'): Fraction(60000, 1001),
    Fraction('119.88'): Fraction(120000, 1001),
}
# Overdue frames released by one `due` call at most; older ones are skipped.
MAX_CATCH_UP = 1000
# A release time counts as reached this close before it: float stamps are not exact (a
# stamp near 1.7e9 s resolves 0.24 us), and T_k + delay / rate computed in floats may fall
# a rounding short of the exact rational release time.
RELEASE_SLACK_S = Fraction(1, 1000000)
# Bound of the sample history (it only grows this far when `due` is not called).
MAX_SAMPLES = 16384
COUNT_KEYS = ('frames', 'extrapolated', 'extrapolation_limited', 'stale', 'skipped',
              'out_of_order', 'invalid', 'restarts')


def parse_output_rate(text):
    """Return the frame rate (a Fraction, fps) that text names, or None for 'input'."""
    word = str(text).strip()
    if word.lower() == 'input':
        return None
    try:
        rate = Fraction(word)
    except (ValueError, ZeroDivisionError):
        rate = None
    if rate is not None and '/' not in word and rate.denominator != 1:
        rate = NTSC_RATES.get(rate, rate.limit_denominator(1001))
    if rate is None or not MIN_FPS <= rate <= MAX_FPS:
        raise ValueError(
            f"{text!r} is not an output rate: use 'input' (one output per measurement) or "
            f'a frame rate of {MIN_FPS} to {MAX_FPS} fps as N/D (24000/1001), an integer '
            '(25) or a decimal (29.97)')
    return rate


OUTPUT_RATE_SPEC = ParamSpec(
    'input', "'input': one output per measurement; or a video frame rate in fps "
    '(24000/1001, 25, 29.97): one pose per frame instant, interpolated',
    check=parse_output_rate, any_type=True)
FRAME_DELAY_SPEC = ParamSpec(
    1.0, 'with a frame rate as output_rate: how long after its instant a frame is sent, '
    'so that the samples after it have arrived', 'frames', 0.0, 10.0)
MAX_EXTRAPOLATION_SPEC = ParamSpec(
    0.02, 'with a frame rate as output_rate: how far beyond the newest sample a frame is '
    'extrapolated when the data is late (later frames hold the pose at this limit)',
    's', 0.0, 0.5)
SPECS = {
    'output_rate': OUTPUT_RATE_SPEC,
    'output_delay_frames': FRAME_DELAY_SPEC,
    'max_extrapolation_s': MAX_EXTRAPOLATION_SPEC,
}


@dataclass
class FramePose:
    """
    The pose at video frame instant t (s), from the stabilised samples around it.

    tag: the tag of the latest sample at or before t. extrapolated_s: how far t lies
    beyond the data (0 when samples cover t); the pose is extrapolated by that much, at
    most by max_extrapolation_s.
    """

    t: float
    position: np.ndarray
    quaternion: np.ndarray
    tag: object
    extrapolated_s: float


@dataclass
class _Sample:
    t: float
    position: np.ndarray
    quaternion: tuple   # unit, in the hemisphere of the sample before
    tag: object


class FrameClock:
    """Resample a stream of stabilised poses onto the video frame instants of `rate`."""

    def __init__(self, rate, delay_frames=1.0, max_extrapolation_s=0.02, stale_s=0.5):
        """
        Make a clock of `rate` fps (a Fraction, an int or a text parse_output_rate reads).

        delay_frames: frames between a frame instant and its release. max_extrapolation_s
        and stale_s (s): how far beyond the newest sample a frame is extrapolated, and
        beyond which it is not sent.
        """
        if not isinstance(rate, (int, Fraction)) or isinstance(rate, bool):
            rate = parse_output_rate(rate)
            if rate is None:
                raise ValueError('FrameClock needs a frame rate, not input')
        if not rate > 0:
            raise ValueError(f'frame rate {rate} is not positive')
        for name, value in (('delay_frames', delay_frames),
                            ('max_extrapolation_s', max_extrapolation_s),
                            ('stale_s', stale_s)):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f'{name} {value!r} is not a finite number >= 0')
        self.rate = Fraction(rate)
        self.delay_frames = float(delay_frames)
        self.max_extrapolation_s = float(max_extrapolation_s)
        self.stale_s = float(stale_s)
        self._num = self.rate.numerator
        self._den = self.rate.denominator
        self._delay = Fraction(self.delay_frames)
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.reset()

    def reset(self):
        """Forget the samples and the frame position (after a stream restart); keep counts."""
        self._samples = deque(maxlen=MAX_SAMPLES)
        self._next = None       # index k of the next frame to release
        self._release = None    # its release time, exactly (a Fraction)

    def frame_time(self, k):
        """Return the instant (s) of frame k: k / rate, correctly rounded, free of drift."""
        return k * self._den / self._num

    def next_due(self):
        """Return the release time (s) of the next frame, None before the first sample."""
        return None if self._release is None else float(self._release)

    def add(self, t, position, quaternion, tag=None):
        """Add the stabilised pose at stamp t (s); return False if it was dropped."""
        t = float(t)
        position = np.array(position, dtype=float)
        quaternion = np.asarray(quaternion, dtype=float)
        if position.shape != (3,) or quaternion.shape != (4,):
            raise ValueError(f'position {position.shape} or quaternion {quaternion.shape} '
                             'is not of shape (3,) and (4,)')
        x, y, z, w = (float(c) for c in quaternion)
        norm = math.sqrt(x * x + y * y + z * z + w * w)
        if not (math.isfinite(t) and math.isfinite(norm) and norm >= MIN_QUATERNION_NORM
                and all(math.isfinite(c) for c in position)):
            self.counts['invalid'] += 1
            return False
        quaternion = (x / norm, y / norm, z / norm, w / norm)
        if self._samples and t <= self._samples[-1].t - self.stale_s:
            # Stamps stepped back further than a stale gap: the stream restarted (a
            # tracker reboot, a new clock); start over on the new stamps.
            self.counts['restarts'] += 1
            self.reset()
        samples = self._samples
        if samples:
            if t <= samples[-1].t:
                self.counts['out_of_order'] += 1
                return False
            # The hemisphere of the sample before: the stored sequence has no sign flips.
            if sum(a * b for a, b in zip(quaternion, samples[-1].quaternion)) < 0.0:
                quaternion = tuple(-c for c in quaternion)
        else:
            # The first frame instant at or after the first sample.
            self._set_next(math.ceil(Fraction(t) * self._num / self._den))
        samples.append(_Sample(t, position, quaternion, tag))
        self._prune(self.frame_time(self._next))
        return True

    def due(self, now):
        """Return the FramePoses released by time `now` (s, stamps' time base), oldest first."""
        released = []
        now = float(now)
        if self._next is None or not math.isfinite(now):
            return released
        now = Fraction(now) + RELEASE_SLACK_S
        if self._release > now:
            return released
        last = math.floor(now * self._num / self._den - self._delay)
        overdue = last - self._next + 1
        if overdue > MAX_CATCH_UP:
            self.counts['skipped'] += overdue - MAX_CATCH_UP
            self._next += overdue - MAX_CATCH_UP
        for k in range(self._next, last + 1):
            frame = self._frame(self.frame_time(k))
            if frame is not None:
                released.append(frame)
        self.counts['frames'] += len(released)
        self._set_next(last + 1)
        return released

    def _set_next(self, k):
        self._next = k
        self._release = (k + self._delay) * self._den / self._num

    def _prune(self, t):
        # Keep the samples after t and two at or before it (for the velocity).
        samples = self._samples
        while len(samples) > 2 and samples[2].t <= t:
            samples.popleft()

    def _frame(self, t):
        """Return the FramePose at frame instant t, None for a frame not sent (counted)."""
        self._prune(t)
        samples = self._samples
        if samples[0].t > t:
            # Only when the bounded history overflowed: the data of t is gone.
            self.counts['skipped'] += 1
            return None
        i = 1 if len(samples) > 1 and samples[1].t <= t else 0
        a = samples[i]
        b = samples[i + 1] if i + 1 < len(samples) else None
        if b is not None and b.t - a.t <= self.stale_s:
            fraction = (t - a.t) / (b.t - a.t)
            position = a.position + fraction * (b.position - a.position)
            rotation = quat.log_relative(a.quaternion, b.quaternion)
            quaternion = quat.compose_exp(a.quaternion, [fraction * w for w in rotation])
            return FramePose(t, position, np.array(quaternion), a.tag, 0.0)
        late = t - a.t
        if late > self.stale_s:
            self.counts['stale'] += 1
            return None
        if late == 0.0:
            return FramePose(t, a.position.copy(), np.array(a.quaternion), a.tag, 0.0)
        self.counts['extrapolated'] += 1
        span = late
        if late > self.max_extrapolation_s:
            span = self.max_extrapolation_s
            self.counts['extrapolation_limited'] += 1
        before = samples[i - 1] if i > 0 else None
        if before is None or a.t - before.t > self.stale_s:
            # No velocity across a break in the stream: hold the sample.
            return FramePose(t, a.position.copy(), np.array(a.quaternion), a.tag, late)
        step = span / (a.t - before.t)
        position = a.position + step * (a.position - before.position)
        rotation = quat.log_relative(before.quaternion, a.quaternion)
        quaternion = quat.compose_exp(a.quaternion, [step * w for w in rotation])
        return FramePose(t, position, np.array(quaternion), a.tag, late)
