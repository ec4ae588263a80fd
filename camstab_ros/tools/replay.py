"""
`camstab replay`: a stand-in tracker sending a recording over UDP as FreeD or OpenTrackIO.

Formats: `f4` (a Mo-Sys F4 take; timing from its timecode and frame rate), `tum` (a TUM
or CSV trajectory; timing from its timestamps), `freed` (raw D1 messages back to back,
as captured from the wire; timing from --frame-rate) and `opentrackio` (samples as JSON
Lines or a CBOR sequence; timing from their sampleTimestamps, else their sampleRate).
`--protocol` is what goes out: FreeD D1 (default) or OpenTrackIO (an OpenTrackIO
recording is sent as recorded; the others become samples as `tracking_bridge` makes
them). The whole file is read and encoded before the first datagram leaves, so a bad file
sends nothing.
"""
from pathlib import Path
import time

from camstab_ros.io import freed, opentrackio
from camstab_ros.io.mosys_f4 import f4_to_freed, F4Error, read_f4
from camstab_ros.io.tracking_udp import PROTOCOLS, TrackingEncoder
from camstab_ros.io.trajectory import read_trajectory, TrajectoryError
from camstab_ros.io.udp import parse_host_port, UdpError, UdpSender
from camstab_ros.tools.common import UsageError


FORMATS = ('f4', 'tum', 'freed', 'opentrackio')
DEFAULT_FRAME_RATE = 60.0


class ReplayError(ValueError):
    """A recording that cannot be replayed."""


def _encode_packet(encoder, packet):
    position, quaternion = freed.packet_to_pose(packet)
    return encoder.encode(position, quaternion, packet)


def _f4_frames(path, encoder):
    take = read_f4(path)
    frames = []
    for index, packet in enumerate(take):
        try:
            data = _encode_packet(encoder, f4_to_freed(packet))
        except (F4Error, freed.FreeDError, ValueError) as exc:
            raise ReplayError(f'{path}: packet {index}: {exc}') from None
        tc, rate = packet.timecode, packet.frame_rate
        if tc is None or rate is None:
            raise ReplayError(f'{path}: packet {index} has no timecode: cannot time it')
        frame = ((tc.hours * 60 + tc.minutes) * 60 + tc.seconds) * rate + tc.frames
        frames.append((frame / rate, data))
    t0 = frames[0][0]
    return [(t - t0, data) for t, data in frames], len(take.skipped)


def _trajectory_frames(path, encoder):
    traj = read_trajectory(path)
    frames = []
    for index in range(len(traj)):
        try:
            data = encoder.encode(traj.p[index], traj.q[index])
        except (freed.FreeDError, ValueError) as exc:
            raise ReplayError(f'{path}: pose {index + 1}: {exc}') from None
        frames.append((float(traj.t[index] - traj.t[0]), data))
    return frames, 0


def _freed_frames(path, frame_rate, encoder):
    data = Path(path).read_bytes()
    if not data:
        raise ReplayError(f'{path}: file is empty: no FreeD messages')
    size = freed.PACKET_SIZE
    if len(data) % size:
        raise ReplayError(f'{path}: {len(data)} bytes is not a whole number of {size}-byte '
                          f'FreeD messages: truncated or not a FreeD capture')
    frames = []
    for index in range(len(data) // size):
        message = data[index * size:(index + 1) * size]
        try:
            packet = freed.decode(message)
            datagrams = ([message] if encoder.protocol == 'freed'
                         else _encode_packet(encoder, packet))
        except (freed.FreeDError, ValueError) as exc:
            raise ReplayError(f'{path}: message {index} (offset {index * size}): {exc}') from None
        frames.append((index / frame_rate, datagrams))
    return frames, 0


def _opentrackio_frames(path, encoder):
    try:
        samples = opentrackio.read_samples(path)
        times = opentrackio.sample_times(samples)
    except opentrackio.OpenTrackIOError as exc:
        raise ReplayError(str(exc)) from None
    frames = []
    for index, (t, sample) in enumerate(zip(times, samples)):
        try:
            if encoder.protocol == 'opentrackio':
                data = encoder.encode_sample(sample)
            else:
                data = encoder.encode(*opentrackio.sample_pose(sample), sample)
        except (freed.FreeDError, ValueError) as exc:
            raise ReplayError(f'{path}: sample {index + 1}: {exc}') from None
        frames.append((t - times[0], data))
    return frames, 0


def load_frames(fmt, path, frame_rate=DEFAULT_FRAME_RATE, protocol='freed', encoding='json'):
    """
    [(t seconds from the first frame, [datagrams])] and the count of skipped stretches.

    Raises ReplayError (also for F4 and trajectory errors) with the file and the reason.
    """
    if fmt not in FORMATS:
        raise ReplayError(f'unknown format {fmt!r}; use one of {", ".join(FORMATS)}')
    if not Path(path).is_file():
        raise ReplayError(f'{path}: no such file')
    encoder = TrackingEncoder(protocol, encoding=encoding)
    try:
        if fmt == 'f4':
            frames, skipped = _f4_frames(path, encoder)
        elif fmt == 'tum':
            frames, skipped = _trajectory_frames(path, encoder)
        elif fmt == 'freed':
            frames, skipped = _freed_frames(path, frame_rate, encoder)
        else:
            frames, skipped = _opentrackio_frames(path, encoder)
    except (F4Error, TrajectoryError) as exc:
        raise ReplayError(str(exc)) from None
    times = [t for t, _ in frames]
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ReplayError(f'{path}: timestamps are not strictly increasing')
    return frames, skipped


def replay(frames, host, port, rate_factor=1.0, loop=False, should_stop=None):
    """
    Send frames' datagrams at their times divided by rate_factor; (sent, send_errors).

    loop repeats the take (one mean frame period after its end) until should_stop()
    returns True (or forever without it).
    """
    sender = UdpSender(host, port)
    period = (frames[-1][0] / (len(frames) - 1)) if len(frames) > 1 else 0.0
    try:
        start = time.perf_counter()
        offset = 0.0
        while True:
            for t, data in frames:
                delay = start + (offset + t) / rate_factor - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                for datagram in data:
                    sender.send(datagram)
                if should_stop is not None and should_stop():
                    return sender.sent, sender.send_errors
            if not loop:
                return sender.sent, sender.send_errors
            offset += frames[-1][0] + period
    finally:
        sender.close()


def configure_replay(parser):
    """Add the options of `camstab replay` to parser."""
    parser.add_argument('file', metavar='FILE', help='recording to send')
    parser.add_argument('--format', required=True, choices=FORMATS,
                        help='f4: Mo-Sys F4 take; tum: TUM/CSV trajectory; freed: raw D1 '
                        'messages back to back; opentrackio: samples as JSON Lines or a '
                        'CBOR sequence')
    parser.add_argument('--to', required=True, metavar='HOST:PORT',
                        help='where to send (e.g. 127.0.0.1:40000; 239.135.1.1:55555 for '
                        'OpenTrackIO source 1)')
    parser.add_argument('--protocol', choices=PROTOCOLS, default='freed',
                        help='protocol sent (default freed)')
    parser.add_argument('--encoding', choices=tuple(opentrackio.ENCODINGS), default='json',
                        help='OpenTrackIO payload encoding (default json)')
    parser.add_argument('--rate-factor', type=float, default=1.0,
                        help='speed-up of the original timing (default 1)')
    parser.add_argument('--loop', action='store_true', help='repeat until interrupted')
    parser.add_argument('--frame-rate', type=float, default=DEFAULT_FRAME_RATE,
                        help=f'frame rate of a raw freed file in Hz (default '
                        f'{DEFAULT_FRAME_RATE:g})')
    return parser


def run_replay(args):
    """Run `camstab replay`; returns the exit code (UsageError, exit 2, on bad input)."""
    try:
        if not args.rate_factor > 0 or not args.frame_rate > 0:
            raise ReplayError('--rate-factor and --frame-rate must be positive')
        host, port = parse_host_port(args.to)
        frames, skipped = load_frames(args.format, args.file, args.frame_rate,
                                      args.protocol, args.encoding)
        duration = frames[-1][0] / args.rate_factor
        print(f'replaying {len(frames)} frames ({duration:.1f} s) to {host}:{port} as '
              f'{args.protocol}' + (', looping' if args.loop else ''), flush=True)
        sent, errors = replay(frames, host, port, args.rate_factor, args.loop)
    except (ReplayError, UdpError, ValueError) as exc:
        raise UsageError(f'replay: {exc}') from None
    except KeyboardInterrupt:
        return 0
    print(f'sent {sent} datagrams, {errors} send errors, {skipped} bad stretches skipped '
          'in the file')
    return 0
