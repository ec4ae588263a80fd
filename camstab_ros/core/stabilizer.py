"""
The one stabilising pipeline: validation -> smoother -> gap resets -> run-time switch.

`Stabilizer` is what the `stabilizer` node, the FreeD bridge, `camstab smooth`,
`camstab evaluate`, the benchmarks, bag smoothing and training's evaluation all run: an
evaluation figure is a figure of the node. It knows nothing of ROS; every measurement
carries an opaque `tag` (a ROS stamp, FreeD lens values, a row index) that comes back
with its output.

Rules, in the order a measurement meets them:
1. A measurement in another frame than the stream's (`frame_id`; empty: the frame of the
   first measurement) is dropped and counted (`wrong_frame_id`); so is one that fails
   `MeasurementValidator` (non-finite, zero quaternion, stamp not increasing). A
   non-unit quaternion is renormalised and counted.
2. A stamp gap longer than `dropout_timeout_s`, or as long a pause in arrivals (`idle()`),
   flushes the smoother's held-back estimates and resets it.
3. Every valid measurement yields exactly one Output, in input order, with its own tag
   (delayed methods emit it later).
4. `switch()` replaces the smoother without a jump in the output: the new smoother is
   warmed on the last WARMUP_S seconds of measurements, then both run side by side and
   the output cross-fades from the old estimate to the new one over `blend_s` seconds of
   measurement time (position lerp, orientation slerp): two methods differ by their own
   lag, centimetres apart during a fast move.

Parameters follow one naming rule (`parameter_specs()`): `method`; the parameters in
SHARED under their own name, handed to every method that has them; every other smoother
parameter as `<method>.<param>`; `switch_blend_s`.
"""
from collections import Counter, deque
from dataclasses import dataclass, field
import time

from camstab_ros.core import quaternion as quat
from camstab_ros.core.methods import causal_methods, list_methods, make_smoother, smoother_class
from camstab_ros.core.params import ParameterError, ParamSpec
from camstab_ros.core.smoother import SmootherStats
from camstab_ros.core.validation import drop_figures, MeasurementValidator, REASONS
import numpy as np


DEFAULT_METHOD = 'kalman'
WRONG_FRAME = 'wrong_frame_id'
DROP_REASONS = tuple(REASONS) + (WRONG_FRAME,)
# Smoother parameters declared once under their own name and handed to every method that
# has them (never also as `<method>.<name>`); dropout_timeout_s also drives the resets.
SHARED = ('delay_frames', 'dropout_timeout_s', 'reset_jump_m', 'model_path')
DEFAULT_BLEND_S = 1.0
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
    return specs


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


class Stabilizer:
    """The pipeline of the module docstring around one smoother (switchable)."""

    def __init__(self, smoother, dropout_timeout_s=None, blend_s=DEFAULT_BLEND_S,
                 frame_id='', cost_window=COST_WINDOW):
        """dropout_timeout_s None: the smoother's own value, else the shared default."""
        self.smoother = smoother
        if dropout_timeout_s is None:
            dropout_timeout_s = smoother.params.get(
                'dropout_timeout_s', shared_spec('dropout_timeout_s').default)
        self.dropout_timeout_s = dropout_timeout_s
        self.blend_s = blend_s
        self.frame_id = frame_id
        self.validator = MeasurementValidator()
        self.dropped = Counter()      # wrong_frame_id (the validator counts the rest)
        self.pipeline_resets = 0      # gap resets of the current smoother
        self.received = 0
        self.published = 0
        self.costs_us = deque(maxlen=cost_window)
        self._past_stats = SmootherStats()
        self._history = deque(maxlen=WARMUP_MAX_FRAMES)
        self._pending = deque()       # (t, tag, frame_id) of measurements without output
        self._estimates = deque()     # the smoother's estimates not yet released
        self._old = None              # the previous smoother while cross-fading
        self._old_estimates = deque()
        self._switch_t = None
        self._last_t = None
        self._last_out_t = -np.inf

    @property
    def switching(self):
        """Return True while the output cross-fades from the previous smoother."""
        return self._old is not None

    def process(self, t, position, quaternion, tag=None, frame_id=''):
        """Take one measurement: (drop reason or None, the Outputs it releases)."""
        self.received += 1
        if not self.frame_id:
            self.frame_id = frame_id
        if frame_id != self.frame_id:
            self.dropped[WRONG_FRAME] += 1
            return WRONG_FRAME, []
        reason, q = self.validator.check(t, position, quaternion)
        if reason is not None:
            return reason, []
        position = np.asarray(position, dtype=float)
        outputs = []
        if self._last_t is not None and t - self._last_t > self.dropout_timeout_s:
            outputs += self._reset_smoother()
        self._last_t = t
        start = time.perf_counter_ns()
        estimate = self.smoother.update(t, position, q)
        old_estimate = self._old.update(t, position, q) if self._old is not None else None
        self.costs_us.append((time.perf_counter_ns() - start) * 1e-3)  # both while fading
        self._pending.append((t, tag, frame_id))
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

    def finish(self):
        """End of the stream: the Outputs still held back (the smoother starts afresh)."""
        self._keep_all(self._estimates, self.smoother.flush())
        if self._old is not None:
            self._keep_all(self._old_estimates, self._old.flush())
        outputs = self._release()
        self._end_blend()
        self._clear()
        return outputs

    def switch(self, smoother):
        """Replace the smoother at run time (warm-up, then cross-fade); returns Outputs."""
        if self._old is not None:  # a switch during a cross-fade starts from the newest
            self._end_blend()
        self._past_stats = self.stats
        self.pipeline_resets = 0
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
        """Smoother counters summed over every smoother used, plus the gap resets."""
        now = self.smoother.stats
        past = self._past_stats
        return SmootherStats(outliers=past.outliers + now.outliers,
                             resets=past.resets + now.resets + self.pipeline_resets,
                             coasted=past.coasted + now.coasted)

    @property
    def dropped_by_reason(self):
        """{reason: count} of every dropped measurement, every reason listed."""
        counts = Counter(self.validator.dropped)
        counts.update(self.dropped)
        return {reason: counts.get(reason, 0) for reason in DROP_REASONS}

    def diagnostics(self):
        """Return the pipeline's figures as {key: value} for /diagnostics."""
        smoother = self.smoother
        stats = self.stats
        dropped = self.dropped_by_reason
        costs = np.fromiter(self.costs_us, dtype=float)
        return {
            'method': smoother.name,
            'delay_frames': smoother.delay_frames,
            'received': self.received,
            'published': self.published,
            **drop_figures('dropped_invalid', dropped),
            'renormalized': self.validator.renormalized,
            'outliers_rejected': stats.outliers,
            'resets': stats.resets,
            'coasted': stats.coasted,
            'processing_us_median': f'{_percentile(costs, 50):.1f}',
            'processing_us_p99': f'{_percentile(costs, 99):.1f}',
            'model_status': smoother.model_status,
        }

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
        self.smoother.reset()
        self._history.clear()
        self._pending.clear()
        self._estimates.clear()
        self._last_t = None

    def _reset_smoother(self, clear_stamps=False):
        self._end_blend()
        self._keep_all(self._estimates, self.smoother.flush())
        outputs = self._release()
        self._clear()
        self.pipeline_resets += 1
        if clear_stamps:
            self.validator.reset()
        return outputs

    def _weight(self, t):
        """Share of the new smoother in the output at measurement time t."""
        if self._old is None:
            return 1.0
        return float(np.clip((t - self._switch_t) / self.blend_s, 0.0, 1.0))

    def _release(self):
        """Release the Outputs for the oldest pending measurements whose estimates are all in."""
        outputs = []
        while self._pending:
            t, tag, frame_id = self._pending[0]
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
            outputs.append(Output(t, tag, frame_id, p, q, cov))
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


def _percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else float('nan')


def stabilize_take(stabilizer, t, p, q, switches=(), timed=False, progress=None):
    """
    Run a whole take through a fresh Stabilizer: one output row per input row.

    switches: (row index, smoother) pairs; the smoother replaces the current one before
    that row, as a run-time parameter change does in the node.
    timed: record each update's cost in microseconds (offline methods: one smooth() of
    the take divided by its pose count).
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
    if not switches and (smoother.batched or not smoother.causal) and not (
            timed and smoother.causal):
        out_p, out_q, valid = _batched_take(stabilizer, t, p, q, progress)
    else:
        out_p, out_q, valid = _streamed_take(stabilizer, t, p, q, dict(switches), progress)
    costs = None
    if timed:
        costs = (np.array(stabilizer.costs_us) if smoother.causal else
                 np.full(int(valid.sum()), (time.perf_counter() - start) * 1e6 / valid.sum()))
    source = np.maximum.accumulate(np.where(valid, np.arange(len(t)), -1))
    source[source < 0] = np.argmax(valid)
    return TakeResult(out_p[source], out_q[source], dict(stabilizer.validator.dropped),
                      np.flatnonzero(~valid), stabilizer.validator.renormalized,
                      stabilizer.stats.as_dict(), costs)


def _streamed_take(stabilizer, t, p, q, switches, progress):
    """Run the take pose by pose through process(), exactly as the node runs it."""
    out_p, out_q = np.zeros((len(t), 3)), np.zeros((len(t), 4))
    valid = np.zeros(len(t), dtype=bool)

    def store(outputs):
        for out in outputs:
            out_p[out.tag], out_q[out.tag] = out.position, out.quaternion

    rows = range(len(t))
    for i in (progress(rows) if progress else rows):
        if i in switches:
            store(stabilizer.switch(switches[i]))
        reason, outputs = stabilizer.process(t[i], p[i], q[i], tag=i)
        valid[i] = reason is None
        store(outputs)
    store(stabilizer.finish())
    _check_valid(stabilizer, valid)
    return out_p, out_q, valid


def _batched_take(stabilizer, t, p, q, progress):
    """
    Run the take on the fast path of _streamed_take, for batched and offline smoothers.

    Validation row by row, then one smooth() per stretch between gap resets;
    test_stabilizer proves the two paths equal.
    """
    validator = stabilizer.validator
    valid = np.zeros(len(t), dtype=bool)
    q_unit = np.zeros((len(t), 4))
    for i in range(len(t)):
        reason, unit = validator.check(t[i], p[i], q[i])
        if reason is None:
            valid[i], q_unit[i] = True, unit
    stabilizer.received += len(t)
    _check_valid(stabilizer, valid)
    rows = np.flatnonzero(valid)
    breaks = np.flatnonzero(np.diff(t[rows]) > stabilizer.dropout_timeout_s) + 1
    out_p, out_q = np.zeros((len(t), 3)), np.zeros((len(t), 4))
    smoother = stabilizer.smoother
    for piece in np.split(rows, breaks):
        smoother.reset()
        _, sp, sq = smoother.smooth(t[piece], p[piece], q_unit[piece], progress=progress)
        if len(sp) != len(piece):
            raise RuntimeError(f'{smoother.name} returned {len(sp)} estimates for '
                               f'{len(piece)} measurements')
        out_p[piece], out_q[piece] = sp, sq
    smoother.reset()
    stabilizer.pipeline_resets += len(breaks)
    stabilizer.published += len(rows)
    return out_p, out_q, valid


def _check_valid(stabilizer, valid):
    if not valid.any():
        raise ValueError('no valid pose in the input: ' + ', '.join(
            f'{n} {r}' for r, n in stabilizer.dropped_by_reason.items() if n))
