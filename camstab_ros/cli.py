"""
The `camstab` command: argument parsing only; each sub-command is imported when it runs.

Exit codes: 0 success, 2 bad input (arguments, parameters, files, and any file that cannot
be read or written), 1 other failures, 130 Ctrl-C, 143 SIGTERM (temporary files removed).
"""
import argparse
import importlib
import logging
import signal
import sys
import threading


# name: (module under camstab_ros.tools, help, description). The module has
# configure_<name>(parser) and run_<name>(args).
COMMANDS = {
    'simulate': ('takes', 'simulate a camera take with tracker noise',
                 'Write DIR/noisy.tum and DIR/truth.tum for a simulated take.'),
    'smooth': ('takes', 'smooth a recorded take',
               'Smooth INPUT into OUTPUT (one pose per input pose, same format: .tum/.txt '
               'TUM text or .csv; or a rosbag2 with --topic).'),
    'evaluate': ('takes', 'compare methods against ground truth',
                 'Smooth NOISY with each method and print the metrics of DESIGN.md against '
                 'TRUTH (same timestamps).'),
    'animate': ('animate', "the audience's view, animated (GIF)",
                'Write a GIF of the virtual LED wall seen through the NOISY and the STABILISED '
                'camera side by side (STABILISED: NOISY through --method when not given), '
                'with the on-screen error against TRUTH.'),
    'bench': ('bench', 'per-pose cost of each method (or node latency)',
              'Median and p99 cost per pose of each method on a fixed seeded take, with the '
              'ratio to passthrough; --ros: the stabilizer node over DDS; --bridge: the '
              'tracking bridge over UDP for each protocol pair.'),
    'demo': ('demo', 'live demo: simulator -> stabilizer over real DDS',
             'Start the jitter_simulator and stabilizer executables with config/params.yaml '
             'on a private ROS_DOMAIN_ID, print a live line per second and a final table, '
             'write a plot and an mcap rosbag of the three topics.'),
    'replay': ('replay', 'send a recording over UDP as FreeD or OpenTrackIO (a stand-in '
               'tracker)',
               'Send a recording as FreeD D1 or OpenTrackIO with its original timing: Mo-Sys '
               'F4 capture, TUM/CSV trajectory, raw FreeD or OpenTrackIO samples.'),
    'bag': ('bag_tools', 'record, play and inspect rosbag2 bags without rosbag2',
            'rosbag2 tools on the rosbags library; bags stay readable by ros2 bag.'),
    'methods': ('takes', 'list methods and their parameters',
                'List every smoothing method with its parameters, defaults, units and valid '
                'ranges.'),
}


def _command_of(argv):
    """Return the sub-command named in argv (its first word not an option), or None."""
    return next((word for word in argv if not word.startswith('-')), None)


def build_parser(command=None):
    """Build the parser of `camstab`, loading the options (the module) of `command` only."""
    parser = argparse.ArgumentParser(
        prog='camstab', description='Camera-pose stabilisation for virtual production.')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, (module, help_text, description) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=description)
        if name == command:
            tool = importlib.import_module(f'camstab_ros.tools.{module}')
            getattr(tool, f'configure_{name}')(command_parser)
            command_parser.set_defaults(run=getattr(tool, f'run_{name}'))
    return parser


def _terminate(signum, frame):
    # SIGTERM unwinds like Ctrl-C: every `finally` and cleanup of a temporary file runs.
    raise SystemExit(143)


def main(argv=None):
    """Run `camstab`; returns the exit code."""
    from camstab_ros.core.params import ParameterError
    from camstab_ros.io.trajectory import TrajectoryError
    from camstab_ros.tools.common import UsageError

    logging.basicConfig(format='camstab: %(levelname)s: %(message)s', level=logging.INFO)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        args = parser.parse_args(argv)
        if args.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        return args.run(args)
    except (UsageError, ParameterError, TrajectoryError, OSError) as exc:
        print(f'camstab: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('camstab: interrupted', file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == '__main__':
    sys.exit(main())
