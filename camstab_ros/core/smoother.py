"""The one smoother interface and the registry that creates smoothers by name.

Every method (classical or learned) subclasses `Smoother`:
- `reset()` forgets all state;
- `update(t, position, quaternion)` takes one measurement and returns an `Estimate`, or
  None while a delayed method (fixed-lag, offline) has nothing to emit yet;
- `flush()` returns the estimates still held back at the end of a take;
- `smooth(t, p, q)` processes a whole take and equals feeding `update()` pose by pose
  followed by `flush()`.
Inputs are validated before they reach a smoother (see `validation`); a smoother only
renormalises the quaternion and keeps it in the hemisphere of the previous one.
"""
import math
from dataclasses import dataclass

import numpy as np


class ParameterError(ValueError):
    """A smoother parameter that is unknown or outside its valid range."""


@dataclass(frozen=True)
class ParamSpec:
    """A tunable parameter: default, valid range (inclusive) or choices, unit and meaning."""

    default: object
    description: str
    unit: str = ''
    low: float = None
    high: float = None
    choices: tuple = ()

    def describe_range(self):
        if self.choices:
            return 'one of ' + ', '.join(str(c) for c in self.choices)
        if isinstance(self.default, bool):
            return 'true or false'
        return f'{self.low} .. {self.high}' + (f' {self.unit}' if self.unit else '')

    def coerce(self, name, value):
        """Convert value (possibly a string from the command line) and check its range."""
        try:
            if isinstance(self.default, bool):
                if isinstance(value, str):
                    if value.lower() not in ('true', 'false', '1', '0'):
                        raise ValueError(value)
                    value = value.lower() in ('true', '1')
                value = bool(value)
            elif isinstance(self.default, int):
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                value = int(value)
            elif isinstance(self.default, float):
                value = float(value)
            else:
                value = str(value)
        except (TypeError, ValueError):
            raise ParameterError(
                f'parameter {name!r}: cannot use {value!r}; valid: {self.describe_range()}'
            ) from None
        if self.choices and value not in self.choices:
            raise ParameterError(
                f'parameter {name!r}: {value!r} is not valid; valid: {self.describe_range()}')
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not np.isfinite(value) or (self.low is not None and value < self.low) or (
                    self.high is not None and value > self.high):
                raise ParameterError(
                    f'parameter {name!r}: {value!r} is out of range; '
                    f'valid: {self.describe_range()}')
        return value


@dataclass
class Estimate:
    """A smoothed pose at time t (seconds); covariance is 6x6 over (x, y, z, rx, ry, rz)."""

    t: float
    position: np.ndarray
    quaternion: np.ndarray
    covariance: np.ndarray = None


@dataclass
class SmootherStats:
    """Events a smoother counts for diagnostics."""

    outliers: int = 0
    resets: int = 0
    coasted: int = 0

    def as_dict(self):
        return dict(self.__dict__)


class Smoother:
    """Base class: subclasses set `name`, `PARAMS` and implement `_reset` and `_update`."""

    name = ''
    causal = True
    description = ''
    PARAMS = {}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            valid = ', '.join(sorted(self.PARAMS)) or 'none'
            raise ParameterError(
                f'{self.name}: unknown parameter {unknown[0]!r}; valid parameters: {valid}')
        self.params = {key: spec.default for key, spec in self.PARAMS.items()}
        for key, value in params.items():
            self.params[key] = self.PARAMS[key].coerce(key, value)
        self.stats = SmootherStats()
        self._last_q = None
        self._reset()

    @property
    def delay_frames(self):
        """How many frames late the estimates come out (0 for causal filters)."""
        return 0

    def reset(self):
        self._last_q = None
        self._reset()

    def update(self, t, position, quaternion):
        # Scalar arithmetic on one 4-vector: several times cheaper than the array helpers
        # in `quaternion` on this per-pose hot path.
        q = np.asarray(quaternion, dtype=float)
        norm = math.sqrt(float(q @ q))
        if not norm > 1e-9 or not math.isfinite(norm):
            raise ValueError('zero-length or non-finite quaternion')
        q = q / norm
        if self._last_q is not None and float(q @ self._last_q) < 0.0:
            q = -q
        self._last_q = q
        return self._update(float(t), np.asarray(position, dtype=float), q)

    def flush(self):
        return []

    def smooth(self, t, p, q, progress=None):
        """Smooth a whole take: arrays t (N,), p (N, 3), q (N, 4) -> the same shapes.

        progress: optional wrapper for the row iterator (e.g. a tqdm progress bar).
        """
        rows = zip(t, p, q)
        estimates = [self.update(*row) for row in (progress(rows) if progress else rows)]
        estimates = [e for e in estimates if e is not None]
        estimates += self.flush()
        return stack(estimates)

    def _reset(self):
        raise NotImplementedError

    def _update(self, t, position, quaternion):
        raise NotImplementedError


def stack(estimates):
    """Estimates -> arrays (t (N,), p (N, 3), q (N, 4))."""
    if not estimates:
        return np.zeros(0), np.zeros((0, 3)), np.zeros((0, 4))
    return (np.array([e.t for e in estimates]),
            np.array([e.position for e in estimates]),
            np.array([e.quaternion for e in estimates]))


_REGISTRY = {}


def register(cls):
    """Class decorator: make a Smoother subclass creatable by its name."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_methods():
    # Imported here so that each method module can import this one.
    from camstab_ros.core import classical, kalman, learned  # noqa: F401


def smoother_class(name):
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ParameterError(
            f'unknown method {name!r}; available: {", ".join(list_methods())}') from None


def make_smoother(name, **params):
    """Create the smoother registered as `name`; raises ParameterError on bad input."""
    return smoother_class(name)(**params)


# How tables list the methods: baseline, classical, Kalman family, learned.
METHOD_ORDER = ('passthrough', 'ema', 'one_euro', 'kalman', 'fixed_lag', 'rts', 'lstm',
                'hybrid')


def list_methods():
    """Registered method names in METHOD_ORDER (others after them, by name)."""
    _load_builtin_methods()
    return sorted(_REGISTRY, key=lambda name: (
        METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER), name))
