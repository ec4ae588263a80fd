"""
UDP endpoints for tracking protocols: bind with a clear error, allow-list, counted drops.

`UdpReceiver.receive_batch()` blocks for the first datagram, then drains what is already
queued in the socket without blocking: the datagrams waiting at one call form a bounded
batch (`queue_size`); under a flood the oldest beyond that bound are dropped and counted
(`dropped_overflow`), so a consumer never falls further behind than one batch. Datagrams
from senders outside the allow-list are dropped and counted (`dropped_sender`).
"""
from collections import deque
import errno
import ipaddress
import select
import socket
import struct
from time import monotonic_ns


# Large enough for any tracking datagram (FreeD 29 bytes, OpenTrackIO a few kB).
MAX_DATAGRAM = 65535
# Linux socket option: each datagram carries the count of datagrams the kernel dropped on
# this socket so far (its receive buffer was full). Python's socket module lacks the name.
SO_RXQ_OVFL = getattr(socket, 'SO_RXQ_OVFL', 40)
_OVFL_SPACE = socket.CMSG_SPACE(4)


class UdpError(OSError):
    """A UDP socket that cannot be opened as configured."""


def parse_host_port(text, default_host='127.0.0.1'):
    """'HOST:PORT' or 'PORT' -> (host, port); ValueError with the reason if malformed."""
    host, sep, port = text.rpartition(':')
    if not sep:
        host = default_host
    try:
        value = int(port)
    except ValueError:
        raise ValueError(f'{text!r}: expected HOST:PORT with a numeric port') from None
    if not 0 <= value <= 65535:
        raise ValueError(f'{text!r}: port {value} is outside 0..65535')
    return host or default_host, value


def parse_allow_list(entries):
    """Networks of an allow-list of addresses or CIDR blocks (empty: allow every sender)."""
    networks = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f'allow-list entry {entry!r} is not an IP address or '
                             'network (e.g. 10.0.0.5 or 10.0.0.0/24)') from None
    return tuple(networks)


def is_multicast(host):
    """Tell whether host is an IPv4 multicast group address (224.0.0.0/4)."""
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:
        return False


def bind_udp(host, port, timeout=None):
    """
    Return a UDP socket bound to host:port; UdpError saying why if that is impossible.

    A multicast host (e.g. OpenTrackIO's 239.135.1.N) is joined on every interface, and
    the port may be shared with other listeners of the group.
    """
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        raise UdpError(f'cannot create a UDP socket: {exc.strerror}') from None
    try:
        if is_multicast(host):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            membership = struct.pack('4s4s', socket.inet_aton(host),
                                     socket.inet_aton('0.0.0.0'))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        else:
            sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UdpError(f'UDP port {host}:{port} is already in use by another '
                           'process; stop it or choose another port') from None
        raise UdpError(f'cannot bind UDP {host}:{port}: {exc.strerror}') from None
    sock.settimeout(timeout)
    return sock


class UdpReceiver:
    """A bound UDP socket that yields bounded batches of allowed datagrams."""

    def __init__(self, host, port, allow=(), queue_size=64, timeout=0.1):
        if queue_size < 1:
            raise ValueError(f'queue_size must be at least 1, got {queue_size}')
        self.sock = bind_udp(host, port, timeout=0.0)  # non-blocking; waits in poll()
        self.timeout_ms = round(timeout * 1000)
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN)
        self.allow = parse_allow_list(allow)
        self.queue_size = queue_size
        self.received = 0
        self.dropped_sender = 0
        self.dropped_overflow = 0
        # Datagrams the kernel dropped before we could read them (None: not reported here).
        # The kernel tells the count with the next datagram it queues after the drops.
        self.dropped_kernel = None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            self.dropped_kernel = 0
        except OSError:  # not Linux: the kernel's drops cannot be seen
            pass

    @property
    def address(self):
        return self.sock.getsockname()

    def _allowed(self, sender):
        if not self.allow:
            return True
        address = ipaddress.ip_address(sender[0])
        return any(address in network for network in self.allow)

    def receive_batch(self):
        """
        Return [(data, sender, arrival_ns)] in arrival order; [] after the timeout with none.

        arrival_ns is time.monotonic_ns() when the datagram was taken from the socket.
        """
        batch = deque()
        if not self._poll.poll(self.timeout_ms):
            return []
        while True:
            try:
                data, ancillary, _, sender = self.sock.recvmsg(MAX_DATAGRAM, _OVFL_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.EBADF:  # closed by another thread while waiting
                    break
                raise
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) == 4:
                    self.dropped_kernel = struct.unpack('=I', value)[0]
            self._accept(batch, data, sender, monotonic_ns())
        return list(batch)

    def _accept(self, batch, data, sender, arrival_ns):
        self.received += 1
        if not self._allowed(sender):
            self.dropped_sender += 1
            return
        if len(batch) == self.queue_size:
            batch.popleft()
            self.dropped_overflow += 1
        batch.append((data, sender, arrival_ns))

    def close(self):
        self.sock.close()


class UdpSender:
    """Sends datagrams to one host:port; counts what could not be sent."""

    def __init__(self, host, port):
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise UdpError(f'cannot resolve {host}:{port}: {exc.strerror}') from None
        self.destination = infos[0][4]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = 0
        self.send_errors = 0
        self.last_error = None

    def send(self, data):
        """Send one datagram; False (counted, error kept in last_error) if it failed."""
        try:
            self.sock.sendto(data, self.destination)
        except OSError as exc:  # e.g. ECONNREFUSED reported for an earlier datagram
            self.send_errors += 1
            self.last_error = exc
            return False
        self.sent += 1
        return True

    def close(self):
        self.sock.close()
