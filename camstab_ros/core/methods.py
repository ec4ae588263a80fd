"""
The registry of smoothing methods: every method by name, in the order tables list them.

An explicit table (baseline, classical, Kalman family, learned): importing it imports
every method module, and no method module imports it.
"""
from camstab_ros.core.classical import ExponentialMovingAverage, OneEuro, Passthrough
from camstab_ros.core.imm import Imm
from camstab_ros.core.kalman import FixedLagKalman, Kalman, RauchTungStriebel
from camstab_ros.core.learned import HybridSmoother, LstmSmoother
from camstab_ros.core.params import ParameterError


METHODS = {cls.name: cls for cls in (
    Passthrough, ExponentialMovingAverage, OneEuro, Kalman, Imm, FixedLagKalman,
    RauchTungStriebel, LstmSmoother, HybridSmoother)}


def list_methods():
    """Every method name, in table order."""
    return tuple(METHODS)


def causal_methods():
    """Return the methods that can run on a live stream (no look-ahead beyond delay_frames)."""
    return tuple(name for name, cls in METHODS.items() if cls.causal)


def smoother_class(name):
    """Return the Smoother subclass of a method; ParameterError listing the methods if unknown."""
    try:
        return METHODS[name]
    except KeyError:
        raise ParameterError(
            f'unknown method {name!r}; available: {", ".join(METHODS)}') from None


def make_smoother(name, **params):
    """Create the smoother of method `name`; raises ParameterError on bad input."""
    return smoother_class(name)(**params)
