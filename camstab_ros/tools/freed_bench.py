"""
`camstab bench --freed`: latency of `freed_bridge`, FreeD datagram in -> datagram out.

Runs the installed bridge as a child process on 127.0.0.1, sends a synthetic take at
`rate_hz` (the spare field carries a sequence number, which the bridge passes through)
and times each output datagram against its input.
"""
import select
import socket
import subprocess
import time

from camstab_ros.io import freed
from camstab_ros.tools.common import write_json
from camstab_ros.tools.processes import choose_domain_id, node_command, private_env, rss_mb
import numpy as np


# How long the answers to the last datagrams are awaited.
DRAIN_S = 0.5


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def bridge_latency(rate_hz=240.0, seconds=10.0, method='kalman', warmup_s=1.0):
    """{'p50_ms', 'p99_ms', 'max_ms', 'sent', 'received', ...} of the bridge's latency."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(('127.0.0.1', 0))
    listener.setblocking(False)
    port = _free_port()
    bridge = subprocess.Popen(
        node_command('freed_bridge') + [
            '--ros-args', '-p', 'bind_address:=127.0.0.1', '-p', f'port:={port}',
            '-p', f'method:={method}',
            '-p', f'destination:=127.0.0.1:{listener.getsockname()[1]}'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=private_env(choose_domain_id(None)))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent_at, latencies, rss = {}, [], []
    try:
        time.sleep(2.0)  # start-up of the bridge
        count = int((seconds + warmup_s) * rate_hz)
        start = time.perf_counter()
        for k in range(count):
            due = start + k / rate_hz
            while True:  # collect outputs until the next input is due
                wait = due - time.perf_counter()
                if not select.select([listener], [], [], max(wait, 0.0))[0]:
                    break
                seq = freed.decode(listener.recv(64)).spare
                if seq in sent_at and k / rate_hz > warmup_s:
                    latencies.append(time.perf_counter() - sent_at.pop(seq))
            if k % int(rate_hz) == 0 and k / rate_hz > warmup_s:
                rss.append(rss_mb(bridge.pid))
            t = k / rate_hz
            packet = freed.FreeDPacket(1, 20.0 * np.sin(t), 5.0 * np.sin(0.7 * t), 0.0,
                                       0.5 * np.sin(0.3 * t), 2.0, 1.5, 1000, 2000, k % 65536)
            sent_at[k % 65536] = time.perf_counter()
            sender.sendto(freed.encode(packet), ('127.0.0.1', port))
        end = time.perf_counter() + DRAIN_S  # the answers to the last datagrams
        while sent_at and select.select([listener], [], [], max(end - time.perf_counter(),
                                                                0.0))[0]:
            seq = freed.decode(listener.recv(64)).spare
            if seq in sent_at:
                latencies.append(time.perf_counter() - sent_at.pop(seq))
    finally:
        bridge.send_signal(2)
        bridge.wait(10)
        sender.close()
        listener.close()
    ms = np.array(latencies) * 1e3
    figures = {'method': method, 'rate_hz': rate_hz, 'measured': len(ms),
               'sent_after_warmup': int(seconds * rate_hz)}
    if rss:
        figures.update(rss_first_mb=rss[0], rss_last_mb=rss[-1], rss_max_mb=max(rss))
    figures.update({'p50_ms': float(np.percentile(ms, 50)), 'p99_ms': float(np.percentile(ms, 99)),
                    'max_ms': float(ms.max())} if len(ms) else
                   {'p50_ms': float('nan'), 'p99_ms': float('nan'), 'max_ms': float('nan')})
    return figures


def run_freed_bench(args):
    """Run the benchmark from parsed `camstab bench --freed` arguments; exit code."""
    result = bridge_latency(args.rate_hz, args.seconds, args.method)
    print(f"freed_bridge ({result['method']}) at {result['rate_hz']:g} Hz: "
          f"{result['measured']} of {result['sent_after_warmup']} datagrams answered; "
          f"latency p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms, "
          f"max {result['max_ms']:.3f} ms")
    if 'rss_first_mb' in result:
        print(f"freed_bridge RSS: {result['rss_first_mb']:.1f} MB after warm-up, "
              f"{result['rss_last_mb']:.1f} MB at the end, max {result['rss_max_mb']:.1f} MB")
    if getattr(args, 'json', None):
        write_json(args.json, result)
    return 0 if result['measured'] else 1
