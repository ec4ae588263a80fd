"""`camstab bench`: per-pose cost of each method; with --ros or --bridge, node latency."""
from camstab_ros.core.evaluation import BENCH_SCENARIO, benchmark
from camstab_ros.core.methods import list_methods
from camstab_ros.core.stabilizer import check_method
from camstab_ros.tools.common import format_table, methods_arg, UsageError, write_json


# The longest --ros / --bridge run: a day (a longer one is a typo, not a soak).
MAX_SECONDS = 86400.0


def configure_bench(parser):
    """Add the options of `camstab bench` to parser."""
    parser.add_argument('--methods', type=methods_arg, help='comma-separated (default: all)')
    parser.add_argument('--json', help='also write the figures to this file')
    target = parser.add_mutually_exclusive_group()
    target.add_argument('--ros', action='store_true',
                        help='instead: end-to-end latency of the stabilizer node over DDS, '
                        'next to a plain relay node (the floor DDS and rclpy impose)')
    target.add_argument('--bridge', action='store_true',
                        help='instead: added latency of tracking_bridge, datagram in -> out, '
                        'for FreeD -> FreeD, FreeD -> OpenTrackIO and OpenTrackIO -> '
                        'OpenTrackIO, next to passthrough')
    parser.add_argument('--seconds', type=float, default=60.0,
                        help='measured duration with --ros, or of each --bridge run '
                        '(default 60)')
    parser.add_argument('--rate-hz', type=float, default=240.0,
                        help='pose rate with --ros or --bridge (default 240)')
    parser.add_argument('--method', default='kalman',
                        help='method of the node with --ros or --bridge (default kalman)')
    parser.add_argument('--hostile', action='store_true',
                        help='with --ros: also send the stabiliser a pose no tracker can send '
                        'every 2 s, which must be dropped and counted (a soak test)')
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS_DOMAIN_ID with --ros (default: a random one in 1..100)')


def run_bench(args):
    """Print the per-pose cost table (or run the --ros / --bridge benchmark)."""
    if (args.ros or args.bridge) and not (0.0 < args.seconds <= MAX_SECONDS
                                          and 1.0 <= args.rate_hz <= 1000.0):
        raise UsageError(f'need 0 < --seconds <= {MAX_SECONDS:g} and 1 <= --rate-hz <= 1000, '
                         f'got {args.seconds:g} and {args.rate_hz:g}')
    if args.ros or args.bridge:
        try:
            check_method(args.method)
        except ValueError as exc:  # an unknown or an offline method
            raise UsageError(str(exc)) from None
    if args.ros:
        from camstab_ros.tools.ros_bench import run_ros_bench
        return run_ros_bench(args)
    if args.bridge:
        from camstab_ros.tools.bridge_bench import run_bridge_bench
        return run_bridge_bench(args)
    figures = benchmark(args.methods or list_methods())
    take = BENCH_SCENARIO
    print(f"per-pose cost on a seeded {take['scenario']} take, {take['seconds']:.0f} s at "
          f"{take['rate_hz']:.0f} Hz, one update() per pose (offline methods: the whole "
          'take / N, validation included)')
    rows = {m: {**v, 'mode': 'streaming' if v['causal'] else 'offline'}
            for m, v in figures.items()}
    print(format_table(rows, ('mode', 'median_us', 'p99_us', 'ratio')))
    if args.json:
        write_json(args.json, figures)
    return 0
