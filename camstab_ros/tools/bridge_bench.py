"""
`camstab bench --bridge`: added latency of `tracking_bridge`, datagram in -> datagram out.

Runs the installed bridge as a child process on 127.0.0.1 for each protocol pair (FreeD ->
FreeD, FreeD -> OpenTrackIO, OpenTrackIO -> OpenTrackIO), once with `passthrough` (the
floor: UDP, decoding, the pipeline's checks, encoding) and once with the chosen method,
sends a synthetic take at `rate_hz` and times each output datagram against its input. A
sequence number rides along: FreeD's spare bytes, FreeD zoom -> OpenTrackIO
rawEncoders.zoom, OpenTrackIO timing.sequenceNumber.
"""
import select
import socket
import subprocess
import time

from camstab_ros.io import freed, opentrackio
from camstab_ros.tools.common import format_table, write_json
from camstab_ros.tools.processes import choose_domain_id, node_command, private_env, rss_mb
import numpy as np


PAIRS = (('freed', 'freed'), ('freed', 'opentrackio'), ('opentrackio', 'opentrackio'))
# How long the answers to the last datagrams are awaited.
DRAIN_S = 0.5
SEQUENCE_MODULO = 65536
_SOURCE_ID = opentrackio.new_id()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _input_datagram(protocol, k, t):
    position = [0.5 * np.sin(0.3 * t), 2.0, 1.5]
    packet = freed.FreeDPacket(1, 20.0 * np.sin(t), 5.0 * np.sin(0.7 * t), 0.0,
                               -position[1], position[0], position[2], k, 2000, k)
    if protocol == 'freed':
        return freed.encode(packet)
    sample = opentrackio.make_sample(*freed.packet_to_pose(packet), _SOURCE_ID, sequence=k,
                                     raw_encoders={'zoom': k, 'focus': 2000})
    return opentrackio.packets(opentrackio.encode_payload(sample), 'json', k)[0]


def _sequence(protocol_in, protocol_out, data):
    """Return the sequence number an output datagram carries."""
    if protocol_out == 'freed':
        return freed.decode(data).spare
    segment = opentrackio.parse_packet(data)
    sample = opentrackio.decode_payload(segment.data, segment.encoding)
    if protocol_in == 'freed':
        return sample['lens']['rawEncoders']['zoom']
    return sample['timing']['sequenceNumber'] % SEQUENCE_MODULO


def bridge_latency(protocol_in='freed', protocol_out='freed', rate_hz=240.0, seconds=10.0,
                   method='kalman', warmup_s=1.0):
    """{'p50_ms', 'p99_ms', 'max_ms', 'measured', ...} of the bridge's added latency."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(('127.0.0.1', 0))
    listener.setblocking(False)
    port = _free_port()
    bridge = subprocess.Popen(
        node_command('tracking_bridge') + [
            '--ros-args', '-p', 'bind_address:=127.0.0.1', '-p', f'port:={port}',
            '-p', f'method:={method}', '-p', f'input_protocol:={protocol_in}',
            '-p', f'output_protocol:={protocol_out}',
            '-p', f'destination:=127.0.0.1:{listener.getsockname()[1]}'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=private_env(choose_domain_id(None)))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent_at, latencies, rss = {}, [], []

    def collect(until):
        while True:
            wait = until - time.perf_counter()
            if not select.select([listener], [], [], max(wait, 0.0))[0]:
                return
            data = listener.recv(65535)
            arrived = time.perf_counter()
            seq = _sequence(protocol_in, protocol_out, data)
            if seq in sent_at:
                latencies.append(arrived - sent_at.pop(seq))
    try:
        time.sleep(2.0)  # start-up of the bridge
        count = int((seconds + warmup_s) * rate_hz)
        start = time.perf_counter()
        for k in range(count):
            collect(start + k / rate_hz)  # outputs until the next input is due
            t = k / rate_hz
            if k % int(rate_hz) == 0 and t > warmup_s:
                rss.append(rss_mb(bridge.pid))
            data = _input_datagram(protocol_in, k % SEQUENCE_MODULO, t)
            if t <= warmup_s:
                sent_at.pop(k % SEQUENCE_MODULO, None)
            sender.sendto(data, ('127.0.0.1', port))
            if t > warmup_s:
                sent_at[k % SEQUENCE_MODULO] = time.perf_counter()
        collect(time.perf_counter() + DRAIN_S)  # the answers to the last datagrams
    finally:
        bridge.send_signal(2)
        bridge.wait(10)
        sender.close()
        listener.close()
    ms = np.array(latencies) * 1e3
    figures = {'input': protocol_in, 'output': protocol_out, 'method': method,
               'rate_hz': rate_hz, 'measured': len(ms),
               'sent_after_warmup': int(count - warmup_s * rate_hz) - 1}
    if rss:
        figures.update(rss_first_mb=rss[0], rss_last_mb=rss[-1], rss_max_mb=max(rss))
    quantiles = ({'p50_ms': float(np.percentile(ms, 50)), 'p99_ms': float(np.percentile(ms, 99)),
                  'max_ms': float(ms.max())} if len(ms) else
                 dict.fromkeys(('p50_ms', 'p99_ms', 'max_ms'), float('nan')))
    figures.update(quantiles)
    return figures


def run_bridge_bench(args):
    """Run the benchmark from parsed `camstab bench --bridge` arguments; exit code."""
    labels = {'freed': 'FreeD', 'opentrackio': 'OpenTrackIO'}
    rows, results = {}, []
    methods = ['passthrough'] + ([args.method] if args.method != 'passthrough' else [])
    for protocol_in, protocol_out in PAIRS:
        for method in methods:
            result = bridge_latency(protocol_in, protocol_out, args.rate_hz, args.seconds,
                                    method)
            results.append(result)
            name = f'{labels[protocol_in]} -> {labels[protocol_out]}, {method}'
            rows[name] = {**result, 'answered': f"{result['measured']}/"
                                                f"{result['sent_after_warmup']}",
                          'rss_max_mb': result.get('rss_max_mb', float('nan'))}
            print(f"{name}: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms",
                  flush=True)
    print(f'tracking_bridge latency, datagram in -> datagram out on 127.0.0.1, '
          f'{args.rate_hz:g} Hz for {args.seconds:g} s each:')
    print(format_table(rows, ('answered', 'p50_ms', 'p99_ms', 'max_ms', 'rss_max_mb'),
                       first='bridge, method'))
    if getattr(args, 'json', None):
        write_json(args.json, results)
    return 0 if all(r['measured'] for r in results) else 1
