"""
Learned smoothers `lstm` and `hybrid`: an LSTM run from exported weights with NumPy.

Both networks see only quantities that do not depend on where the camera is, in fixed
physical units, expressed in the camera's body frame (so a take moved or turned as a
whole gives the same corrections):
- `hybrid`: a Kalman filter (the configuration stored in the model card) followed by an
  LSTM fed with the measurement's residual from the Kalman estimate (mm, deg), the
  filter's velocity (m/s) and angular rate (deg/s), dt (ms) and a restart flag. It
  predicts a correction to the Kalman estimate (mm, deg) whose size is capped by
  `max_correction_mm` / `max_correction_deg`.
- `lstm` (the prototype's first model, made invariant): an LSTM fed with the frame-to-frame
  change of the raw measurement (mm, deg, in the previous measurement's frame) and dt.
  It predicts the correction to the current measurement, capped the same way.
Features are standardised with the model card's constants and clipped to +-FEATURE_CLIP.

`update()` runs one LSTM step per pose with the state carried (O(1) work). `smooth()`
runs the Kalman stage pose by pose and the LSTM over the whole take as a batch of chunks
of CHUNK_FRAMES, each started WARMUP_FRAMES early from a zero state: identical to
`update()` (to rounding) for takes up to CHUNK_FRAMES long, and within 0.01 mm and 0.001
deg of it on longer takes (test_learned; typically ~1e-5 mm).

A model that is missing, corrupt or incompatible raises ModelError naming the file; the
smoother then logs a warning and runs the `kalman` method (current defaults) instead,
reporting it in `model_status`. A non-finite network output is ignored for that pose
(the Kalman estimate, or for `lstm` the measurement, is returned; the LSTM state is
reset; in `smooth()` the rest of that chunk stays uncorrected) and counted in
`nonfinite_outputs`.
"""
import logging
import math

from camstab_ros.core import quaternion as quat
from camstab_ros.core.kalman import Kalman, POS, PoseKalmanFilter, ROT
from camstab_ros.core.learned_features import (columns, hybrid_features, kalman_pass,
                                               lstm_features, rotate)
from camstab_ros.core.lstm_model import (default_model_dir, kalman_params, load_model, ModelError,
                                         run_chunked)
from camstab_ros.core.params import ParamSpec
from camstab_ros.core.smoother import Estimate, Smoother
import numpy as np


log = logging.getLogger(__name__)


def cap_corrections(correction, max_mm, max_deg):
    """
    Scale the position (mm) and rotation (deg) parts of corrections (..., 6) down to their caps.

    Non-finite rows become 0. Returns (capped, non-finite mask).
    """
    correction = np.array(correction, dtype=float)
    bad = ~np.all(np.isfinite(correction), axis=-1)
    correction[bad] = 0.0
    for part, cap in ((slice(0, 3), max_mm), (slice(3, 6), max_deg)):
        norm = np.linalg.norm(correction[..., part], axis=-1, keepdims=True)
        correction[..., part] *= np.minimum(1.0, cap / np.maximum(norm, 1e-300))
    return correction, bad


def _learned_params(max_mm, max_deg):
    return {
        'model_path': ParamSpec('', 'directory holding model_card.json and the weights; '
                                'empty: the installed models/<method>'),
        'max_correction_mm': ParamSpec(max_mm, 'cap on the size of the learned position '
                                       'correction', 'mm', 0.0, 1000.0),
        'max_correction_deg': ParamSpec(max_deg, 'cap on the size of the learned rotation '
                                        'correction', 'deg', 0.0, 30.0),
    }


class _LearnedSmoother(Smoother):
    """Loading, fallback to `kalman` and capping shared by `lstm` and `hybrid`."""

    batched = True

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
            self._fallback.reset()
        else:
            self._state = self.model.network.initial_state()
            self._reset_model()

    def _cap(self, correction):
        capped, bad = cap_corrections(correction, self.params['max_correction_mm'],
                                      self.params['max_correction_deg'])
        count = int(np.count_nonzero(bad))
        if count:
            if not self.nonfinite_outputs:
                log.warning('%s: non-finite network output; using the uncorrected estimate '
                            'and resetting the network state', self.name)
            self.nonfinite_outputs += count
        return capped, count

    def _network_step(self, features):
        """
        Run one LSTM step on one pose's features in SI units; return the capped correction.

        The correction is 6 floats, mm and deg; a non-finite output gives 0 and resets the
        state.
        """
        model = self.model
        out, state = model.network.step(model.normalize_si(features), self._state)
        c = (out * model.target_scale).tolist()
        if not all(map(math.isfinite, c)):
            self._cap(np.array([c]))  # counts and logs
            self._state = model.network.initial_state()
            return [0.0] * 6
        self._state = state
        # Scalar form of cap_corrections (several times cheaper for one pose).
        for start, cap in ((0, self.params['max_correction_mm']),
                           (3, self.params['max_correction_deg'])):
            x, y, z = c[start:start + 3]
            norm = math.sqrt(x * x + y * y + z * z)
            if norm > cap:
                k = cap / norm
                c[start:start + 3] = x * k, y * k, z * k
        return c

    def _network_batch(self, features):
        model = self.model
        out = run_chunked(model.network, model.normalize(features))
        return self._cap(out * model.target_scale)[0]

    def _update(self, t, position, quaternion):
        if self._fallback is not None:
            return self._fallback._update(t, position, quaternion)
        return self._model_update(t, position, quaternion)

    def smooth(self, t, p, q, progress=None):
        """Whole take, batched (see the module docstring); forgets any earlier updates."""
        self.reset()
        if self._fallback is not None or len(t) == 0:
            result = super().smooth(t, p, q, progress)
        else:
            t = np.asarray(t, dtype=float)
            if np.any(np.diff(t) <= 0.0):
                raise ValueError('timestamps must increase')
            q = quat.make_continuous(quat.normalize(q))
            result = self._model_smooth(t, np.asarray(p, dtype=float), q, progress)
        self.reset()
        return result


def _apply(base_p, base_q, correction):
    """Poses (N, 3), (N, 4) moved by body-frame corrections (N, 6) in mm and deg."""
    shift = rotate(columns(base_q), columns(correction[:, :3] * 1e-3))
    q = quat.multiply(base_q, quat.exp_map(np.radians(correction[:, 3:])))
    return base_p + np.column_stack(shift), quat.make_continuous(q)


def _corrected(t, base_p, base_q, c):
    """
    Return the Estimate at t: one pose (base_q as 4 floats) moved by a body-frame correction c.

    The correction is 6 floats, mm and deg: the scalar form of `_apply` for the per-pose
    path.
    """
    shift = rotate(base_q, (c[0] * 1e-3, c[1] * 1e-3, c[2] * 1e-3))
    rot = (math.radians(c[3]), math.radians(c[4]), math.radians(c[5]))
    return Estimate(t, base_p + shift, np.array(quat.compose_exp(base_q, rot)))


class HybridSmoother(_LearnedSmoother):
    name = 'hybrid'
    description = ('Kalman estimate corrected by an LSTM (correction capped; the Kalman '
                   'configuration comes from the model card)')
    PARAMS = _learned_params(20.0, 1.0)

    def _reset_model(self):
        self._kf = PoseKalmanFilter(kalman_params(self.model.card), self.stats)

    def _model_update(self, t, position, quaternion):
        kf = self._kf
        previous_t = kf.t
        kf.step(t, position, quaternion)
        x = kf.x
        qf = kf.q
        est = x[POS, 0]
        residual = rotate(qf, (position - est).tolist(), inverse=True)
        velocity = rotate(qf, x[POS, 1].tolist(), inverse=True)
        features = np.array(
            residual + quat.log_relative(qf, quaternion.tolist())
            + velocity + tuple(x[ROT, 1].tolist())
            + (0.0 if kf.F is None else t - previous_t, float(any(kf.restarted))))
        return _corrected(t, est, qf, self._network_step(features))

    def _model_smooth(self, t, p, q, progress):
        est_p, est_v, est_q, rate, dt, restarted = kalman_pass(
            kalman_params(self.model.card), t, p, q, self.stats, progress)
        features = hybrid_features(p, q, est_p, est_v, est_q, rate, dt, restarted)
        out_p, out_q = _apply(est_p, est_q, self._network_batch(features))
        return t, out_p, out_q


class LstmSmoother(_LearnedSmoother):
    name = 'lstm'
    description = ('LSTM on the raw stream (frame-to-frame steps in; a capped correction '
                   'to the measurement out)')
    PARAMS = _learned_params(60.0, 2.0)

    def _reset_model(self):
        self._previous = None

    def _model_update(self, t, position, quaternion):
        q = quaternion.tolist()
        if self._previous is None:
            features = np.zeros(7)
        else:
            t0, p0, q0 = self._previous
            step = rotate(q0, (position - p0).tolist(), inverse=True)
            features = np.array(step + quat.log_relative(q0, q) + (t - t0,))
        self._previous = (t, position, q)
        return _corrected(t, position, q, self._network_step(features))

    def _model_smooth(self, t, p, q, progress):
        out_p, out_q = _apply(p, q, self._network_batch(lstm_features(t, p, q)))
        return t, out_p, out_q
