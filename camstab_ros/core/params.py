"""
The one parameter system: a `ParamSpec` per parameter of every smoother, node and tool.

A spec holds the default, a description, the unit and the valid range or choices. The same
specs are rendered into ROS parameter descriptors (`nodes/scaffolding.py`),
`config/params.yaml` (`tools/params_yaml.py`) and `camstab methods`, and `coerce()` is the
one place a value (possibly a string from the command line) is checked.
"""
from dataclasses import dataclass
import math


class ParameterError(ValueError):
    """A parameter that is unknown or outside its valid range."""


@dataclass(frozen=True)
class ParamSpec:
    """
    A parameter: default, valid range (inclusive) or choices, unit and meaning.

    A list default makes a string-array parameter. `check`, when given, is called with
    the converted value (before the choices are checked, so it can say why a value is
    not among them) and raises ValueError with the reason when the value is invalid.
    `auto`: the number 0 (or the word 'auto') means "measured online" and is valid
    outside the range; the parameter stays a number for ROS. `any_type`: a text parameter
    that also takes a number (`output_rate: 25`), read as its text.
    """

    default: object
    description: str
    unit: str = ''
    low: float = None
    high: float = None
    choices: tuple = ()
    check: object = None
    auto: bool = False
    any_type: bool = False

    def describe_range(self):
        """Describe the valid values in words, for error messages and descriptors."""
        if self.choices:
            return 'one of ' + ', '.join(str(c) for c in self.choices)
        if isinstance(self.default, bool):
            return 'true or false'
        if isinstance(self.default, (list, tuple)):
            return 'a list of strings'
        if self.low is None or self.high is None:
            return 'any text' if isinstance(self.default, str) else 'any number'
        span = f'{self.low:g} .. {self.high:g}' + (f' {self.unit}' if self.unit else '')
        return f"'auto' (0: measured online) or {span}" if self.auto else span

    def coerce(self, name, value):
        """Convert and check a value; ParameterError naming the parameter if invalid."""
        try:
            value = self._convert(value)
        except (TypeError, ValueError):
            raise ParameterError(
                f'parameter {name!r}: cannot use {value!r}; valid: {self.describe_range()}'
            ) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not (
                self.auto and value == 0):
            if not math.isfinite(value) or (self.low is not None and value < self.low) or (
                    self.high is not None and value > self.high):
                raise ParameterError(
                    f'parameter {name!r}: {value!r} is out of range; '
                    f'valid: {self.describe_range()}')
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as exc:
                raise ParameterError(f'parameter {name!r}: {exc}') from None
        if self.choices and value not in self.choices:
            raise ParameterError(
                f'parameter {name!r}: {value!r} is not valid; valid: {self.describe_range()}')
        return value

    def _convert(self, value):
        default = self.default
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ('true', 'false', '1', '0'):
                    raise ValueError(value)
                return value.lower() in ('true', '1')
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            if self.auto and isinstance(value, str) and value.strip().lower() == 'auto':
                return 0.0
            return float(value)
        if isinstance(default, (list, tuple)):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(value)
            return list(value)
        return str(value)


def coerce_all(specs, values):
    """{name: coerced value} of values for specs; ParameterError on an unknown name."""
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ParameterError(f'unknown parameter {unknown[0]!r}; valid parameters: '
                             + (', '.join(sorted(specs)) or 'none'))
    return {name: specs[name].coerce(name, value) for name, value in values.items()}
