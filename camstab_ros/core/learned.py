"""Learned smoothers `lstm` and `hybrid`: an LSTM run from exported weights with NumPy.

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
import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np

from camstab_ros.core import quaternion as quat
from camstab_ros.core.kalman import KALMAN_PARAMS, POS, ROT, Kalman, PoseKalmanFilter
from camstab_ros.core.smoother import (
    Estimate, ParameterError, ParamSpec, Smoother, SmootherStats, register)

log = logging.getLogger(__name__)

CARD_FORMAT = 'camstab-model-card'
CARD_VERSION = 1
CARD_FILE = 'model_card.json'
FEATURE_CLIP = 8.0
CHUNK_FRAMES = 8192
WARMUP_FRAMES = 1024
# Time steps per input projection in the batched LSTM (bounds temporary memory).
PROJECTION_STEPS = 512

HYBRID_FEATURES = (
    ('residual_x', 'mm'), ('residual_y', 'mm'), ('residual_z', 'mm'),
    ('residual_rx', 'deg'), ('residual_ry', 'deg'), ('residual_rz', 'deg'),
    ('velocity_x', 'm/s'), ('velocity_y', 'm/s'), ('velocity_z', 'm/s'),
    ('rate_x', 'deg/s'), ('rate_y', 'deg/s'), ('rate_z', 'deg/s'),
    ('dt', 'ms'), ('restarted', '1'))
LSTM_FEATURES = (
    ('step_x', 'mm'), ('step_y', 'mm'), ('step_z', 'mm'),
    ('step_rx', 'deg'), ('step_ry', 'deg'), ('step_rz', 'deg'), ('dt', 'ms'))
# Card unit per SI unit (m, rad, s) of each feature unit.
SI_PER_UNIT = {'mm': 1e3, 'deg': math.degrees(1.0), 'm/s': 1.0, 'deg/s': math.degrees(1.0),
               'ms': 1e3, '1': 1.0}
TARGETS = (('correction_x', 'mm'), ('correction_y', 'mm'), ('correction_z', 'mm'),
           ('correction_rx', 'deg'), ('correction_ry', 'deg'), ('correction_rz', 'deg'))
FEATURE_DEFINITIONS = {
    'hybrid': ('Kalman filter (card "kalman") stepped on the measurement, then, in the '
               'body frame of the filtered orientation q_f: residual = R(q_f)^T (p_meas - '
               'p_f) in mm; rotation residual = log(q_f^-1 q_meas) in deg; velocity = '
               'R(q_f)^T v_f in m/s; rate = the filter angular rate (body) in deg/s; dt = '
               'time since the previous measurement in ms (0 at the first); restarted = 1 '
               'when the filter (re)started a group at this measurement. Standardised '
               '(x - mean) / std, clipped to +-clip.'),
    'lstm': ('In the body frame of the previous measurement q_(k-1): step = R(q_(k-1))^T '
             '(p_k - p_(k-1)) in mm; rotation step = log(q_(k-1)^-1 q_k) in deg; dt in ms '
             '(all 0 at the first measurement). Standardised (x - mean) / std, clipped to '
             '+-clip.'),
}
TARGET_DEFINITIONS = {
    'hybrid': ('correction to the Kalman estimate in its body frame: R(q_f)^T (p_true - '
               'p_f) in mm, log(q_f^-1 q_true) in deg; the network outputs target / scale'),
    'lstm': ('correction to the measurement in its body frame: R(q_k)^T (p_true - p_k) in '
             'mm, log(q_k^-1 q_true) in deg; the network outputs target / scale'),
}


class ModelError(Exception):
    """A model file that is missing, corrupt or incompatible with this runtime."""


# --- rotations written once for floats and NumPy arrays ------------------------------

def rotate(q, v, inverse=False):
    """R(q) v, or R(q)^T v when inverse, for q = (x, y, z, w) and v = (x, y, z): floats or
    arrays of the same shape per component."""
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


def _columns(a):
    return tuple(np.asarray(a, dtype=float).T)


# --- the NumPy LSTM ------------------------------------------------------------------

class LstmNetwork:
    """Stacked Keras-style LSTM layers (gates i, f, c, o; sigmoid and tanh) and a linear
    output layer, from arrays named lstm_<k>/kernel, lstm_<k>/recurrent_kernel,
    lstm_<k>/bias, dense/kernel, dense/bias."""

    def __init__(self, arrays, layers):
        self.layers = []
        for k in range(layers):
            w, u, b = (np.asarray(arrays[f'lstm_{k}/{n}'], dtype=float)
                       for n in ('kernel', 'recurrent_kernel', 'bias'))
            self.layers.append((w, u, b, np.vstack([w, u])))
        self.dense_w = np.asarray(arrays['dense/kernel'], dtype=float)
        self.dense_b = np.asarray(arrays['dense/bias'], dtype=float)
        units = [u.shape[0] for _, u, _, _ in self.layers]
        # sigmoid(z) = 0.5 + 0.5 tanh(z / 2): one tanh over all four gates per step.
        self._gate_scale = [np.repeat([0.5, 0.5, 1.0, 0.5], n) for n in units]
        self._gate_offset = [np.repeat([0.5, 0.5, 0.0, 0.5], n) for n in units]
        self.units = units

    def initial_state(self, batch=None):
        shape = (lambda n: (n,)) if batch is None else (lambda n: (batch, n))
        return [(np.zeros(shape(n)), np.zeros(shape(n))) for n in self.units]

    def step(self, x, state):
        """One time step: x (features,) -> (output (targets,), new state)."""
        new_state = []
        for (_, _, b, wu), (h, c), scale, offset in zip(
                self.layers, state, self._gate_scale, self._gate_offset):
            n = h.shape[-1]
            z = np.concatenate([x, h]) @ wu
            z += b
            g = np.tanh(z * scale) * scale + offset
            c = g[n:2 * n] * c + g[:n] * g[2 * n:3 * n]
            x = g[3 * n:] * np.tanh(c)
            new_state.append((x, c))
        return x @ self.dense_w + self.dense_b, new_state

    def run(self, x, state=None):
        """A batch of sequences x (batch, steps, features) from `state` (zero by default)
        -> outputs (batch, steps, targets)."""
        batch, steps, _ = x.shape
        state = state or self.initial_state(batch)
        for (w, u, b, _), (h, c), scale, offset in zip(
                self.layers, state, self._gate_scale, self._gate_offset):
            n = u.shape[0]
            out = np.empty((steps, batch, n))
            h, c = h.copy(), c.copy()
            z = np.empty((batch, 4 * n))
            cell = np.empty((batch, n))
            # Time-major and in place: this loop is the whole cost of the batched path.
            for start in range(0, steps, PROJECTION_STEPS):
                stop = min(start + PROJECTION_STEPS, steps)
                projected = np.ascontiguousarray((x[:, start:stop] @ w + b).swapaxes(0, 1))
                for k in range(stop - start):
                    np.matmul(h, u, out=z)
                    z += projected[k]
                    z *= scale
                    np.tanh(z, out=z)
                    z *= scale
                    z += offset
                    c *= z[:, n:2 * n]
                    np.multiply(z[:, :n], z[:, 2 * n:3 * n], out=cell)
                    c += cell
                    np.tanh(c, out=cell)
                    h = out[start + k]
                    np.multiply(z[:, 3 * n:], cell, out=h)
            x = out.swapaxes(0, 1)
        return x @ self.dense_w + self.dense_b


def run_chunked(network, x):
    """Network outputs (N, targets) for one long sequence x (N, features): chunks of
    CHUNK_FRAMES run as one batch, each from a zero state WARMUP_FRAMES earlier."""
    n = len(x)
    if n <= CHUNK_FRAMES:
        return network.run(x[None])[0]
    starts = np.arange(0, n, CHUNK_FRAMES)
    span = CHUNK_FRAMES + WARMUP_FRAMES
    batch = np.zeros((len(starts), span, x.shape[1]))
    for i, s in enumerate(starts):
        lo = max(s - WARMUP_FRAMES, 0)
        piece = x[lo:s + CHUNK_FRAMES]
        batch[i, :len(piece)] = piece
    y = network.run(batch)
    out = np.empty((n, y.shape[2]))
    for i, s in enumerate(starts):
        skip = s - max(s - WARMUP_FRAMES, 0)
        stop = min(s + CHUNK_FRAMES, n)
        out[s:stop] = y[i, skip:skip + stop - s]
    return out


# --- model card and weights ------------------------------------------------------------

def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def expected_shapes(architecture):
    """{array name: shape} of the weights an architecture needs."""
    shapes = {}
    size = architecture['input_size']
    for k, units in enumerate(architecture['lstm_units']):
        shapes[f'lstm_{k}/kernel'] = (size, 4 * units)
        shapes[f'lstm_{k}/recurrent_kernel'] = (units, 4 * units)
        shapes[f'lstm_{k}/bias'] = (4 * units,)
        size = units
    shapes['dense/kernel'] = (size, architecture['output_size'])
    shapes['dense/bias'] = (architecture['output_size'],)
    return shapes


class LearnedModel:
    """A validated model: its card (dict), network and normalisation constants."""

    def __init__(self, card, network, path):
        self.card, self.network, self.path = card, network, path
        features, targets = card['features'], card['targets']
        self.feature_mean = np.array(features['mean'], dtype=float)
        self.feature_std = np.array(features['std'], dtype=float)
        self.feature_clip = float(features['clip'])
        self.target_scale = np.array(targets['scale'], dtype=float)
        spec = HYBRID_FEATURES if card['method'] == 'hybrid' else LSTM_FEATURES
        si = np.array([SI_PER_UNIT[unit] for _, unit in spec])
        self._si_scale = si / self.feature_std
        self._si_offset = self.feature_mean / self.feature_std

    def normalize(self, features):
        """Standardised, clipped network input of features (..., F) in the card's units."""
        z = (features - self.feature_mean) / self.feature_std
        return np.clip(z, -self.feature_clip, self.feature_clip)

    def normalize_si(self, features):
        """The same for one pose's features (F,) in SI units (m, rad, s): the unit
        conversion is folded into the standardisation (the per-pose hot path)."""
        z = features * self._si_scale
        z -= self._si_offset
        return np.clip(z, -self.feature_clip, self.feature_clip, out=z)


def _card_error(path, message):
    return ModelError(f'{path}: {message}')


def load_model(directory, method):
    """Load and validate models/<method>-style `directory` (model_card.json + weights).

    Raises ModelError naming the offending file when anything is missing, corrupt or
    incompatible (card format or version, method, checksum, array names or shapes,
    non-finite weights, Kalman configuration)."""
    directory = Path(directory)
    card_path = directory / CARD_FILE
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise _card_error(card_path, 'model card not found') from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _card_error(card_path, f'unreadable model card ({exc})') from None
    if not isinstance(card, dict) or card.get('format') != CARD_FORMAT:
        raise _card_error(card_path, f'not a {CARD_FORMAT} file')
    if card.get('card_version') != CARD_VERSION:
        raise _card_error(card_path, f'card version {card.get("card_version")!r} is not '
                          f'supported (this runtime reads version {CARD_VERSION})')
    if card.get('method') != method:
        raise _card_error(card_path, f'model is for method {card.get("method")!r}, '
                          f'not {method!r}')
    try:
        architecture = card['architecture']
        names = [name for name, _ in (HYBRID_FEATURES if method == 'hybrid'
                                      else LSTM_FEATURES)]
        if card['features']['names'] != names or architecture['input_size'] != len(names):
            raise _card_error(card_path, 'feature definition differs from this runtime')
        if architecture['output_size'] != len(TARGETS):
            raise _card_error(card_path, 'output size differs from this runtime')
        for key in ('mean', 'std'):
            values = np.asarray(card['features'][key], dtype=float)
            if values.shape != (len(names),) or not np.all(np.isfinite(values)):
                raise _card_error(card_path, f'features.{key} must be {len(names)} numbers')
        if not np.all(np.asarray(card['features']['std'], dtype=float) > 0):
            raise _card_error(card_path, 'features.std must be positive')
        scale = np.asarray(card['targets']['scale'], dtype=float)
        if scale.shape != (len(TARGETS),) or not np.all(np.isfinite(scale) & (scale > 0)):
            raise _card_error(card_path, f'targets.scale must be {len(TARGETS)} positive '
                              'numbers')
        float(card['features']['clip'])
        weights_path = directory / card['weights']['file']
        sha = card['weights']['sha256']
        shapes = expected_shapes(architecture)
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise _card_error(card_path, f'incomplete or malformed model card ({exc!r})') from None
    if method == 'hybrid':
        kalman_params(card, card_path)
    try:
        actual = sha256_of(weights_path)
    except OSError as exc:
        raise _card_error(weights_path, f'cannot read weights ({exc.strerror})') from None
    if actual != sha:
        raise _card_error(weights_path, f'checksum mismatch: sha256 {actual} but the model '
                          f'card expects {sha}')
    try:
        with np.load(weights_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # np.load raises many types on a corrupt archive
        raise _card_error(weights_path, f'corrupt weights file ({exc})') from None
    for name, shape in shapes.items():
        if name not in arrays:
            raise _card_error(weights_path, f'array {name!r} missing')
        if arrays[name].shape != shape:
            raise _card_error(weights_path, f'array {name!r} has shape {arrays[name].shape}, '
                              f'the model card needs {shape}')
        if not np.all(np.isfinite(arrays[name])):
            raise _card_error(weights_path, f'array {name!r} holds non-finite values')
    extra = sorted(set(arrays) - set(shapes))
    if extra:
        raise _card_error(weights_path, f'unexpected arrays {extra}')
    network = LstmNetwork(arrays, len(architecture['lstm_units']))
    return LearnedModel(card, network, directory)


def kalman_params(card, card_path='model card'):
    """The Kalman parameters stored in a hybrid model card, validated."""
    stored = card.get('kalman')
    if not isinstance(stored, dict) or set(stored) != set(KALMAN_PARAMS):
        raise _card_error(card_path, 'the "kalman" entry must give every Kalman parameter: '
                          + ', '.join(sorted(KALMAN_PARAMS)))
    try:
        return {k: KALMAN_PARAMS[k].coerce(k, v) for k, v in stored.items()}
    except ParameterError as exc:
        raise _card_error(card_path, f'Kalman configuration: {exc}') from None


def default_model_dir(method):
    from camstab_ros.share import share_dir
    return share_dir() / 'models' / method


# --- features shared by training and run time ------------------------------------------

def hybrid_features(meas_p, meas_q, est_p, est_v, est_q, est_rate, dt, restarted):
    """Hybrid features (N, 14) from per-pose arrays: measurement p (N, 3), q (N, 4); filter
    position, velocity (N, 3), orientation (N, 4), body angular rate (N, 3) rad/s; dt (N,)
    s; restarted (N,) bool."""
    q = _columns(est_q)
    residual = rotate(q, _columns(meas_p - est_p), inverse=True)
    rot = quat.log_map(quat.multiply(quat.conjugate(est_q), meas_q))
    velocity = rotate(q, _columns(est_v), inverse=True)
    return np.column_stack([np.column_stack(residual) * 1e3, np.degrees(rot),
                            np.column_stack(velocity), np.degrees(est_rate),
                            np.asarray(dt) * 1e3, np.asarray(restarted, dtype=float)])


def hybrid_targets(truth_p, truth_q, est_p, est_q):
    """Hybrid targets (N, 6): the truth relative to the Kalman estimate (mm, deg, body)."""
    correction = rotate(_columns(est_q), _columns(truth_p - est_p), inverse=True)
    rot = quat.log_map(quat.multiply(quat.conjugate(est_q), truth_q))
    return np.column_stack([np.column_stack(correction) * 1e3, np.degrees(rot)])


def lstm_features(t, p, q):
    """Raw-LSTM features (N, 7) of a take: each measurement's step from the previous one."""
    t, p, q = np.asarray(t, float), np.asarray(p, float), np.asarray(q, float)
    features = np.zeros((len(t), 7))
    if len(t) > 1:
        step = rotate(_columns(q[:-1]), _columns(np.diff(p, axis=0)), inverse=True)
        features[1:, :3] = np.column_stack(step) * 1e3
        features[1:, 3:6] = np.degrees(quat.log_map(quat.multiply(quat.conjugate(q[:-1]),
                                                                  q[1:])))
        features[1:, 6] = np.diff(t) * 1e3
    return features


def lstm_targets(truth_p, truth_q, p, q):
    """Raw-LSTM targets (N, 6): the truth relative to the measurement (mm, deg, body)."""
    return hybrid_targets(truth_p, truth_q, p, q)


def kalman_pass(params, t, p, q, stats=None, progress=None):
    """Run the forward Kalman filter over a take; returns per-pose arrays (est_p, est_v,
    est_q, est_rate, dt, restarted) for `hybrid_features` (dt 0 where the filter started
    afresh, as in the streaming path)."""
    kf = PoseKalmanFilter(params, stats if stats is not None else SmootherStats())
    n = len(t)
    est = np.empty((n, 2, 3))
    rate = np.empty((n, 3))
    est_q = np.empty((n, 4))
    restarted = np.zeros(n, dtype=bool)
    dt = np.zeros(n)
    rows = range(n)
    for k in (progress(rows) if progress else rows):
        kf.step(t[k], p[k], q[k])
        x = kf.x
        est[k] = x[POS, :2]
        rate[k] = x[ROT, 1]
        est_q[k] = kf.q
        restarted[k] = kf.restarted[0] or kf.restarted[1]
        if kf.F is not None:
            dt[k] = t[k] - t[k - 1]
    return est[:, 0], est[:, 1], est_q, rate, dt, restarted


# --- the smoothers ---------------------------------------------------------------------

def cap_corrections(correction, max_mm, max_deg):
    """Scale the position (mm) and rotation (deg) parts of corrections (..., 6) down to
    their caps; non-finite rows become 0. Returns (capped, non-finite mask)."""
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

    def __init__(self, **params):
        self.model = None
        self.model_status = ''
        self.nonfinite_outputs = 0
        self._fallback = None
        super().__init__(**params)

    @property
    def fallback(self):
        """True when the model could not be loaded and `kalman` runs instead."""
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
        """One LSTM step on one pose's features in SI units -> the capped correction
        (6 floats, mm and deg); a non-finite output gives 0 and resets the state."""
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
    shift = rotate(_columns(base_q), _columns(correction[:, :3] * 1e-3))
    q = quat.multiply(base_q, quat.exp_map(np.radians(correction[:, 3:])))
    return base_p + np.column_stack(shift), quat.make_continuous(q)


@register
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
        c = self._network_step(features)
        shift = rotate(qf, (c[0] * 1e-3, c[1] * 1e-3, c[2] * 1e-3))
        rot = (math.radians(c[3]), math.radians(c[4]), math.radians(c[5]))
        return Estimate(t, est + shift, np.array(quat.compose_exp(qf, rot)))

    def _model_smooth(self, t, p, q, progress):
        est_p, est_v, est_q, rate, dt, restarted = kalman_pass(
            kalman_params(self.model.card), t, p, q, self.stats, progress)
        features = hybrid_features(p, q, est_p, est_v, est_q, rate, dt, restarted)
        out_p, out_q = _apply(est_p, est_q, self._network_batch(features))
        return t, out_p, out_q


@register
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
        c = self._network_step(features)
        shift = rotate(q, (c[0] * 1e-3, c[1] * 1e-3, c[2] * 1e-3))
        rot = (math.radians(c[3]), math.radians(c[4]), math.radians(c[5]))
        return Estimate(t, position + shift, np.array(quat.compose_exp(q, rot)))

    def _model_smooth(self, t, p, q, progress):
        out_p, out_q = _apply(p, q, self._network_batch(lstm_features(t, p, q)))
        return t, out_p, out_q

