"""
The learned methods' model: a NumPy LSTM run from exported weights, and its model card.

A model directory holds `model_card.json` (format, version, method, architecture, feature
and output definitions with the features' normalisation, the configuration of the Kalman
filter the model runs beside, the weights file and its sha256) and the weights as an
`.npz` (no pickle). `load_model()` validates all of it and raises ModelError naming the
offending file.

`LstmNetwork.step()` runs one time step with the state carried (O(1) work per pose);
`run_chunked()` runs a whole take as a batch of chunks of CHUNK_FRAMES, each started
WARMUP_FRAMES early from a zero state.
"""
import hashlib
import json
from pathlib import Path
import stat
import zipfile

from camstab_ros.core.kalman import KALMAN_PARAMS
from camstab_ros.core.learned_features import ACTIVATIONS, FEATURES, OUTPUTS
from camstab_ros.core.params import ParameterError
from camstab_ros.share import share_dir
import numpy as np


CARD_FORMAT = 'camstab-model-card'
CARD_VERSION = 2
CARD_FILE = 'model_card.json'
CHUNK_FRAMES = 8192
# Long enough for the shipped networks' state to forget its start: after 1024 frames the
# hybrid of 2026-12-03 was still 0.12 mm from streaming on a 120 Hz handheld take, after
# 2048 0.001 mm (test_learned).
WARMUP_FRAMES = 2048
# Largest model card and weights file read (a real card is ~10 kB, weights ~100 kB).
MAX_CARD_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 64 << 20
# Room for the header of one .npy array beyond its data.
NPY_HEADER_BYTES = 4096
# Time steps per input projection in the batched LSTM (bounds temporary memory).
PROJECTION_STEPS = 512


class ModelError(Exception):
    """A model file that is missing, corrupt or incompatible with this runtime."""


class LstmNetwork:
    """
    Stacked Keras-style LSTM layers (gates i, f, c, o; sigmoid and tanh) and a linear output layer.

    Built from arrays named lstm_<k>/kernel, lstm_<k>/recurrent_kernel, lstm_<k>/bias,
    dense/kernel, dense/bias.
    """

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
        """One time step: x (features,) or (batch, features) -> (output, new state)."""
        new_state = []
        for (_, _, b, wu), (h, c), scale, offset in zip(
                self.layers, state, self._gate_scale, self._gate_offset):
            n = h.shape[-1]
            z = np.concatenate([x, h], axis=-1) @ wu
            z += b
            g = np.tanh(z * scale) * scale + offset
            c = g[..., n:2 * n] * c + g[..., :n] * g[..., 2 * n:3 * n]
            x = g[..., 3 * n:] * np.tanh(c)
            new_state.append((x, c))
        return x @ self.dense_w + self.dense_b, new_state

    def run(self, x, state=None):
        """
        Run a batch of sequences x (batch, steps, features) from `state` (zero by default).

        Returns the outputs (batch, steps, outputs).
        """
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


def chunks(n):
    """
    Cut a sequence of n steps into chunks: return their (first, start, stop).

    Each chunk's output covers [start, stop); it runs from a zero state at `first`, up to
    WARMUP_FRAMES before `start`, and spans at most CHUNK_FRAMES + WARMUP_FRAMES steps.
    """
    if n <= CHUNK_FRAMES:
        return [(0, 0, n)]
    return [(max(s - WARMUP_FRAMES, 0), s, min(s + CHUNK_FRAMES, n))
            for s in range(0, n, CHUNK_FRAMES)]


def chunked(x, spans, fill=0.0):
    """Return x (N, ...) cut into the chunks `spans` of `chunks()`: (chunks, span, ...)."""
    size = max(stop - first for first, _, stop in spans)
    batch = np.full((len(spans), size) + x.shape[1:], fill, dtype=x.dtype)
    for i, (first, _, stop) in enumerate(spans):
        batch[i, :stop - first] = x[first:stop]
    return batch


def unchunked(y, spans):
    """Return the outputs (N, ...) of chunked outputs y (chunks, span, ...)."""
    out = np.empty((spans[-1][2],) + y.shape[2:])
    for i, (first, start, stop) in enumerate(spans):
        out[start:stop] = y[i, start - first:stop - first]
    return out


def run_chunked(network, x):
    """
    Return the network outputs (N, outputs) for one long sequence x (N, features).

    Chunks of CHUNK_FRAMES run as one batch, each from a zero state WARMUP_FRAMES earlier.
    """
    spans = chunks(len(x))
    return unchunked(network.run(chunked(x, spans)), spans)


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
        features = card['features']
        self.feature_mean = np.array(features['mean'], dtype=float)
        self.feature_std = np.array(features['std'], dtype=float)
        self.feature_clip = float(features['clip'])
        self._inverse_std = 1.0 / self.feature_std

    def normalize(self, features):
        """Standardised, clipped network input of features (..., F)."""
        z = (features - self.feature_mean) * self._inverse_std
        return np.clip(z, -self.feature_clip, self.feature_clip, out=z)


def _card_error(path, message):
    return ModelError(f'{path}: {message}')


def load_model(directory, method):
    """
    Load and validate models/<method>-style `directory` (model_card.json + weights).

    Raises ModelError naming the offending file when anything is missing, corrupt,
    oversized or incompatible (card format or version, method, checksum, array names or
    shapes, non-finite weights or normalisation, Kalman configuration), and for any other
    failure to read the files: no error of a model file escapes as another type.
    """
    directory = Path(directory)
    try:
        return _load_model(directory, method)
    except ModelError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RecursionError, EOFError,
            zipfile.BadZipFile, MemoryError) as exc:
        raise ModelError(f'{directory}: cannot load the model ({type(exc).__name__}: '
                         f'{exc})') from None


def _regular_file(path, limit):
    """Check that path is a regular file of at most limit bytes (ModelError if not)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _card_error(path, 'not found') from None
    except OSError as exc:
        raise _card_error(path, f'cannot read ({exc.strerror})') from None
    if not stat.S_ISREG(info.st_mode):
        raise _card_error(path, 'not a regular file')
    if info.st_size > limit:
        raise _card_error(path, f'{info.st_size} bytes, more than the {limit} a model file '
                          'may have')


def _read_card(card_path):
    _regular_file(card_path, MAX_CARD_BYTES)
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _card_error(card_path, f'unreadable model card ({type(exc).__name__})') from None
    if not isinstance(card, dict) or card.get('format') != CARD_FORMAT:
        raise _card_error(card_path, f'not a {CARD_FORMAT} file')
    return card


def _weights_path(directory, card_path, name):
    """Return the weights file a card names: a plain file inside the model directory."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or '..' in Path(
            name).parts:
        raise _card_error(card_path, f'weights file {name!r} must be a relative path inside '
                          'the model directory')
    path = directory / name
    if directory.resolve() not in path.resolve().parents:
        raise _card_error(card_path, f'weights file {name!r} leads outside the model '
                          'directory')
    _regular_file(path, MAX_WEIGHTS_BYTES)
    return path


def _load_model(directory, method):
    card_path = directory / CARD_FILE
    card = _read_card(card_path)
    if card.get('card_version') != CARD_VERSION:
        raise _card_error(card_path, f'card version {card.get("card_version")!r} is not '
                          f'supported (this runtime reads version {CARD_VERSION})')
    if card.get('method') != method:
        raise _card_error(card_path, f'model is for method {card.get("method")!r}, '
                          f'not {method!r}')
    try:
        architecture = card['architecture']
        names = [name for name, _ in FEATURES[method]]
        if card['features']['names'] != names or architecture['input_size'] != len(names):
            raise _card_error(card_path, 'feature definition differs from this runtime')
        outputs = [name for name, _ in OUTPUTS[method]]
        if (card['outputs']['names'] != outputs or architecture['output_size'] != len(outputs)
                or card['outputs']['activation'] != ACTIVATIONS[method]):
            raise _card_error(card_path, 'output definition differs from this runtime')
        for key in ('mean', 'std'):
            values = np.asarray(card['features'][key], dtype=float)
            if values.shape != (len(names),) or not np.all(np.isfinite(values)):
                raise _card_error(card_path, f'features.{key} must be {len(names)} numbers')
        if not np.all(np.asarray(card['features']['std'], dtype=float) > 0):
            raise _card_error(card_path, 'features.std must be positive')
        clip = float(card['features']['clip'])
        if not (np.isfinite(clip) and clip > 0.0):
            raise _card_error(card_path, 'features.clip must be a positive number')
        sha = card['weights']['sha256']
        shapes = expected_shapes(architecture)
        file_name = card['weights']['file']
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise _card_error(card_path, f'incomplete or malformed model card ({exc!r})') from None
    kalman_params(card, card_path)
    weights_path = _weights_path(directory, card_path, file_name)
    actual = sha256_of(weights_path)
    if actual != sha:
        raise _card_error(weights_path, f'checksum mismatch: sha256 {actual} but the model '
                          f'card expects {sha}')
    arrays = _read_arrays(weights_path, shapes)
    network = LstmNetwork(arrays, len(architecture['lstm_units']))
    return LearnedModel(card, network, directory)


def _read_arrays(weights_path, shapes):
    """Read exactly the arrays of shapes, checking names and sizes before unpacking any."""
    try:
        with np.load(weights_path, allow_pickle=False) as npz:
            extra = sorted(set(npz.files) - set(shapes))
            if extra:
                raise _card_error(weights_path, f'unexpected arrays {extra}')
            arrays = {}
            for name, shape in shapes.items():
                if name not in npz.files:
                    raise _card_error(weights_path, f'array {name!r} missing')
                size = npz.zip.getinfo(f'{name}.npy').file_size
                if size > int(np.prod(shape)) * 8 + NPY_HEADER_BYTES:
                    raise _card_error(weights_path, f'array {name!r} is {size} bytes, more '
                                      f'than shape {shape} needs')
                arrays[name] = npz[name]
    except ModelError:
        raise
    except Exception as exc:  # noqa: B902 - np.load raises many types on a corrupt archive
        raise _card_error(weights_path, f'corrupt weights file ({exc})') from None
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            raise _card_error(weights_path, f'array {name!r} has shape {arrays[name].shape}, '
                              f'the model card needs {shape}')
        if not np.all(np.isfinite(arrays[name])):
            raise _card_error(weights_path, f'array {name!r} holds non-finite values')
    return arrays


def kalman_params(card, card_path='model card'):
    """Return the parameters of the Kalman filter a model card runs beside, validated."""
    stored = card.get('kalman')
    if not isinstance(stored, dict) or set(stored) != set(KALMAN_PARAMS):
        raise _card_error(card_path, 'the "kalman" entry must give every Kalman parameter: '
                          + ', '.join(sorted(KALMAN_PARAMS)))
    try:
        return {k: KALMAN_PARAMS[k].coerce(k, v) for k, v in stored.items()}
    except ParameterError as exc:
        raise _card_error(card_path, f'Kalman configuration: {exc}') from None


def default_model_dir(method):
    """Return the installed models/<method> directory."""
    return share_dir() / 'models' / method
