"""What the `camstab` sub-commands share: the usage error, tables, JSON, parsed options."""
import argparse
import json
import math
from pathlib import Path

from camstab_ros.core.methods import smoother_class
from camstab_ros.core.params import ParameterError


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def format_table(rows, columns, first='method'):
    """Format {row name: {column: value}} as a plain-text table, numbers right-aligned."""
    def cell(value):
        if isinstance(value, str):
            return value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return 'n/a'
        return f'{value:.3f}' if abs(value) < 1000 else f'{value:.0f}'
    header = [first] + list(columns)
    body = [[name] + [cell(values.get(c)) for c in columns] for name, values in rows.items()]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ['  '.join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append('  '.join('-' * w for w in widths))
    for r in body:
        lines.append('  '.join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))))
    return '\n'.join(lines)


def write_json(path, data):
    """Write data as indented, valid JSON: non-finite floats become null."""
    def clean(value):
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, float) or type(value).__name__.startswith('float'):
            value = float(value)
            return value if math.isfinite(value) else None
        return value
    Path(path).write_text(json.dumps(clean(data), indent=2, default=str, allow_nan=False)
                          + '\n')


def methods_arg(text):
    """Parse --methods (the argparse type): comma-separated method names, each checked."""
    methods = [m.strip() for m in text.split(',') if m.strip()]
    for method in methods:
        try:
            smoother_class(method)
        except ParameterError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return methods


def add_view_arguments(parser):
    """Add --fov-deg, --width-px and --wall-m: the view of the screen metrics."""
    from camstab_ros.core.metrics import DEFAULT_VIEW
    parser.add_argument('--fov-deg', type=float, default=DEFAULT_VIEW.fov_deg,
                        help='horizontal field of view of the screen metrics in degrees '
                        f'(default {DEFAULT_VIEW.fov_deg:g}: a 35 mm lens on Super 35)')
    parser.add_argument('--width-px', type=float, default=DEFAULT_VIEW.width_px,
                        help=f'frame width in pixels (default {DEFAULT_VIEW.width_px:g}: 4K)')
    parser.add_argument('--wall-m', type=float, default=DEFAULT_VIEW.wall_m,
                        help='distance of the virtual wall in metres (default '
                        f'{DEFAULT_VIEW.wall_m:g})')


def view_of(args):
    """Return the ScreenView of parsed --fov-deg/--width-px/--wall-m (UsageError)."""
    from camstab_ros.core.metrics import ScreenView
    try:
        return ScreenView(args.width_px, args.fov_deg, args.wall_m)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_params(pairs):
    """--param KEY=VALUE options -> {key: value}."""
    params = {}
    for pair in pairs or ():
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise UsageError(f'--param expects KEY=VALUE, got {pair!r}')
        params[key.strip()] = value.strip()
    return params
