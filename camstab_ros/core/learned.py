"""
Learned smoothers `lstm` and `hybrid`: an LSTM run from exported weights with NumPy, bounded.

Both run beside the Kalman filter of their model card, which reads the tracker's noise
(the pipeline's meter in the stabiliser, else a meter of its own), gates spikes and
restarts after gaps; the networks see the stream in units of that measured noise
(learned_features), so one model serves any tracker and rate, and neither can move a
pose far:
- `hybrid` runs a filter of its own beside the Kalman filter, predicting with the Kalman
  filter's velocity; per group the network weighs the measurement, the own prediction
  and the Kalman prediction (the estimate is their weighted mean, and the own filter's
  next state unless the measurement was passed through), never further than
  HOLD_CAP_SIGMA measured sigmas from the measurement;
- `lstm` (the prototype's first model) moves the measurement a share of the way towards
  the Kalman estimate per body axis, by at most CAP_SIGMA measured sigmas.

`update()` runs one LSTM step per pose with the state carried (O(1) work). `smooth()`
runs the Kalman pass pose by pose (a long take's in verified pieces on every core, equal
to one pass to rounding: learned_features.kalman_pass) and the network (with `hybrid`'s own
filter) over the whole take as a batch of chunks of CHUNK_FRAMES, each started
WARMUP_FRAMES early from a zero state: identical to `update()` (to rounding) for takes
up to CHUNK_FRAMES long, and within a few hundredths of a sigma of it on longer takes
(test_learned).

A model that is missing, corrupt or incompatible raises ModelError naming the file; the
smoother then logs a warning and runs the `kalman` method (current defaults) instead,
reporting it in `model_status`. A non-finite network output is never applied: that pose
gets the plain Kalman estimate (`hybrid`) or the measurement (`lstm`), `update()` resets
the network state, and the count is in `nonfinite_outputs`.
"""
import logging
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.kalman import Kalman, POS, PoseKalmanFilter, ROT
from camstab_ros.core.learned_features import (CAP_SIGMA, HOLD_CAP_SIGMA, hybrid_apply,
                                               hybrid_features, hybrid_motion,
                                               hybrid_pose_features, hybrid_step,
                                               kalman_offset, kalman_pass, lstm_apply,
                                               lstm_features, lstm_offset, lstm_pose_features,
                                               rotate, towards_kalman)
from camstab_ros.core.lstm_model import (chunked, chunks, default_model_dir, kalman_params,
                                         load_model, ModelError, run_chunked, unchunked)
from camstab_ros.core.params import ParamSpec
from camstab_ros.core.smoother import Estimate, Smoother
import numpy as np


log = logging.getLogger(__name__)

LEARNED_PARAMS = {
    'model_path': ParamSpec('', 'directory holding model_card.json and the weights; '
                            'empty: the installed models/<method>'),
}


class _LearnedSmoother(Smoother):
    """Loading, the Kalman stage, fallback to `kalman` and non-finite outputs, shared."""

    batched = True
    PARAMS = LEARNED_PARAMS

    def __init__(self, **params):
        self.model = None
        self.model_status = ''
        self.nonfinite_outputs = 0
        self._fallback = None
        super().__init__(**params)

    @property
    def fallback(self):
        """Return True when the model could not be loaded and `kalman` runs instead."""
        return self._fallback is not None

    def _load(self):
        if self.model is not None or self._fallback is not None:
            return
        directory = self.params['model_path'] or default_model_dir(self.name)
        try:
            self.model = load_model(directory, self.name)
        except ModelError as exc:
            self._fallback = Kalman()
            self._fallback.stats = self.stats
            self.model_status = f'fallback to kalman: {exc}'
            log.warning('%s: cannot use the model (%s); running kalman instead', self.name, exc)
            return
        sha = self.model.card['weights']['sha256'][:12]
        self.model_status = f'ok: {directory} (sha256 {sha}...)'

    def _reset(self):
        self._load()
        if self._fallback is not None:
            self._fallback.attach_noise_meter(self.noise_meter)
            return
        self._state = self.model.network.initial_state()
        self._kf = PoseKalmanFilter(kalman_params(self.model.card), self.stats,
                                    self.noise_meter)
        self._previous = None

    def _count_nonfinite(self, count):
        if count and not self.nonfinite_outputs:
            log.warning('%s: non-finite network output; not applied (the network state is '
                        'reset)', self.name)
        self.nonfinite_outputs += count

    def _network_step(self, features):
        """Run one LSTM step on one pose's features; return its output, or None if non-finite."""
        model = self.model
        out, state = model.network.step(model.normalize(features), self._state)
        out = out.tolist()
        if not all(map(math.isfinite, out)):
            self._count_nonfinite(1)
            self._state = model.network.initial_state()
            return None
        self._state = state
        return out

    def _network_batch(self, features):
        """Return the outputs (N, k) over a take and the mask of non-finite rows (set to 0)."""
        model = self.model
        out = run_chunked(model.network, model.normalize(features))
        bad = ~np.all(np.isfinite(out), axis=1)
        out[bad] = 0.0
        self._count_nonfinite(int(np.count_nonzero(bad)))
        return out, bad

    def _update(self, t, position, quaternion):
        if self._fallback is not None:
            return self._fallback._update(t, position, quaternion)
        previous_t = self._kf.t
        self._kf.step(t, position, quaternion)
        return self._model_update(t, position, quaternion, previous_t)

    def smooth(self, t, p, q, progress=None):
        """
        Whole take, batched (see the module docstring); forgets any earlier updates.

        An attached noise meter is fed pose by pose, as the pipeline feeds it for update().
        """
        self.reset()
        if self._fallback is not None or len(t) == 0:
            result = super().smooth(t, p, q, progress)
        else:
            t = np.asarray(t, dtype=float)
            if np.any(np.diff(t) <= 0.0):
                raise ValueError('timestamps must increase')
            p = np.asarray(p, dtype=float)
            q = quat.make_continuous(quat.normalize(q))
            record = kalman_pass(kalman_params(self.model.card), t, p, q, self.stats,
                                 self.noise_meter, progress)
            result = (t,) + self._model_smooth(t, p, q, record)
        self.reset()
        return result


class HybridSmoother(_LearnedSmoother):
    name = 'hybrid'
    description = ('Kalman filter and a filter of its own, weighed by an LSTM: per group, '
                   'the estimate a weighted mean of the measurement, the own and the Kalman '
                   'prediction (never beyond them)')

    def _reset(self):
        super()._reset()
        self._offset = [0.0] * 6     # the own filter's state d
        self._motion_from = None     # previous measurement, Kalman velocity and body rate

    def _model_update(self, t, position, quaternion, previous_t):
        # Scalar form of hybrid_motion and hybrid_step (the per-pose hot path; test_learned
        # holds it equal to the batched form of smooth()).
        kf = self._kf
        dt = 0.0 if previous_t is None else t - previous_t
        out = self._network_step(hybrid_pose_features(kf, dt))
        q = quaternion.tolist()
        p = position.tolist()
        d = self._offset
        e = [0.0] * 6  # a full restart: both groups restart
        if kf.F is not None:
            p0, q0, velocity, rate = self._motion_from
            step = quat.log_relative(q0, q)
            e = [d[i] + velocity[i] * dt - (p[i] - p0[i]) for i in range(3)] + [
                d[3 + i] + rate[i] * dt - step[i] for i in range(3)]
        self._motion_from = (p, q, kf.x[POS, 1].tolist(), kf.x[ROT, 1].tolist())
        if out is None:
            self._offset = kalman_offset(position[None], quaternion[None], kf.position[None],
                                         np.array(kf.output_q)[None])[0].tolist()
            return Estimate(t, kf.position, np.array(kf.output_q))
        offset, carry = [0.0] * 6, [0.0] * 6
        restarted, passed = kf.restarted, kf.passed
        innovation = kf.innovation.tolist()
        for group in (POS, ROT):
            axes = slice(3 * group, 3 * group + 3)
            if passed[group]:
                carry[axes] = e[axes]
            elif not restarted[group]:
                a_own, a_kalman = out[2 * group], out[2 * group + 1]
                top = max(0.0, a_own, a_kalman)
                base, own, kalman = (math.exp(-top), math.exp(a_own - top),
                                     math.exp(a_kalman - top))
                total = base + own + kalman
                own, kalman = own / total, kalman / total
                moved = [own * v - kalman * y for v, y in zip(e[axes], innovation[group])]
                size = math.sqrt(sum(v * v for v in moved)) / math.sqrt(kf.variance[group])
                if size > HOLD_CAP_SIGMA:
                    moved = [v * (HOLD_CAP_SIGMA / size) for v in moved]
                offset[axes] = carry[axes] = moved
        self._offset = carry
        return Estimate(t, position + offset[:3], np.array(quat.compose_exp(q, offset[3:])))

    def _model_smooth(self, t, p, q, record):
        logit, bad = self._network_batch(hybrid_features(record))
        # The own filter's recursion, over chunks (lstm_model.chunks) side by side.
        spans = chunks(len(t))
        motion = chunked(hybrid_motion(p, q, record), spans)
        innovation = chunked(record.innovation.reshape(-1, 6), spans)
        logit = chunked(logit, spans)
        sigma = chunked(record.sigma, spans, fill=1.0)
        passed = chunked(record.passed, spans)
        restarted = chunked(record.restarted, spans, fill=True)
        fallback = chunked(kalman_offset(p, q, record.position, record.output_q), spans)
        bad = chunked(bad, spans)
        offsets = np.zeros(motion.shape)
        d = np.zeros((len(spans), 6))
        for k in range(motion.shape[1]):
            offsets[:, k], d = hybrid_step(d, motion[:, k], innovation[:, k], logit[:, k],
                                           sigma[:, k], passed[:, k], restarted[:, k])
            offsets[bad[:, k], k] = d[bad[:, k]] = fallback[bad[:, k], k]
        return hybrid_apply(p, q, unchunked(offsets, spans))


class LstmSmoother(_LearnedSmoother):
    name = 'lstm'
    description = ('LSTM on the raw stream: the measurement moved towards the Kalman '
                   f"estimate, by at most {CAP_SIGMA:g} of the tracker's measured sigmas per "
                   'axis')

    def _model_update(self, t, position, quaternion, previous_t):
        kf = self._kf
        q = quaternion.tolist()
        features = lstm_pose_features(kf, t, position, q, self._previous)
        self._previous = (t, position, q)
        out = self._network_step(features)
        if out is None or features[-1]:
            return Estimate(t, position, quaternion)
        # Scalar form of towards_kalman and lstm_offset (the per-pose hot path).
        sigma_p, sigma_r = np.sqrt(kf.variance).tolist()
        towards = (rotate(q, (kf.position - position).tolist(), inverse=True)
                   + tuple(quat.log_relative(q, kf.output_q)))
        offset = []
        for i, (v, k) in enumerate(zip(out, towards)):
            limit = CAP_SIGMA * (sigma_p if i < 3 else sigma_r)
            offset.append(min(max(k * (0.5 + 0.5 * math.tanh(0.5 * v)), -limit), limit))
        shift = rotate(q, offset[:3])
        return Estimate(t, position + shift, np.array(quat.compose_exp(q, offset[3:])))

    def _model_smooth(self, t, p, q, record):
        features = lstm_features(t, p, q, record)
        out, bad = self._network_batch(features)
        offset = lstm_offset(out, towards_kalman(p, q, record.position, record.output_q),
                             np.repeat(record.sigma, 3, axis=1))
        offset[bad | (features[:, -1] > 0.0)] = 0.0
        return lstm_apply(p, q, offset)
