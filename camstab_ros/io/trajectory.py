"""
Trajectory files: TUM text and CSV, read strictly and written atomically.

TUM text is `t x y z qx qy qz qw` with `#` comments; CSV has the header
`t,x,y,z,qx,qy,qz,qw`. OpenTrackIO recordings (`.jsonl`: JSON Lines, `.cbor`: a CBOR
sequence; see `io.opentrackio.read_samples`) are read too: the camera pose of each
sample, timed by its sampleTimestamp (else its index and sampleRate). Reading is strict
(a malformed line is an error naming the file and line); writing is atomic (a temporary
file renamed into place), so a failed command never leaves a half-written output.
"""
from array import array
import csv
from dataclasses import dataclass
import os
from pathlib import Path
import tempfile

from camstab_ros.io import opentrackio
import numpy as np


CSV_HEADER = ('t', 'x', 'y', 'z', 'qx', 'qy', 'qz', 'qw')
TUM_SUFFIXES = ('.tum', '.txt')
OPENTRACKIO_SUFFIXES = ('.jsonl', '.cbor')


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
    if suffix in OPENTRACKIO_SUFFIXES:
        return 'opentrackio'
    raise TrajectoryError(
        f'{path}: unknown trajectory format {suffix!r}; use .tum, .txt, .csv or an '
        'OpenTrackIO recording (.jsonl, .cbor)')


def _rows(path, fmt, handle):
    """Yield (line number, fields) of the pose rows of an open file."""
    if fmt == 'tum':
        for line_no, line in enumerate(handle, 1):
            stripped = line.strip()
            if stripped and not stripped.startswith('#'):
                yield line_no, stripped.split()
        return
    reader = csv.reader(handle)
    header = None
    try:
        for fields in reader:
            if not fields:
                continue
            fields = [f.strip() for f in fields]
            if header is None:
                header = fields
                if tuple(header) != CSV_HEADER:
                    raise TrajectoryError(f'{path}:{reader.line_num}: expected the header '
                                          f'{",".join(CSV_HEADER)}')
                continue
            yield reader.line_num, fields
    except csv.Error as exc:
        raise TrajectoryError(f'{path}:{reader.line_num}: malformed CSV ({exc})') from None
    if header is None:
        raise TrajectoryError(f'{path}: empty file')


def read_trajectory(path):
    """
    Read a TUM or CSV trajectory; raises TrajectoryError on any malformed content.

    The file is read line by line into one array of doubles (about 64 bytes a pose, so a
    one-hour 240 Hz take needs some 60 MB, not the text's lists of Python floats).
    """
    fmt = file_format(path)
    if fmt == 'opentrackio':
        return _read_opentrackio(path)
    values = array('d')
    try:
        with open(path, encoding='utf-8', newline='' if fmt == 'csv' else None) as handle:
            for line_no, fields in _rows(path, fmt, handle):
                if len(fields) != 8:
                    raise TrajectoryError(
                        f'{path}:{line_no}: expected 8 columns (t x y z qx qy qz qw), '
                        f'found {len(fields)}')
                try:
                    values.extend(float(f) for f in fields)
                except ValueError:
                    raise TrajectoryError(
                        f'{path}:{line_no}: not a number in {" ".join(fields)[:200]!r}'
                    ) from None
    except OSError as exc:
        raise TrajectoryError(f'{path}: cannot read: {exc.strerror}') from None
    except UnicodeDecodeError:
        raise TrajectoryError(f'{path}: not a text file') from None
    if not values:
        raise TrajectoryError(f'{path}: no poses in file')
    data = np.frombuffer(values, dtype=float).reshape(-1, 8)
    return Trajectory(data[:, 0], data[:, 1:4], data[:, 4:8])


def _read_opentrackio(path):
    try:
        samples = opentrackio.read_samples(path)
        t = np.array(opentrackio.sample_times(samples))
    except opentrackio.OpenTrackIOError as exc:
        raise TrajectoryError(f'{path}: {exc}' if str(path) not in str(exc) else str(exc)
                              ) from None
    poses = [opentrackio.sample_pose(s) for s in samples]
    return Trajectory(t, np.array([p for p, _ in poses]), np.array([q for _, q in poses]))


def write_trajectory(path, t, p, q, comment=None):
    """
    Write a TUM or CSV trajectory atomically (temporary file, then rename).

    The file gets the mode a plain open() would give (0666 less the umask). A symbolic
    link at path is not followed or replaced, and a failed write leaves nothing behind
    (nor does Ctrl-C or SIGTERM, which the CLI turns into an exception). TrajectoryError
    says why a file cannot be written.
    """
    fmt = file_format(path)
    if fmt == 'opentrackio':
        raise TrajectoryError(f'{path}: OpenTrackIO recordings are read, not written; '
                              'write .tum, .txt or .csv')
    data = np.column_stack([t, p, q])
    path = Path(path)
    if path.is_symlink():
        raise TrajectoryError(f'{path}: is a symbolic link; not replaced (remove it or '
                              'choose another path)')
    if not path.parent.is_dir():
        raise TrajectoryError(f'{path}: directory {path.parent} does not exist')
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.part')
    except OSError as exc:
        raise TrajectoryError(f'{path}: cannot write: {exc.strerror}') from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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
    except OSError as exc:
        os.unlink(tmp)
        raise TrajectoryError(f'{path}: cannot write: {exc.strerror}') from None
    except BaseException:
        os.unlink(tmp)
        raise


def _umask():
    """Return the process umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
