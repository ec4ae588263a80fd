"""
The one stabilising pipeline: validation -> smoother -> gap resets -> run-time switch.

`Stabilizer` is what the `stabilizer` node, the FreeD bridge, `camstab smooth`,
`camstab evaluate`, the benchmarks, bag smoothing and training's evaluation all run: an
evaluation figure is a figure of the node. It knows nothing of ROS; every measurement
carries an opaque `tag` (a ROS stamp, FreeD lens values, a row index) that comes back
with its output.

Rules, in the order a measurement meets them:
1. Frame: a measurement in another frame than the stream's is dropped (`wrong_frame_id`).
   The stream's frame is `frame_id`, or, when that is empty, the frame of the first
   measurement: that lock expires when the stream pauses (`idle()`) or when another frame
   has streamed alone for `dropout_timeout_s` of its own stamps.
2. Validation (`MeasurementValidator`): non-finite values, positions beyond the
   workspace bound, zero quaternions and stamps that do not increase (or, with a clock,
   lie more than `max_future_s` ahead of it) are dropped; a non-unit quaternion is
   renormalised and counted.
3. Clock steps: CLOCK_STEP_FRAMES measurements in a row dropped for their stamps alone,
   whose stamps increase among themselves, are a step of the tracker's clock (a reboot,
   a PTP step): the stream restarts cleanly on the new clock (counted in clock_steps).
4. Gaps: a stamp gap longer than `dropout_timeout_s`, or as long a pause in arrivals
   (`idle()`), flushes the smoother's held-back estimates and resets it; a pause also
   restarts the stream (stamps, frame lock).
5. Reach: when REACH_FRAMES estimates in a row lie further than `reset_jump_m` or
   `reset_jump_deg` (the smoother's own, else `kalman`'s default) from their own
   measurements (a diverged or coasting filter, not a one-frame spike it rightly
   rejects), the last is replaced by its measurement and the smoother restarts there
   (reach_resets).
6. A smoother that raises is reset and the measurement dropped (`smoother_error`,
   `last_error`); the pipeline goes on.
7. Every valid measurement yields exactly one Output, in input order, with its own tag
   (delayed methods emit it later). Measurements are never lost silently: at any moment
   received = published + pending + every drop by reason (`unreleased`: measurements a
   reset or a failing smoother left without an estimate).
8. `switch()` replaces the smoother without a jump in the output: the new smoother is
   warmed on the last WARMUP_S seconds of measurements, then both run side by side and
   the output cross-fades from the old estimate to the new one over `blend_s` seconds of
   measurement time (position lerp, orientation slerp): two methods differ by their own
   lag, centimetres apart during a fast move.

Parameters follow one naming rule (`parameter_specs()`): `method`; the parameters in
SHARED under their own name, handed to every method that has them; every other smoother
parameter as `<method>.<param>`; `switch_blend_s`, `max_position_m`.
"""
from collections import Counter, deque
import copy
from dataclasses import dataclass, field
import math
import time

from camstab_ros.core import quaternion as quat
from camstab_ros.core.methods import causal_methods, list_methods, make_smoother, smoother_class
from camstab_ros.core.noise_meter import NoiseMeter
from camstab_ros.core.params import ParameterError, ParamSpec
from camstab_ros.core.smoother import Estimate, SmootherStats
from camstab_ros.core.validation import (CLOCK_REASONS, DEFAULT_MAX_POSITION_M, drop_figures,
                                         MeasurementValidator, MIN_QUATERNION_NORM, REASONS)
import numpy as np


DEFAULT_METHOD = 'kalman'
WRONG_FRAME = 'wrong_frame_id'
# Drops the pipeline counts itself (the validator counts REASONS).
PIPELINE_REASONS = {
    WRONG_FRAME: "measurement in another frame than the stream's",
    'smoother_error': 'the smoother raised on the measurement (it was reset)',
    'unreleased': 'a reset or a failing smoother left the measurement without an estimate',
}
DROP_REASONS = tuple(REASONS) + tuple(PIPELINE_REASONS)
# Measurements in a row dropped for their stamps alone that make a clock step.
CLOCK_STEP_FRAMES = 10
# Rows the offline fast path admits at a time (bounds its temporary lists).
ADMIT_BLOCK = 65536
# Estimates in a row out of reach of their measurements that restart the smoother: one
# more than `kalman`'s gate_max_consecutive default, so that its own restart comes first.
REACH_FRAMES = 4
# Dropped measurements remembered per reason, for the warnings that name them.
DROP_EXAMPLES = 5
# Bound of the measurements waiting for their estimate (a causal smoother holds at most
# delay_frames of them; offline smoothers hold the whole take).
MAX_PENDING = 10000
# Smoother parameters declared once under their own name and handed to every method that
# has them (never also as `<method>.<name>`); dropout_timeout_s also drives the resets.
SHARED = ('delay_frames', 'dropout_timeout_s', 'reset_jump_m', 'model_path')
DEFAULT_BLEND_S = 1.0
MAX_POSITION_SPEC = ParamSpec(
    DEFAULT_MAX_POSITION_M, 'workspace bound: a pose with a position component beyond this '
    'is dropped as out_of_workspace', 'm', 1.0, 1e7)
# Pipeline parameters that offline tools take for any method.
TAKE_PARAMS = ('dropout_timeout_s', 'reset_jump_m', 'max_position_m')
# Measurements kept to warm a new smoother before a run-time switch.
WARMUP_S = 2.0
WARMUP_MAX_FRAMES = 1000
# Per-update costs kept for the live median and p99.
COST_WINDOW = 2048
# An estimate belongs to the pending measurement whose time is this close.
STAMP_MATCH_S = 1e-9


def shared_spec(name):
    """Return the spec of a SHARED parameter: that of the first method that has it."""
    for method in list_methods():
        spec = smoother_class(method).PARAMS.get(name)
        if spec is not None:
            return spec
    raise KeyError(f'no method has the shared parameter {name!r}')


def parameter_specs():
    """Every parameter of the pipeline: {name: ParamSpec}, in declaration order."""
    methods = causal_methods()
    specs = {'method': ParamSpec(
        DEFAULT_METHOD, 'smoothing method (the causal methods)', choices=methods,
        check=check_method)}
    for name in SHARED:
        specs[name] = shared_spec(name)
    for method in methods:
        for key, spec in smoother_class(method).PARAMS.items():
            if key not in SHARED:
                specs[f'{method}.{key}'] = spec
    specs['switch_blend_s'] = ParamSpec(
        DEFAULT_BLEND_S, 'after a change of method or smoother parameter the output '
        'cross-fades from the old smoother to the new one over this long (0: at once)',
        's', 0.0, 10.0)
    specs['max_position_m'] = MAX_POSITION_SPEC
    return specs


def stabilizer_for(method, params=None):
    """
    Build a Stabilizer of any method from unprefixed parameters (the CLI's --param).

    TAKE_PARAMS go to the pipeline (and to the smoother too when it has one of that name);
    the rest to the smoother. Raises ParameterError naming a bad parameter.
    """
    params = dict(params or {})
    cls = smoother_class(method)
    pipeline = {}
    for name in TAKE_PARAMS:
        if name in params:
            spec = MAX_POSITION_SPEC if name == 'max_position_m' else shared_spec(name)
            pipeline[name] = spec.coerce(name, params[name])
            if name not in cls.PARAMS:
                del params[name]
    return Stabilizer(make_smoother(method, **params), pipeline.get('dropout_timeout_s'),
                      reset_jump_m=pipeline.get('reset_jump_m'),
                      max_position_m=pipeline.get('max_position_m', DEFAULT_MAX_POSITION_M))


def check_method(name):
    """Raise ParameterError with a reason unless `name` is a causal method."""
    if not smoother_class(name).causal:
        raise ParameterError(
            f'method {name!r} is not causal (it needs the whole take; use it offline with '
            f'`camstab smooth`); causal methods: {", ".join(causal_methods())}')


def smoother_parameters(method):
    """{pipeline parameter name: smoother parameter name} of a method's parameters."""
    return {(key if key in SHARED else f'{method}.{key}'): key
            for key in smoother_class(method).PARAMS}


def build_smoother(values):
    """Build the smoother that pipeline parameter values call for; ParameterError if invalid."""
    method = values['method']
    check_method(method)
    return make_smoother(method, **{key: values[name]
                                    for name, key in smoother_parameters(method).items()})


def staged_smoother(specs, values, changes):
    """
    Validate parameter changes {name: value} against the current values.

    Returns the new smoother they call for, or None when the smoother is unaffected.
    Names outside specs are ignored (a node's other parameters). Raises ParameterError,
    ValueError or OSError (a model file) with the reason for rejecting the change.
    """
    values = dict(values)
    changes = {name: value for name, value in changes.items() if name in specs}
    for name, value in changes.items():
        values[name] = specs[name].coerce(name, value)
    if set(changes) & ({'method'} | set(smoother_parameters(values['method']))):
        return build_smoother(values)
    return None


@dataclass
class Output:
    """A stabilised pose for the measurement at time t that carried `tag`."""

    t: float
    tag: object
    frame_id: str
    position: np.ndarray
    quaternion: np.ndarray
    covariance: np.ndarray


@dataclass
class TakeResult:
    """A whole take through the pipeline: one output row per input row."""

    p: np.ndarray                 # (N, 3)
    q: np.ndarray                 # (N, 4)
    dropped: dict                 # invalid input rows by reason
    dropped_rows: np.ndarray      # indices of the invalid input rows
    renormalized: int             # non-unit quaternions renormalised
    stats: dict                   # outliers, resets (smoother's and the pipeline's), coasted
    us_per_update: np.ndarray = field(default=None)  # per-call cost when timed
    model_status: str = ''        # the smoother's (a learned method's model, or fallback)
    tracker_noise: str = ''       # the noise meter's reading of the take
    fallback: bool = False        # a learned method ran `kalman`: its model did not load
    drop_examples: dict = field(default_factory=dict)  # reason: its first dropped rows


@dataclass
class _Pending:
    """A valid measurement waiting for its estimate."""

    t: float
    tag: object
    frame_id: str
    position: np.ndarray
    quaternion: np.ndarray


class Stabilizer:
    """The pipeline of the module docstring around one smoother (switchable)."""

    def __init__(self, smoother, dropout_timeout_s=None, blend_s=DEFAULT_BLEND_S,
                 frame_id='', reset_jump_m=None, max_position_m=DEFAULT_MAX_POSITION_M,
                 max_future_s=1.0, cost_window=COST_WINDOW):
        """
        Wrap smoother in the pipeline.

        dropout_timeout_s, reset_jump_m: None takes the smoother's own value, else the
        shared default. max_future_s applies when process() is given the clock (`now`).
        """
        self.smoother = smoother
        self.dropout_timeout_s = self._shared(smoother, 'dropout_timeout_s', dropout_timeout_s)
        self.reset_jump_m = self._shared(smoother, 'reset_jump_m', reset_jump_m)
        self._set_turn_limit(smoother)
        self.blend_s = blend_s
        self.frame_id = frame_id
        self.max_future_s = max_future_s
        self.validator = MeasurementValidator(max_position_m)
        self.noise = NoiseMeter()     # the tracker's noise, measured on the valid stream
        _share_noise_meter(smoother, self.noise)
        self.dropped = Counter()      # PIPELINE_REASONS (the validator counts the rest)
        self.drop_examples = {}       # reason: the tags of its first DROP_EXAMPLES drops
        self.pipeline_resets = 0      # gap and reach resets of the current smoother
        self.reach_resets = 0
        self._out_of_reach = 0        # estimates in a row out of reach
        self.clock_steps = 0
        self.frame_changes = 0
        self.last_error = ''
        self.received = 0
        self.published = 0
        self.costs_us = deque(maxlen=cost_window)
        self._auto_frame = not frame_id
        self._foreign_since = None    # first stamp of other-frame measurements in a row
        self._suspects = []           # stamps of measurements in a row dropped for stamps
        self._clock_offset = 0.0      # accepted offset of the tracker's clock ahead of ours
        self._past_stats = SmootherStats()
        self._history = deque(maxlen=WARMUP_MAX_FRAMES)
        self._pending = deque()       # _Pending measurements without output yet
        self._estimates = deque()     # the smoother's estimates not yet released
        self._old = None              # the previous smoother while cross-fading
        self._old_estimates = deque()
        self._switch_t = None
        self._last_t = None
        self._last_out_t = -np.inf

    @classmethod
    def from_values(cls, values, **kwargs):
        """Build the pipeline that parameter values of `parameter_specs()` call for."""
        return cls(build_smoother(values), values['dropout_timeout_s'],
                   values['switch_blend_s'], reset_jump_m=values['reset_jump_m'],
                   max_position_m=values['max_position_m'], **kwargs)

    def apply_values(self, values):
        """Take run-time changes of the pipeline's own parameters (not the smoother's)."""
        self.dropout_timeout_s = values['dropout_timeout_s']
        self.reset_jump_m = values['reset_jump_m']
        self.blend_s = values['switch_blend_s']
        self.validator.max_position_m = values['max_position_m']

    def drop_detail(self, reason):
        """Return what to add to a log line about a measurement dropped for reason."""
        return f': {self.last_error}' if reason == 'smoother_error' else ''

    def lock_frame(self, frame_id):
        """Require frame_id of every measurement; empty: lock on the next one's frame."""
        self.frame_id = frame_id
        self._auto_frame = not frame_id
        self._foreign_since = None

    def _set_turn_limit(self, smoother):
        """Take the reach in orientation: the smoother's reset_jump_deg, else kalman's."""
        degrees = smoother.params.get(
            'reset_jump_deg', smoother_class(DEFAULT_METHOD).PARAMS['reset_jump_deg'].default)
        # Unit quaternions a, b are further apart than angle x when |a . b| < cos(x / 2).
        self._reach_cos = math.cos(0.5 * math.radians(degrees))

    @staticmethod
    def _shared(smoother, name, value):
        if value is not None:
            return value
        return smoother.params.get(name, shared_spec(name).default)

    @property
    def switching(self):
        """Tell whether the output is cross-fading from the previous smoother."""
        return self._old is not None

    @property
    def pending(self):
        """Return how many valid measurements wait for their estimate."""
        return len(self._pending)

    def process(self, t, position, quaternion, tag=None, frame_id='', now=None):
        """
        Take one measurement: (drop reason or None, the Outputs it releases).

        now: the receiving clock in the stamps' time base (seconds), when there is one.
        """
        self.received += 1
        reason, q, event = self._admit(t, position, quaternion, frame_id, now)
        if reason is not None:
            self.note_drop(reason, tag)
            return reason, []
        t = float(t)
        position = np.asarray(position, dtype=float)
        outputs = self._reset_smoother(restart=event != 'gap') if event else []
        if event:
            self.noise.restart()
        self.noise.update(t, position, q)
        start = time.perf_counter_ns()
        estimate, error = _guarded(self.smoother.update, t, position, q)
        old_estimate = None
        if self._old is not None:
            old_estimate, old_error = _guarded(self._old.update, t, position, q)
            if old_error is not None:
                self.last_error = old_error
                self._end_blend()
        self.costs_us.append((time.perf_counter_ns() - start) * 1e-3)  # both while fading
        if error is not None:
            self.last_error = error
            self.dropped['smoother_error'] += 1
            self.note_drop('smoother_error', tag)
            return 'smoother_error', outputs + self._reset_smoother()
        self._pending.append(_Pending(t, tag, frame_id, position, q))
        self._history.append((t, position, q))
        while self._history[0][0] < t - WARMUP_S:
            self._history.popleft()
        if estimate is not None:
            estimate = self._within_reach(estimate, t, position, q)
        self._keep(self._estimates, estimate)
        self._keep(self._old_estimates, old_estimate)
        outputs += self._release()
        if self.smoother.causal and len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.dropped['unreleased'] += 1
        return None, outputs

    def idle(self, seconds_without_input):
        """Call periodically: after dropout_timeout_s without input, restart the stream."""
        if seconds_without_input <= self.dropout_timeout_s:
            return []
        outputs = []
        if self._history or self._pending:
            outputs = self._reset_smoother(restart=True)
        if self._auto_frame:
            self.frame_id = ''
        self.noise.restart()
        self.validator.reset()
        self._last_t = None
        self._suspects.clear()
        self._foreign_since = None
        return outputs

    def finish(self):
        """End of the stream: the Outputs still held back (the smoother starts afresh)."""
        self._keep_all(self._estimates, self._flush(self.smoother))
        if self._old is not None:
            self._keep_all(self._old_estimates, self._flush(self._old))
        outputs = self._release()
        self._end_blend()
        self._clear()
        return outputs

    def note_drop(self, reason, tag):
        """Keep the tag of one of the first DROP_EXAMPLES measurements dropped for reason."""
        examples = self.drop_examples.setdefault(reason, [])
        if len(examples) < DROP_EXAMPLES:
            examples.append(tag)

    def switch(self, smoother):
        """Replace the smoother at run time (warm-up, then cross-fade); returns Outputs."""
        _share_noise_meter(smoother, self.noise)
        if self._old is not None:  # a switch during a cross-fade starts from the newest
            self._end_blend()
        self._past_stats = self.stats
        self.pipeline_resets = 0
        warm = deque()
        for t, position, q in self._history:
            estimate, error = _guarded(smoother.update, t, position, q)
            if error is not None:
                self.last_error = error
                smoother.reset()
                warm.clear()
                break
            self._keep(warm, estimate)
        smoother.stats = SmootherStats()  # warm-up events were counted by the old smoother
        outputs = []
        if self._history and self.blend_s > 0.0:
            self._old, self._old_estimates = self.smoother, self._estimates
            self._switch_t = self._history[-1][0]
        else:  # no cross-fade: the old smoother's held-back estimates end its share
            self._keep_all(self._estimates, self._flush(self.smoother))
            outputs = self._release()
        self.smoother, self._estimates = smoother, warm
        self._set_turn_limit(smoother)
        return outputs + self._release()

    @property
    def stats(self):
        """Return the smoother counters summed over every smoother used, plus resets."""
        now = self.smoother.stats
        past = self._past_stats
        return SmootherStats(outliers=past.outliers + now.outliers,
                             resets=past.resets + now.resets + self.pipeline_resets,
                             coasted=past.coasted + now.coasted)

    @property
    def dropped_by_reason(self):
        """Return {reason: count} of every dropped measurement, every reason listed."""
        counts = Counter(self.validator.dropped)
        counts.update(self.dropped)
        return {reason: counts.get(reason, 0) for reason in DROP_REASONS}

    def diagnostics(self):
        """Return the pipeline's figures as {key: value} for /diagnostics."""
        smoother = self.smoother
        stats = self.stats
        costs = np.fromiter(self.costs_us, dtype=float)
        return {
            'method': smoother.name,
            'delay_frames': smoother.delay_frames,
            'received': self.received,
            'published': self.published,
            'pending': len(self._pending),
            **drop_figures('dropped_invalid', self.dropped_by_reason),
            'renormalized': self.validator.renormalized,
            'outliers_rejected': stats.outliers,
            'resets': stats.resets,
            'reach_resets': self.reach_resets,
            'coasted': stats.coasted,
            'clock_steps': self.clock_steps,
            'frame_changes': self.frame_changes,
            'last_error': self.last_error or 'none',
            'tracker_noise': self.noise.reading(),
            'processing_us_median': f'{_percentile(costs, 50):.1f}',
            'processing_us_p99': f'{_percentile(costs, 99):.1f}',
            'model_status': smoother.model_status,
        }

    def _admit(self, t, position, quaternion, frame_id, now):
        """
        Decide on one measurement: (drop reason or None, unit quaternion, event or None).

        The event is 'gap', 'clock_step' or 'frame_change': the smoother must be reset
        (the two latter restart the stream) before the measurement is smoothed. Only the
        admission state (frame lock, stamps, clock) changes here, so the offline fast path
        shares it.
        """
        event = None
        if not self.frame_id:
            self.frame_id, self._foreign_since = frame_id, None
        if frame_id != self.frame_id:
            if self._foreign_since is None:
                self._foreign_since = t
            if not (self._auto_frame and np.isfinite(t)
                    and t - self._foreign_since > self.dropout_timeout_s):
                self.dropped[WRONG_FRAME] += 1
                return WRONG_FRAME, None, None
            self.frame_id, self._foreign_since = frame_id, None
            self.frame_changes += 1
            event = 'frame_change'
            self._restart_stamps()
        else:
            self._foreign_since = None
        future = (now is not None and np.isfinite(t)
                  and t - now - self._clock_offset > self.max_future_s)
        reason = self.validator.reason(t, position, quaternion, future)
        if reason in CLOCK_REASONS:
            if not self._clock_stepped(t):
                return self.validator.count(reason), None, None
            self.clock_steps += 1
            event = 'clock_step'
            self._restart_stamps()
            if future:
                self._clock_offset = t - now
            reason = self.validator.reason(t, position, quaternion)
        elif reason is None:
            self._suspects.clear()
        if reason is not None:
            return self.validator.count(reason), None, None
        q = self.validator.accept(t)
        if event is None and self._last_t is not None and t - self._last_t > \
                self.dropout_timeout_s:
            event = 'gap'
        self._last_t = float(t)
        return None, q, event

    def _clock_stepped(self, t):
        """Note a stamp dropped for its time; tell whether the drops make a clock step."""
        if self._suspects and not t > self._suspects[-1]:
            self._suspects.clear()
        self._suspects.append(t)
        return len(self._suspects) >= CLOCK_STEP_FRAMES

    def _restart_stamps(self):
        self.validator.reset()
        self._suspects.clear()
        self._last_t = None

    def _within_reach(self, estimate, t, position, q):
        """Return estimate, or its measurement (restarting the smoother) if out of reach."""
        measured = self._measurement_at(estimate.t)
        if measured is None or not self._beyond_reach(estimate, measured):
            self._out_of_reach = 0
            return estimate
        self._out_of_reach += 1
        if self._out_of_reach < REACH_FRAMES:
            return estimate
        self._out_of_reach = 0
        self.reach_resets += 1
        self.pipeline_resets += 1
        # The held-back measurements after it pass through; the smoother restarts at the
        # newest one.
        for held in self._pending:
            if held.t > estimate.t + STAMP_MATCH_S:
                self._keep(self._estimates, Estimate(held.t, held.position, held.quaternion))
        replaced = Estimate(estimate.t, measured.position, measured.quaternion)
        self._keep(self._estimates, replaced)
        self._estimates = deque(sorted(self._estimates, key=lambda e: e.t))
        self.smoother.reset()
        _guarded(self.smoother.update, t, position, q)
        return None

    def _beyond_reach(self, estimate, measured):
        """Tell whether an estimate lies out of reach of its measurement (plain floats)."""
        ex, ey, ez = estimate.position.tolist()
        mx, my, mz = measured.position.tolist()
        if (ex - mx) ** 2 + (ey - my) ** 2 + (ez - mz) ** 2 > self.reset_jump_m ** 2:
            return True
        ax, ay, az, aw = estimate.quaternion.tolist()
        bx, by, bz, bw = measured.quaternion.tolist()
        return abs(ax * bx + ay * by + az * bz + aw * bw) < self._reach_cos

    def _beyond_reach_rows(self, p, q, measured_p, measured_q):
        """Return _beyond_reach for arrays of poses (N, ...), as a boolean array."""
        far = np.linalg.norm(p - measured_p, axis=1) > self.reset_jump_m
        return far | (np.abs(np.sum(q * measured_q, axis=1)) < self._reach_cos)

    def _measurement_at(self, t):
        for held in reversed(self._pending):
            if abs(held.t - t) <= STAMP_MATCH_S:
                return held
        return None

    def _flush(self, smoother):
        estimates, error = _guarded(smoother.flush)
        if error is not None:
            self.last_error = error
            smoother.reset()
            return []
        return estimates

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

    def _clear(self):
        """Reset the smoother and forget the stream; count what could not be released."""
        self.dropped['unreleased'] += len(self._pending)
        self.smoother.reset()
        self._history.clear()
        self._pending.clear()
        self._estimates.clear()
        self._out_of_reach = 0

    def _reset_smoother(self, restart=False):
        """Flush and reset the smoother; restart: the next stamps may go back in time."""
        self._end_blend()
        self._keep_all(self._estimates, self._flush(self.smoother))
        outputs = self._release()
        self._clear()
        self.pipeline_resets += 1
        if restart:
            self._last_out_t = -np.inf
        return outputs

    def _weight(self, t):
        """Return the share of the new smoother in the output at measurement time t."""
        if self._old is None:
            return 1.0
        return float(np.clip((t - self._switch_t) / self.blend_s, 0.0, 1.0))

    def _release(self):
        """Return Outputs for the oldest pending measurements whose estimates are all in."""
        outputs = []
        while self._pending:
            held = self._pending[0]
            weight = self._weight(held.t)
            new = _find(self._estimates, held.t) if weight > 0.0 else None
            old = _find(self._old_estimates, held.t) if weight < 1.0 else None
            if new is _LATER or old is _LATER:
                break
            self._pending.popleft()
            if new is not None:
                self._estimates.popleft()
            if old is not None:
                self._old_estimates.popleft()
            if new is None and old is None:
                # A smoother broke the one-estimate-per-measurement contract.
                self.dropped['unreleased'] += 1
                continue
            if new is None or old is None:
                estimate = new or old
                p, q, cov = estimate.position, estimate.quaternion, estimate.covariance
            else:
                p = old.position + weight * (new.position - old.position)
                q = quat.slerp(old.quaternion, new.quaternion, weight)
                cov = new.covariance
            self._last_out_t = held.t
            self.published += 1
            outputs.append(Output(held.t, held.tag, held.frame_id, p, q, cov))
            if weight >= 1.0 and self._old is not None:
                self._end_blend()
        return outputs


# _find() result: the estimate for that time has not been computed yet.
_LATER = object()


def _find(queue, t):
    """
    Find the estimate at time t in an in-order queue, dropping older ones.

    Returns _LATER if it is still to come, None if the queue has passed t (there is none).
    """
    while queue and queue[0].t < t - STAMP_MATCH_S:
        queue.popleft()
    if not queue:
        return _LATER
    return queue[0] if queue[0].t <= t + STAMP_MATCH_S else None


def _guarded(call, *args):
    """
    Return (call's result, None), or (None, the error as text) if it raised.

    A smoother that raises must not stop the stream: whatever the exception, the pipeline
    resets it and goes on (the documented recovery), so every type is caught here.
    """
    try:
        return call(*args), None
    except Exception as exc:  # noqa: B902 - the recovery applies to any failure
        return None, f'{type(exc).__name__}: {exc}'


def _percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else float('nan')


def stabilize_take(stabilizer, t, p, q, switches=(), timed=False, progress=None):
    """
    Run a whole take through a fresh Stabilizer: one output row per input row.

    switches: (row index, smoother) pairs; the smoother replaces the current one before
    that row, as a run-time parameter change does in the node.
    timed: record each update's cost in microseconds (offline methods: the whole take
    divided by its pose count).
    progress: optional wrapper for the row iterator (e.g. a tqdm progress bar).
    Invalid rows hold the estimate of the nearest earlier valid row (later, if none).
    Raises ValueError when no input row is valid.
    """
    t = np.asarray(t, dtype=float)
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    smoother = stabilizer.smoother
    if timed:
        stabilizer.costs_us = deque()  # every cost, not the live window
    start = time.perf_counter()
    result = None
    if not switches and (smoother.batched or not smoother.causal) and not (
            timed and smoother.causal):
        trial = copy.deepcopy(stabilizer)
        result = _batched_take(trial, t, p, q, progress)
        if result is not None:
            stabilizer.__dict__.update(trial.__dict__)
    if result is None:
        result = _streamed_take(stabilizer, t, p, q, dict(switches), progress)
    out_p, out_q, valid = result
    costs = None
    if timed:
        costs = (np.array(stabilizer.costs_us) if smoother.causal else
                 np.full(int(valid.sum()), (time.perf_counter() - start) * 1e6 / valid.sum()))
    source = np.maximum.accumulate(np.where(valid, np.arange(len(t)), -1))
    source[source < 0] = np.argmax(valid)
    dropped = {reason: n for reason, n in stabilizer.dropped_by_reason.items() if n}
    return TakeResult(out_p[source], out_q[source], dropped,
                      np.flatnonzero(~valid), stabilizer.validator.renormalized,
                      stabilizer.stats.as_dict(), costs,
                      model_status=stabilizer.smoother.model_status,
                      tracker_noise=stabilizer.noise.reading(),
                      fallback=stabilizer.smoother.fallback,
                      drop_examples=dict(stabilizer.drop_examples))


def _streamed_take(stabilizer, t, p, q, switches, progress):
    """Run the take pose by pose through process(), exactly as the node runs it."""
    out_p, out_q = np.zeros((len(t), 3)), np.zeros((len(t), 4))
    valid = np.zeros(len(t), dtype=bool)

    def store(outputs):
        for out in outputs:
            out_p[out.tag], out_q[out.tag] = out.position, out.quaternion
            valid[out.tag] = True

    rows = range(len(t))
    for i in (progress(rows) if progress else rows):
        if i in switches:
            store(stabilizer.switch(switches[i]))
        store(stabilizer.process(t[i], p[i], q[i], tag=i)[1])
    store(stabilizer.finish())
    _check_valid(stabilizer, valid)
    return out_p, out_q, valid


def _share_noise_meter(smoother, meter):
    """
    Let a causal smoother read the pipeline's noise meter.

    One meter per stream (its reading survives smoother resets and switches) and none
    fed twice. Offline smoothers run a take at once and keep their own.
    """
    if smoother.causal:
        smoother.attach_noise_meter(meter)


def _batched_take(stabilizer, t, p, q, progress):
    """
    Run the fast path of _streamed_take for batched and offline smoothers.

    The admission is the streamed path's, row by row; then one smooth() per stretch
    between resets. Returns None when the streamed path must run instead: an estimate
    out of reach (the streamed path restarts mid-stretch). test_stabilizer proves the
    two paths equal.
    """
    admitted = _admit_clean_take(stabilizer, t, p, q)
    if admitted is None:
        admitted = _admit_rows(stabilizer, t, p, q)
    valid, q_unit, starts = admitted
    stabilizer.received += len(t)
    _check_valid(stabilizer, valid)
    rows = np.flatnonzero(valid)
    out_p, out_q = np.zeros((len(t), 3)), np.zeros((len(t), 4))
    smoother = stabilizer.smoother
    for piece in np.split(rows, starts):
        if smoother.noise_meter is stabilizer.noise:  # smooth() feeds it, pose by pose
            stabilizer.noise.restart()
        else:
            stabilizer.noise.update_take(t[piece], p[piece], q_unit[piece])
        smoother.reset()
        _, sp, sq = smoother.smooth(t[piece], p[piece], q_unit[piece], progress=progress)
        if len(sp) != len(piece):
            raise RuntimeError(f'{smoother.name} returned {len(sp)} estimates for '
                               f'{len(piece)} measurements')
        if _longest_run(stabilizer._beyond_reach_rows(sp, sq, p[piece], q_unit[piece])) >= \
                REACH_FRAMES:
            return None
        out_p[piece], out_q[piece] = sp, sq
    smoother.reset()
    stabilizer.pipeline_resets += len(starts)
    stabilizer.published += len(rows)
    return out_p, out_q, valid


def _admit_clean_take(stabilizer, t, p, q):
    """
    Admit a take at once when no row can be dropped and no clock event can occur.

    Returns (valid, unit q, starts of the stretches between gaps) exactly as _admit_rows
    would, or None when a row needs the row-by-row rules (a bad value, a stamp that does
    not increase).
    """
    validator = stabilizer.validator
    if validator.last_t is not None or stabilizer._last_t is not None or not len(t):
        return None
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        return None
    if np.max(np.abs(p)) > validator.max_position_m or np.any(np.diff(t) <= 0.0):
        return None
    # The scalar arithmetic of validation.unit_quaternion, row-wise (the same results).
    scale = np.max(np.abs(q), axis=1)
    if np.any(scale == 0.0):
        return None
    scaled = q / scale[:, None]
    length = np.sqrt(np.sum(scaled * scaled, axis=1))
    norm = scale * length
    if np.any(norm < MIN_QUATERNION_NORM):
        return None
    validator.renormalized += int(np.count_nonzero(np.abs(norm - 1.0) > 1e-6))
    validator.last_t = stabilizer._last_t = float(t[-1])
    starts = np.flatnonzero(np.diff(t) > stabilizer.dropout_timeout_s) + 1
    return np.ones(len(t), dtype=bool), scaled / length[:, None], list(starts)


def _admit_rows(stabilizer, t, p, q):
    """Admit a take row by row by the streamed path's rules: (valid, unit q, starts)."""
    valid = np.zeros(len(t), dtype=bool)
    q_unit = np.zeros((len(t), 4))
    starts = []
    accepted = 0
    for block in range(0, len(t), ADMIT_BLOCK):
        # Rows as lists of floats, a block at a time: cheaper per row than NumPy rows.
        rows = zip(t[block:block + ADMIT_BLOCK].tolist(), p[block:block + ADMIT_BLOCK].tolist(),
                   q[block:block + ADMIT_BLOCK].tolist())
        for i, (ti, pi, qi) in enumerate(rows, block):
            reason, unit, event = stabilizer._admit(ti, pi, qi, '', None)
            if reason is not None:
                stabilizer.note_drop(reason, i)
            else:
                if event is not None:
                    starts.append(accepted)
                valid[i], q_unit[i] = True, unit
                accepted += 1
    return valid, q_unit, starts


def _longest_run(flags):
    """Return the length of the longest run of True in a boolean array."""
    longest = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return longest


def _check_valid(stabilizer, valid):
    if not valid.any():
        raise ValueError('no valid pose in the input: ' + ', '.join(
            f'{n} {r}' for r, n in stabilizer.dropped_by_reason.items() if n))
