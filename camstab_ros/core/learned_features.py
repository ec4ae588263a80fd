"""
What the learned methods see and how their outputs act: shared by run time and training.

Both networks run beside the `kalman` filter of their model card (it reads the tracker's
noise meter, gates spikes and restarts after gaps) and see only quantities in units
of the tracker's measured noise sigma (the filter's R), in the camera's body frame: one
model serves 0.02-5 mm trackers at 24-240 Hz, wherever the camera is.

- `hybrid` runs a filter of its own beside the Kalman filter. Its state is the
  estimate's offset d from the measurement, and it predicts with the Kalman filter's
  velocity (own prediction = previous estimate + velocity x dt). Per group (position,
  orientation) the network weighs three candidates, softmax over (0, a_own, a_kalman):
  the measurement, the own prediction and the Kalman filter's prediction. The estimate
  is their weighted mean, so it always lies in the triangle they span, never further than
  HOLD_CAP_SIGMA measured sigmas from the measurement (`hybrid_step`: a move the filters
  did not predict, like a whip pan's first frames, cannot be held back); it is the state
  the next frame predicts from. On a hold the network may keep the own prediction, which
  stays still through the tracker's noise; in a move the Kalman prediction or the
  measurement take over. Where the Kalman filter
  restarts a group the own filter restarts too; where it passes a suspect measurement
  through, so does the own filter, whose state coasts on its prediction.
- `lstm` (the prototype's first model) sees the raw measurement's frame-to-frame steps.
  It may only move the measurement towards the Kalman filter's estimate, a share of the
  way per body axis (sigmoid of its output), and by at most CAP_SIGMA measured sigmas
  (`lstm_offset`).

FEATURE_DEFINITIONS and OUTPUT_DEFINITIONS go into every model card. `kalman_pass` and
the `*_features` functions build whole takes' arrays (training, the offline fast path);
`hybrid_pose_features` / `lstm_pose_features` are the per-pose forms of the run time.
"""
from array import array
import math
import multiprocessing
import os
import sys
import threading

from camstab_ros.core import quaternion as quat
from camstab_ros.core.kalman import (feed_own_meter, POS, PoseKalmanFilter, ROT,
                                     UNMEASURED_VARIANCE)
from camstab_ros.core.noise_meter import NoiseMeter
from camstab_ros.core.smoother import SmootherStats
import numpy as np


FEATURE_CLIP = 8.0
# The lstm's move towards the Kalman estimate: at most this many measured sigmas per axis.
CAP_SIGMA = 4.0
# The hybrid's move from the measurement: at most this many measured sigmas (3-axis norm).
HOLD_CAP_SIGMA = 6.0
# The interval feature is log2(interval x this rate): 0 at 60 Hz, -1.3 at 25, +2 at 240.
REFERENCE_RATE_HZ = 60.0
HYBRID_FEATURES = (
    ('innovation_x', 'sigma'), ('innovation_y', 'sigma'), ('innovation_z', 'sigma'),
    ('innovation_rx', 'sigma'), ('innovation_ry', 'sigma'), ('innovation_rz', 'sigma'),
    ('step_x', 'sigma'), ('step_y', 'sigma'), ('step_z', 'sigma'),
    ('step_rx', 'sigma'), ('step_ry', 'sigma'), ('step_rz', 'sigma'),
    ('gain_position', '1'), ('gain_orientation', '1'), ('log2_interval', '1'),
    ('restarted', '1'))
LSTM_FEATURES = (
    ('step_x', 'sigma'), ('step_y', 'sigma'), ('step_z', 'sigma'),
    ('step_rx', 'sigma'), ('step_ry', 'sigma'), ('step_rz', 'sigma'),
    ('log2_interval', '1'), ('restarted', '1'))
FEATURES = {'hybrid': HYBRID_FEATURES, 'lstm': LSTM_FEATURES}
OUTPUTS = {
    'hybrid': (('own_position', '1'), ('kalman_position', '1'), ('own_orientation', '1'),
               ('kalman_orientation', '1')),
    'lstm': (('towards_kalman_x', '1'), ('towards_kalman_y', '1'), ('towards_kalman_z', '1'),
             ('towards_kalman_rx', '1'), ('towards_kalman_ry', '1'),
             ('towards_kalman_rz', '1')),
}
ACTIVATIONS = {'hybrid': 'softmax over (0, own, kalman) per group', 'lstm': 'sigmoid'}
FEATURE_DEFINITIONS = {
    'hybrid': ('The Kalman filter (card "kalman") is stepped on the measurement; sigma_p, '
               'sigma_r = sqrt of its measurement noise R per group. innovation = '
               'measurement - prediction (position rotated into the body frame of the '
               'filtered orientation q_f) / sigma, 0 in a group that restarted or passed '
               'the measurement through; step = filter velocity (body) x dt / sigma_p and '
               'angular rate x dt / sigma_r; gain = the Kalman value gain K per group; '
               'log2_interval = log2(dt x 60 Hz), 0 at a restart; restarted = 1 when '
               'either group restarted or passed through. Standardised (x - mean) / std, '
               'clipped to +-clip.'),
    'lstm': ("sigma_p, sigma_r as for hybrid (the card's Kalman filter measures them). "
             'step = R(q_(k-1))^T (p_k - p_(k-1)) / sigma_p and log(q_(k-1)^-1 q_k) / '
             'sigma_r; log2_interval as for hybrid; all 0 and restarted = 1 when the '
             'filter restarted (first measurement, gap, noise not yet measured). '
             'Standardised (x - mean) / std, clipped to +-clip.'),
}
OUTPUT_DEFINITIONS = {
    'hybrid': ('own filter: state d = estimate - measurement (position world m, orientation '
               'body rad); e_k = d_(k-1) + (v dt - (p_k - p_(k-1)), w dt - log(q_(k-1)^-1 '
               'q_k)) with the Kalman velocity v and body rate w of frame k-1 (first order in '
               'the small angles); f_k = -(Kalman innovation); per group (w_m, w_own, w_k) = '
               'softmax(0, a_own, a_kalman); offset = w_own e + w_k f, scaled down to '
               f'HOLD_CAP_SIGMA = {HOLD_CAP_SIGMA:g} measured sigmas if beyond; d_k = offset; '
               'estimate = (p_k + d_p, q_k exp(d_r)), in the triangle of the measurement, the '
               'own and the Kalman prediction. A group the Kalman filter restarted: d = 0; '
               'passed through: estimate = measurement, d_k = e_k (the state coasts). A '
               'non-finite output: the Kalman estimate, d taken from it.'),
    'lstm': ('k = the Kalman estimate (p_f, q_f) minus the measurement in its body frame: '
             '(R(q)^T (p_f - p), log(q^-1 q_f)); per axis offset = sigmoid(network output) '
             f'x k, clipped to +-{CAP_SIGMA:g} measured sigmas (sigma_p, sigma_r); estimate = '
             '(p + R(q) offset_p, q exp(offset_r)): between the measurement and the Kalman '
             'estimate on every body axis. Offset 0 where the features say restarted and for a '
             'non-finite output.'),
}


def rotate(q, v, inverse=False):
    """
    Rotate v by q: return R(q) v, or R(q)^T v when inverse.

    q = (x, y, z, w) and v = (x, y, z): floats or arrays of the same shape per component.
    """
    qx, qy, qz, qw = q
    if inverse:
        qx, qy, qz = -qx, -qy, -qz
    vx, vy, vz = v
    # v + 2 w (u x v) + 2 u x (u x v), with u = (qx, qy, qz)
    cx = qy * vz - qz * vy
    cy = qz * vx - qx * vz
    cz = qx * vy - qy * vx
    return (vx + 2.0 * (qw * cx + qy * cz - qz * cy),
            vy + 2.0 * (qw * cy + qz * cx - qx * cz),
            vz + 2.0 * (qw * cz + qx * cy - qy * cx))


def columns(a):
    """Return the columns of an (N, k) array as a tuple of k arrays."""
    return tuple(np.asarray(a, dtype=float).T)


def log2_interval(dt):
    """Return the interval feature of intervals dt (s; 0 at a restart gives 0)."""
    dt = np.asarray(dt, dtype=float)
    return np.where(dt > 0.0, np.log2(np.maximum(dt, 1e-9) * REFERENCE_RATE_HZ), 0.0)


class KalmanRecord:
    """Per-pose arrays of a Kalman pass over a take (see `kalman_pass`)."""

    def __init__(self, n):
        self.position = np.empty((n, 3))      # the filter's output (kalman's estimate)
        self.output_q = np.empty((n, 4))
        self.velocity = np.empty((n, 3))      # world frame, m/s
        self.rate = np.empty((n, 3))          # body frame, rad/s
        self.q = np.empty((n, 4))             # filtered orientation
        self.innovation = np.empty((n, 2, 3))
        self.gain = np.empty((n, 2))
        self.sigma = np.empty((n, 2))         # m, rad
        self.dt = np.zeros(n)
        self.restarted = np.zeros((n, 2), dtype=bool)   # per group
        self.passed = np.zeros((n, 2), dtype=bool)
        self.pieces = 1                       # pieces run side by side (kalman_pass)


# A take of at least 2 x PIECE_MIN_POSES poses (18 min at 240 Hz) runs its Kalman pass in
# pieces side by side, one per core: the pass is a recursion pose by pose and most of the
# offline cost. The noise meter's readings come first, in one pass (a running median never
# forgets where it started); every piece but the first then starts PASS_WARMUP_S early
# with a filter of its own. A piece is kept only if, over the last VERIFY_POSES poses of
# its warm-up, it gives the estimates of the pass before it within VERIFY_SIGMA measured
# sigmas (below 60 Hz a fresh filter can settle elsewhere: the noise it trusts depends on
# its own speed); otherwise the rest of the take runs on in one piece.
PIECE_MIN_POSES = 2 ** 17
PASS_WARMUP_S = 30.0
VERIFY_POSES = 64
VERIFY_SIGMA = 1e-6
# The take a pass in pieces works on, for its forked workers (inherited, not pickled).
_PASS = {}


def kalman_pass(params, t, p, q, stats=None, meter=None, progress=None, pieces=None):
    """
    Run the forward Kalman filter over a take; return its KalmanRecord.

    meter: a NoiseMeter the pass feeds pose by pose and the filter reads (the pipeline's);
    None: a meter of the filter's own, restarted after a gap. pieces: at most this many
    pieces side by side (default: one per core for a long take, see PIECE_MIN_POSES).
    Raises ValueError unless the stamps increase.
    """
    stats = stats if stats is not None else SmootherStats()
    t = np.asarray(t, dtype=float)
    n = len(t)
    if not np.all(np.diff(t) > 0.0):
        raise ValueError('timestamps must increase')
    readings = None
    if meter is not None:
        readings = _MeterReadings(t, p, q, meter, math.inf)
    elif 0.0 in (params['measurement_noise_m'], params['measurement_noise_deg']):
        readings = _MeterReadings(t, p, q, NoiseMeter(), params['dropout_timeout_s'])
    if pieces is None:
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                 else os.cpu_count() or 1)
        pieces = min(cores, n // PIECE_MIN_POSES)
    pieces = min(pieces, n // (2 * VERIFY_POSES))
    record = KalmanRecord(n)
    kf = PoseKalmanFilter(params, stats, readings)
    if pieces <= 1 or not may_fork():
        _run_pass(kf, t, p, q, readings, record, _ticking(range(n), progress, 1, n))
        return record
    bounds = np.linspace(0, n, pieces + 1).astype(int)
    _PASS.update(params=params, t=t, p=p, q=q, readings=readings)
    try:
        # A Pool's exit terminates its workers: an error or a SIGTERM does not wait for them.
        with multiprocessing.get_context('fork').Pool(pieces - 1) as pool:
            jobs = []
            for start, stop in zip(bounds[1:-1], bounds[2:]):
                warm = int(np.searchsorted(t, t[start - 1] - PASS_WARMUP_S))
                jobs.append(pool.apply_async(
                    _piece_pass, (min(warm, start - VERIFY_POSES), start, stop)))
            _run_pass(kf, t, p, q, readings, record,
                      _ticking(range(bounds[1]), progress, pieces, n))
            results = [job.get() for job in jobs]
    finally:
        _PASS.clear()
    counted = dict.fromkeys(stats.as_dict(), 0)
    for warm, start, arrays, counts in results:
        if not _continues(record, warm, start, arrays):
            _run_pass(kf, t, p, q, readings, record, range(bounds[1], n))
            return record
        for name, values in arrays.items():
            getattr(record, name)[start:start + len(values) - (start - warm)] = \
                values[start - warm:]
        counted = {name: count + counts[name] for name, count in counted.items()}
    for name, count in counted.items():
        setattr(stats, name, getattr(stats, name) + count)
    record.pieces = pieces
    return record


def may_fork():
    """Tell whether a pass may run in pieces here: Linux, the main process, one thread."""
    # A thread may hold a lock the forked child then never sees released (a node's, a test
    # runner's, a progress bar's monitor); a worker process would multiply the workers.
    return (sys.platform.startswith('linux') and threading.active_count() == 1
            and multiprocessing.parent_process() is None)


class _MeterReadings:
    """A noise meter's readings over a take, taken at once; read back at pose `index`."""

    def __init__(self, t, p, q, meter, restart_after):
        """Feed meter the take, restarting it after a gap longer than restart_after (s)."""
        self._ready = bytearray(len(t))
        self._sigmas = array('d', bytes(16 * len(t)))
        for k in range(len(t)):
            feed_own_meter(meter, t[k - 1] if k else None, t[k], p[k], q[k], restart_after)
            if meter.ready:
                self._ready[k] = 1
                self._sigmas[2 * k], self._sigmas[2 * k + 1] = meter.sigmas()
        self.index = 0

    @property
    def ready(self):
        """Tell whether the meter had a reading at pose `index`."""
        return bool(self._ready[self.index])

    def sigmas(self):
        """Return the reading (position m, rotation rad) at pose `index`."""
        k = 2 * self.index
        return self._sigmas[k], self._sigmas[k + 1]


def _piece_pass(warm, start, stop):
    """Run poses start..stop of _PASS's take from `warm` on: (warm, start, arrays, counts)."""
    params, t, p, q, readings = (_PASS[k] for k in ('params', 't', 'p', 'q', 'readings'))
    stats = SmootherStats()
    kf = PoseKalmanFilter(params, stats, readings)
    record = KalmanRecord(stop - warm)
    _run_pass(kf, t, p, q, readings, record, range(warm, start), warm)
    before = stats.as_dict()
    _run_pass(kf, t, p, q, readings, record, range(start, stop), warm)
    counts = {name: count - before[name] for name, count in stats.as_dict().items()}
    return warm, start, {name: values for name, values in vars(record).items()
                         if name != 'pieces'}, counts


def _continues(record, warm, start, arrays):
    """Tell whether a piece's warm-up ends on record's estimates (see VERIFY_SIGMA)."""
    mine = slice(start - VERIFY_POSES - warm, start - warm)
    theirs = slice(start - VERIFY_POSES, start)
    if not (np.array_equal(arrays['restarted'][mine], record.restarted[theirs])
            and np.array_equal(arrays['passed'][mine], record.passed[theirs])):
        return False
    sigma = record.sigma[theirs]
    moved = np.linalg.norm(arrays['position'][mine] - record.position[theirs], axis=1)
    turned = quat.angle_between(arrays['output_q'][mine], record.output_q[theirs])
    return bool(np.all(moved <= VERIFY_SIGMA * sigma[:, 0])
                and np.all(turned <= VERIFY_SIGMA * sigma[:, 1]))


def _run_pass(kf, t, p, q, readings, record, rows, offset=0):
    """Step kf over the poses `rows` of a take into record (from pose `offset` on)."""
    for k in rows:
        if readings is not None:
            readings.index = k
        kf.step(t[k], p[k], q[k])
        i = k - offset
        record.position[i] = kf.position
        record.output_q[i] = kf.output_q
        record.velocity[i] = kf.x[POS, 1]
        record.rate[i] = kf.x[ROT, 1]
        record.q[i] = kf.q
        record.innovation[i] = kf.innovation
        record.gain[i] = kf.gain
        record.sigma[i] = np.sqrt(kf.variance)
        record.restarted[i] = kf.restarted
        record.passed[i] = kf.passed
        if kf.F is not None:
            record.dt[i] = t[k] - t[k - 1]


def _ticking(rows, progress, ticks, total):
    """Yield rows, advancing a progress wrapper over `total` poses `ticks` per row."""
    if progress is None:
        yield from rows
        return
    bar = iter(progress(range(total)))
    for row in rows:
        for _ in range(ticks):
            next(bar, None)
        yield row
    for _ in bar:  # let the wrapper finish
        pass


def hybrid_features(record):
    """Compute the hybrid features (N, 16) of a Kalman pass."""
    q = columns(record.q)
    sigma_p, sigma_r = record.sigma[:, :1], record.sigma[:, 1:]
    innovation = np.column_stack(rotate(q, columns(record.innovation[:, POS]), inverse=True))
    step = np.column_stack(rotate(q, columns(record.velocity), inverse=True))
    dt = record.dt[:, None]
    return np.column_stack([innovation / sigma_p, record.innovation[:, ROT] / sigma_r,
                            step * dt / sigma_p, record.rate * dt / sigma_r, record.gain,
                            log2_interval(record.dt),
                            np.any(record.restarted, axis=1).astype(float)])


def hybrid_pose_features(kf, dt):
    """Return the hybrid features (16,) of the pose a PoseKalmanFilter has just stepped on."""
    qf = kf.q
    sigma_p, sigma_r = np.sqrt(kf.variance).tolist()
    y = kf.innovation
    innovation = rotate(qf, y[POS].tolist(), inverse=True)
    velocity = rotate(qf, kf.x[POS, 1].tolist(), inverse=True)
    rate = kf.x[ROT, 1]
    restarted = kf.restarted[0] or kf.restarted[1]
    if kf.F is None:
        dt = 0.0
    return np.array([innovation[0] / sigma_p, innovation[1] / sigma_p,
                     innovation[2] / sigma_p, *(y[ROT] / sigma_r).tolist(),
                     velocity[0] * dt / sigma_p, velocity[1] * dt / sigma_p,
                     velocity[2] * dt / sigma_p, *(rate * (dt / sigma_r)).tolist(),
                     *kf.gain.tolist(),
                     math.log2(dt * REFERENCE_RATE_HZ) if dt > 0.0 else 0.0,
                     float(restarted)])


def lstm_features(t, p, q, record):
    """Raw-LSTM features (N, 8) of a take (measurements and the Kalman pass over them)."""
    t, p, q = np.asarray(t, float), np.asarray(p, float), np.asarray(q, float)
    features = np.zeros((len(t), 8))
    if len(t) > 1:
        step = rotate(columns(q[:-1]), columns(np.diff(p, axis=0)), inverse=True)
        features[1:, :3] = np.column_stack(step) / record.sigma[1:, :1]
        features[1:, 3:6] = quat.log_map(quat.multiply(quat.conjugate(q[:-1]), q[1:])) \
            / record.sigma[1:, 1:]
        features[1:, 6] = log2_interval(np.diff(t))
    # A full restart (the first measurement among them) or a noise not yet measured.
    unmeasured = np.any(record.sigma <= math.sqrt(UNMEASURED_VARIANCE), axis=1)
    started = np.any(record.restarted, axis=1) & (record.dt == 0.0) | unmeasured
    features[started] = 0.0
    features[started, 7] = 1.0
    return features


def lstm_pose_features(kf, t, position, q, previous):
    """Return the lstm features (8,) of a measurement; previous: (t, position, q) or None."""
    if previous is None or kf.F is None or not np.all(kf.variance > UNMEASURED_VARIANCE):
        return np.array([0.0] * 7 + [1.0])
    t0, p0, q0 = previous
    sigma_p, sigma_r = np.sqrt(kf.variance).tolist()
    step = rotate(q0, (position - p0).tolist(), inverse=True)
    rot = quat.log_relative(q0, q)
    return np.array([step[0] / sigma_p, step[1] / sigma_p, step[2] / sigma_p,
                     rot[0] / sigma_r, rot[1] / sigma_r, rot[2] / sigma_r,
                     math.log2((t - t0) * REFERENCE_RATE_HZ), 0.0])


def hybrid_motion(p, q, record):
    """
    Return the own filter's predicted minus measured step (N, 6) of each frame.

    Position in the world frame (m): v_(k-1) dt - (p_k - p_(k-1)); orientation in the body
    frame (rad): w_(k-1) dt - log(q_(k-1)^-1 q_k); 0 on the first frame.
    """
    motion = np.zeros((len(p), 6))
    dt = record.dt[1:, None]
    motion[1:, :3] = record.velocity[:-1] * dt - np.diff(p, axis=0)
    motion[1:, 3:] = record.rate[:-1] * dt - quat.log_map(
        quat.multiply(quat.conjugate(q[:-1]), q[1:]))
    return motion


def hybrid_weights(logit):
    """Return the weights (own, kalman) (..., 2) each of the network outputs (..., 4)."""
    a = np.stack([np.zeros(logit.shape[:-1] + (2,)), logit[..., 0::2], logit[..., 1::2]])
    a = np.exp(a - np.max(a, axis=0))
    return a[1] / np.sum(a, axis=0), a[2] / np.sum(a, axis=0)


def hybrid_step(d, motion, innovation, logit, sigma, passed, restarted):
    """
    Step the hybrid's own filter: return the estimate's offset and the state carried on.

    Both (..., 6), from the measurement (position world m, orientation body rad). d: the
    carried state (..., 6); motion (..., 6) of `hybrid_motion`; innovation (..., 6): the
    Kalman filter's; logit (..., 4): the network output; sigma (..., 2); passed and
    restarted (..., 2): the Kalman filter's flags per group (restarted includes passed).
    """
    e = d + motion
    own, kalman = hybrid_weights(logit)
    offset = np.repeat(own, 3, axis=-1) * e - np.repeat(kalman, 3, axis=-1) * innovation
    size = np.linalg.norm(offset.reshape(offset.shape[:-1] + (2, 3)), axis=-1) / sigma
    offset *= np.repeat(HOLD_CAP_SIGMA / np.maximum(size, HOLD_CAP_SIGMA), 3, axis=-1)
    restarted3, passed3 = np.repeat(restarted, 3, axis=-1), np.repeat(passed, 3, axis=-1)
    offset = np.where(restarted3, 0.0, offset)
    return offset, np.where(passed3, e, offset)


def hybrid_apply(p, q, offset):
    """Return the hybrid estimate (p (N, 3), q (N, 4)): measurements moved by offset (N, 6)."""
    out_q = quat.multiply(q, quat.exp_map(offset[:, 3:]))
    return p + offset[:, :3], quat.make_continuous(out_q)


def kalman_offset(p, q, kalman_p, kalman_q):
    """Return the offset (N, 6) of the Kalman estimate from the measurement."""
    rotation = quat.log_map(quat.multiply(quat.conjugate(q), kalman_q))
    return np.column_stack([kalman_p - p, rotation])


def towards_kalman(p, q, kalman_p, kalman_q):
    """Return `kalman_offset` (N, 6) with its position in the measurement's body frame."""
    offset = kalman_offset(p, q, kalman_p, kalman_q)
    position = rotate(columns(q), columns(offset[:, :3]), inverse=True)
    return np.column_stack([np.column_stack(position), offset[:, 3:]])


def lstm_offset(out, towards, sigma):
    """
    Return the lstm's body-frame move (..., 6) of the measurement.

    out: network outputs (..., 6); towards: `towards_kalman` (..., 6); sigma: the measured
    sigma per axis (..., 6). The move is a share sigmoid(out) of the way to the Kalman
    estimate per axis, clipped to CAP_SIGMA sigmas.
    """
    limit = CAP_SIGMA * sigma
    share = 0.5 + 0.5 * np.tanh(0.5 * out)
    return np.clip(share * towards, -limit, limit)


def lstm_apply(p, q, offset):
    """Return the lstm estimate: measurements moved by body-frame offsets (N, 6)."""
    shift = rotate(columns(q), columns(offset[:, :3]))
    out_q = quat.multiply(q, quat.exp_map(offset[:, 3:]))
    return p + np.column_stack(shift), quat.make_continuous(out_q)


def measurement_error(p, q, truth_p, truth_q):
    """Return the measurement's error (N, 6): body-frame position (m), rotation (rad)."""
    position = rotate(columns(q), columns(p - truth_p), inverse=True)
    rotation = quat.log_map(quat.multiply(quat.conjugate(truth_q), q))
    return np.column_stack([np.column_stack(position), rotation])
