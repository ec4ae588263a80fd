"""
Trajectory files: TUM text and CSV, read strictly and written atomically.

TUM text is `t x y z qx qy qz qw` with `#` comments; CSV has the header
`t,x,y,z,qx,qy,qz,qw`. Reading is strict (a malformed line is an error naming the file
and line); writing is atomic (a temporary file renamed into place), so a failed command
never leaves a half-written output.
"""
import csv
from dataclasses import dataclass
import os
from pathlib import Path
import tempfile

import numpy as np


CSV_HEADER = ('t', 'x', 'y', 'z', 'qx', 'qy', 'qz', 'qw')
TUM_SUFFIXES = ('.tum', '.txt')


class TrajectoryError(ValueError):
    """A trajectory file that cannot be read or written as asked."""


@dataclass
class Trajectory:
    t: np.ndarray   # (N,) seconds
    p: np.ndarray   # (N, 3) metres
    q: np.ndarray   # (N, 4) x, y, z, w (as stored: not validated or normalised here)

    def __len__(self):
        return len(self.t)


def file_format(path):
    suffix = Path(path).suffix.lower()
    if suffix in TUM_SUFFIXES:
        return 'tum'
    if suffix == '.csv':
        return 'csv'
    raise TrajectoryError(
        f'{path}: unknown trajectory format {suffix!r}; use .tum, .txt or .csv')


def _parse_rows(path, rows):
    values = []
    for line_no, fields in rows:
        if len(fields) != 8:
            raise TrajectoryError(
                f'{path}:{line_no}: expected 8 columns (t x y z qx qy qz qw), '
                f'found {len(fields)}')
        try:
            values.append([float(f) for f in fields])
        except ValueError:
            raise TrajectoryError(f'{path}:{line_no}: not a number in {fields!r}') from None
    if not values:
        raise TrajectoryError(f'{path}: no poses in file')
    data = np.array(values)
    return Trajectory(data[:, 0], data[:, 1:4], data[:, 4:8])


def read_trajectory(path):
    """Read a TUM or CSV trajectory; raises TrajectoryError on any malformed content."""
    fmt = file_format(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TrajectoryError(f'{path}: cannot read: {exc.strerror}') from None
    except UnicodeDecodeError:
        raise TrajectoryError(f'{path}: not a text file') from None
    lines = text.splitlines()
    if fmt == 'tum':
        rows = [(i, line.split()) for i, line in enumerate(lines, 1)
                if line.strip() and not line.lstrip().startswith('#')]
    else:
        records = [(i, [f.strip() for f in fields])
                   for i, fields in enumerate(csv.reader(lines), 1) if fields]
        if not records:
            raise TrajectoryError(f'{path}: empty file')
        header_line, header = records[0]
        if tuple(header) != CSV_HEADER:
            raise TrajectoryError(
                f'{path}:{header_line}: expected the header {",".join(CSV_HEADER)}')
        rows = records[1:]
    return _parse_rows(path, rows)


def write_trajectory(path, t, p, q, comment=None):
    """Write a TUM or CSV trajectory atomically (temporary file, then rename)."""
    fmt = file_format(path)
    data = np.column_stack([t, p, q])
    path = Path(path)
    if not path.parent.is_dir():
        raise TrajectoryError(f'{path}: directory {path.parent} does not exist')
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.part')
    try:
        with os.fdopen(fd, 'w', newline='') as f:
            if fmt == 'tum':
                if comment:
                    f.write(f'# {comment}\n')
                f.write('# t x y z qx qy qz qw\n')
            else:
                f.write(','.join(CSV_HEADER) + '\n')
            sep = ' ' if fmt == 'tum' else ','
            np.savetxt(f, data, fmt='%.9f', delimiter=sep)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
