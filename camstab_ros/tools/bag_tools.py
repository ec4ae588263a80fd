"""
`camstab bag record|play|info` and offline smoothing of a bag's pose topic.

record: raw CDR subscriptions (no deserialisation), each message written at its receipt
time; play: raw publishing with the bag's original timing; both run rclpy without rosbag2.
Bags are read and written through `camstab_ros.io.rosbag` (the `rosbags` library), so
they stay readable by `ros2 bag`. smooth_bag writes into a temporary directory renamed
into place at the end: a failure leaves no output bag.
"""
import importlib
from pathlib import Path
import shutil
import tempfile
import time

from camstab_ros.core.evaluation import run_take
from camstab_ros.io import rosbag
from camstab_ros.tools.common import UsageError
from rosbags.rosbag2 import Reader


STABILIZED_SUFFIX = '_stabilized'
DISCOVERY_TIMEOUT_S = 5.0


class BagError(ValueError):
    """A bag that cannot be read, written or played as asked."""


def _reader_errors():
    # A corrupt or truncated file makes the rosbags library (and the sqlite3 and mcap code
    # below it) raise almost any type: ReaderError, OSError, OverflowError, struct.error,
    # apsw.CorruptError, SerdeError, AssertionError, KeyError... Each one is a bag that
    # cannot be read, reported as a BagError, never as a traceback.
    return (Exception,)


def bag_info(path):
    """
    Read a whole bag once and describe it; BagError if it is missing or corrupt.

    Returns {'path', 'storage', 'duration_s', 'start_ns', 'end_ns', 'messages', 'topics':
    {topic: {'type', 'count'}}}.
    """
    try:
        with Reader(path) as reader:
            topics = {}
            for connection in reader.connections:
                entry = topics.setdefault(connection.topic,
                                          {'type': connection.msgtype, 'count': 0})
                entry['count'] += connection.msgcount
            # Read every message once: a truncated or corrupt file fails here, not later.
            read = sum(1 for _ in reader.messages())
            storage = 'sqlite3' if list(Path(path).glob('*.db3')) else 'mcap'
            info = {'path': str(path), 'storage': storage,
                    'duration_s': reader.duration * 1e-9 if reader.message_count else 0.0,
                    'start_ns': reader.start_time if reader.message_count else None,
                    'end_ns': reader.end_time if reader.message_count else None,
                    'messages': read, 'topics': topics}
    except _reader_errors() as exc:
        raise BagError(f'cannot read bag {path}: {exc}') from None
    if read != sum(t['count'] for t in topics.values()):
        raise BagError(f'bag {path} is truncated: its metadata lists '
                       f'{sum(t["count"] for t in topics.values())} messages, {read} read')
    return info


def smooth_bag(input_bag, output_bag, topic, method, params, strict=False):
    """
    Copy every topic of input_bag to output_bag plus `<topic>_stabilized` (PoseStamped).

    The stabilised message of each input pose has its header and bag timestamp. Returns a
    summary dict; raises BagError (bad bag, topic, method or parameters) writing nothing.
    """
    output_bag = Path(output_bag)
    if output_bag.exists():
        raise BagError(f'output bag {output_bag} already exists')
    info = bag_info(input_bag)
    if topic not in info['topics']:
        raise BagError(f'bag {input_bag} has no topic {topic}; it has: '
                       + ', '.join(sorted(info['topics'])))
    out_topic = topic.rstrip('/') + STABILIZED_SUFFIX
    if out_topic in info['topics']:
        raise BagError(f'bag {input_bag} already has a topic {out_topic}')
    try:
        t, p, q, frame_id = rosbag.read_poses(input_bag, topic)
    except _reader_errors() as exc:
        raise BagError(f'cannot read {topic} of {input_bag}: {exc}') from None
    try:
        result = run_take(method, t, p, q, params, strict=strict)
    except ValueError as exc:
        raise BagError(f'cannot smooth {topic} of {input_bag}: {exc}') from None
    try:
        output_bag.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix='.camstab_smooth_', dir=output_bag.parent))
    except OSError as exc:
        raise BagError(f'cannot write {output_bag}: {exc.strerror}') from None
    try:
        with rosbag.BagWriter(tmp / 'bag', info['storage']) as writer:
            for name, entry in info['topics'].items():
                writer.add_topic(name, entry['type'])
            writer.add_topic(out_topic, rosbag.POSE_STAMPED)
            row = 0
            for msg in rosbag.read_bag(input_bag, decode=False):
                writer.write(msg.topic, msg.timestamp_ns, msg.data)
                if msg.topic == topic:
                    header = rosbag.typestore().deserialize_cdr(msg.data, msg.msgtype).header
                    stamp_ns = header.stamp.sec * rosbag.NS_PER_S + header.stamp.nanosec
                    writer.write(out_topic, msg.timestamp_ns, rosbag.pose_stamped(
                        stamp_ns, header.frame_id, result.p[row], result.q[row]))
                    row += 1
        (tmp / 'bag').rename(output_bag)
    except _reader_errors() as exc:
        raise BagError(f'cannot copy {input_bag} to {output_bag}: {exc}') from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {'input': str(input_bag), 'output': str(output_bag), 'topic': topic,
            'stabilized_topic': out_topic, 'method': method, 'poses': len(t),
            'messages_copied': info['messages'], 'frame_id': frame_id,
            'dropped': result.dropped, 'renormalized': result.renormalized,
            'tracker_noise': result.tracker_noise, **result.stats}


def message_class(msgtype):
    """Return the rclpy message class of 'pkg/msg/Type'; BagError if it is not installed."""
    package, _, name = msgtype.rpartition('/')
    try:
        return getattr(importlib.import_module(package.replace('/', '.')), name)
    except (ImportError, AttributeError, ValueError):
        raise BagError(f'message type {msgtype} is not available to rclpy here') from None


def _ros_node(name):
    import rclpy
    from rclpy.context import Context
    context = Context()
    rclpy.init(context=context)
    return rclpy.create_node(name, context=context), context


def _shutdown(node, context):
    import rclpy
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def record(out, topics, storage='mcap', duration=None, count=None, should_stop=None,
           compat='jazzy'):
    """
    Record topics (raw CDR, stamped on receipt) until duration/count/should_stop/Ctrl-C.

    Waits up to DISCOVERY_TIMEOUT_S for each topic's publisher to learn its type. Returns
    {topic: messages recorded}.
    """
    if Path(out).exists():  # before waiting for any publisher
        raise BagError(f'output bag {out} already exists; remove it or pick a new name')
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    node, context = _ros_node('camstab_bag_record')
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    counts = dict.fromkeys(topics, 0)
    try:
        types, deadline = {}, time.monotonic() + DISCOVERY_TIMEOUT_S
        while len(types) < len(topics) and time.monotonic() < deadline:
            known = dict(node.get_topic_names_and_types())
            types = {t: known[t][0] for t in topics if t in known}
            time.sleep(0.05)
        missing = [t for t in topics if t not in types]
        if missing:
            raise BagError(f'no publisher of {", ".join(missing)} found within '
                           f'{DISCOVERY_TIMEOUT_S:g} s: cannot learn its message type')
        with rosbag.BagWriter(out, storage, rosbag.BAG_VERSIONS[compat]) as writer:
            for topic in topics:
                writer.add_topic(topic, types[topic])

            def callback(topic):
                def on_message(data):
                    writer.write(topic, node.get_clock().now().nanoseconds, data)
                    counts[topic] += 1
                return on_message

            for topic in topics:
                infos = node.get_publishers_info_by_topic(topic)
                reliable = infos and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                                         for i in infos)
                qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE
                                 if reliable else ReliabilityPolicy.BEST_EFFORT)
                node.create_subscription(message_class(types[topic]), topic, callback(topic),
                                         qos, raw=True)
            start = time.monotonic()
            try:
                while not (duration is not None and time.monotonic() - start >= duration
                           or count is not None and sum(counts.values()) >= count
                           or should_stop is not None and should_stop()):
                    executor.spin_once(timeout_sec=0.05)
            except KeyboardInterrupt:
                pass
    finally:
        executor.shutdown()
        _shutdown(node, context)
    return counts


def play(bag, topics=None, rate_factor=1.0, loop=False, wait_subscribers_s=2.0):
    """
    Publish a bag's messages raw with their original timing; returns messages sent.

    Waits up to wait_subscribers_s for every topic to have a subscriber (messages sent
    before discovery completes are lost).
    """
    info = bag_info(bag)
    selected = list(topics) if topics else list(info['topics'])
    missing = [t for t in selected if t not in info['topics']]
    if missing:
        raise BagError(f'bag {bag} has no topic {missing[0]}; it has: '
                       + ', '.join(sorted(info['topics'])))
    classes = {t: message_class(info['topics'][t]['type']) for t in selected}
    messages = [(m.topic, m.timestamp_ns, m.data)
                for m in rosbag.read_bag(bag, selected, decode=False)]
    node, context = _ros_node('camstab_bag_play')
    sent = 0
    try:
        publishers = {t: node.create_publisher(classes[t], t, 1000) for t in selected}
        deadline = time.monotonic() + wait_subscribers_s
        while (time.monotonic() < deadline
               and not all(p.get_subscription_count() for p in publishers.values())):
            time.sleep(0.02)
        if not messages:
            return 0
        span_ns = messages[-1][1] - messages[0][1]
        start, offset_ns = time.perf_counter(), 0
        while True:
            for topic, stamp_ns, data in messages:
                due = start + (offset_ns + stamp_ns - messages[0][1]) * 1e-9 / rate_factor
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                publishers[topic].publish(data)
                sent += 1
            if not loop:
                break
            offset_ns += span_ns + span_ns // max(len(messages) - 1, 1)
    except KeyboardInterrupt:
        pass
    finally:
        time.sleep(0.2)  # let reliable transport deliver the last messages
        _shutdown(node, context)
    return sent


def configure_bag(parser):
    """Add the record/play/info subcommands of `camstab bag` to parser."""
    sub = parser.add_subparsers(dest='bag_command', required=True)
    p = sub.add_parser('record', help='record topics to a bag (raw CDR)')
    p.add_argument('--topics', nargs='+', required=True, help='topics to record')
    p.add_argument('--out', required=True, help='bag directory to create')
    p.add_argument('--storage', choices=sorted(rosbag.STORAGES), default='mcap',
                   help='storage format (default mcap)')
    p.add_argument('--duration', type=float, help='stop after this many seconds')
    p.add_argument('--count', type=int, help='stop after this many messages')
    p.add_argument('--compat', choices=tuple(rosbag.BAG_VERSIONS), default='jazzy',
                   help='the oldest ROS 2 distribution whose `ros2 bag` must read it '
                   '(default jazzy: metadata version 9; humble: version 8)')
    p = sub.add_parser('play', help='publish a bag with its original timing')
    p.add_argument('bag', help='bag directory')
    p.add_argument('--topics', nargs='+', help='topics to play (default all)')
    p.add_argument('--rate-factor', type=float, default=1.0, help='speed-up (default 1)')
    p.add_argument('--loop', action='store_true', help='repeat until interrupted')
    p.add_argument('--wait-subscribers', type=float, default=2.0,
                   help='seconds to wait for subscribers before playing (default 2)')
    p = sub.add_parser('info', help='topics, types, counts and duration of a bag')
    p.add_argument('bag', help='bag directory')
    return parser


def run_bag(args):
    """Run `camstab bag ...`; returns the exit code (UsageError, exit 2, on bad input)."""
    try:
        if args.bag_command == 'info':
            info = bag_info(args.bag)
            print(f'bag: {info["path"]} ({info["storage"]})\n'
                  f'duration: {info["duration_s"]:.3f} s\nmessages: {info["messages"]}')
            for topic, entry in sorted(info['topics'].items()):
                print(f'  {topic}  {entry["type"]}  {entry["count"]}')
        elif args.bag_command == 'record':
            counts = record(args.out, args.topics, args.storage, args.duration, args.count,
                            compat=args.compat)
            print(f'recorded {sum(counts.values())} messages to {args.out}: '
                  + ', '.join(f'{t} {n}' for t, n in counts.items()))
        else:
            if not args.rate_factor > 0:
                raise BagError('--rate-factor must be positive')
            sent = play(args.bag, args.topics, args.rate_factor, args.loop,
                        args.wait_subscribers)
            print(f'published {sent} messages from {args.bag}')
    except (BagError, FileExistsError) as exc:
        raise UsageError(f'bag: {exc}') from None
    return 0
