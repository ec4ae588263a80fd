"""
rosbag2 bags (mcap or sqlite3) through the `rosbags` library: no ROS install needed.

Messages are written either as raw CDR bytes (exactly what a raw rclpy subscription
receives) or as `rosbags` typestore messages, which are serialised here. Reading yields
decoded messages or raw bytes. Message types use the ROS 2 Kilted typestore.
"""
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores


STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
# rosbag2 metadata version per reader: Jazzy and later write and read 9, which stores the
# offered QoS profiles as a YAML list; Humble parses them as a string, which version 8
# (the oldest the rosbags writer offers) writes.
BAG_VERSIONS = {'jazzy': 9, 'humble': 8}
BAG_VERSION = BAG_VERSIONS['jazzy']
POSE_STAMPED = 'geometry_msgs/msg/PoseStamped'
POSE_WITH_COVARIANCE_STAMPED = 'geometry_msgs/msg/PoseWithCovarianceStamped'
TRANSFORM_STAMPED = 'geometry_msgs/msg/TransformStamped'
NS_PER_S = 1_000_000_000


@lru_cache(maxsize=1)
def typestore():
    """Return the cached ROS 2 Kilted message typestore."""
    return get_typestore(Stores.ROS2_KILTED)


class BagWriter:
    """
    Writes a new rosbag2 directory; use as a context manager.

    `add_topic(topic, msgtype)` declares a topic once; `write(topic, timestamp_ns, message)`
    takes raw CDR bytes or a typestore message of the topic's type.
    """

    def __init__(self, path, storage='mcap', version=BAG_VERSION):
        if storage not in STORAGES:
            raise ValueError(f'unknown bag storage {storage!r}; use one of {", ".join(STORAGES)}')
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f'bag {self.path} already exists; remove it or pick a new name')
        self._writer = Writer(self.path, version=version, storage_plugin=STORAGES[storage])
        self._connections = {}
        self.count = 0

    def close(self):
        self._writer.close()

    def __enter__(self):
        self._writer.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def add_topic(self, topic, msgtype):
        """Declare a topic of type msgtype (e.g. 'geometry_msgs/msg/PoseStamped')."""
        known = self._connections.get(topic)
        if known is not None:
            if known.msgtype != msgtype:
                raise ValueError(f'topic {topic} already has type {known.msgtype}, not {msgtype}')
            return
        if msgtype not in typestore().types:
            raise ValueError(f'unknown message type {msgtype!r}')
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=typestore())

    def write(self, topic, timestamp_ns, message):
        """Write one message (raw CDR bytes or a typestore message) at timestamp_ns."""
        try:
            connection = self._connections[topic]
        except KeyError:
            raise ValueError(f'topic {topic} was not added to the bag') from None
        if isinstance(message, (bytes, bytearray, memoryview)):
            data = bytes(message)
        else:
            data = typestore().serialize_cdr(message, connection.msgtype)
        self._writer.write(connection, int(timestamp_ns), data)
        self.count += 1


def write_bag(path, topics, records, storage='mcap'):
    """
    Write a bag in one call.

    topics: {name: msgtype}; records: (topic, timestamp_ns, message) with message raw CDR
    bytes or a typestore message. Returns the number of messages written.
    """
    with BagWriter(path, storage) as bag:
        for topic, msgtype in topics.items():
            bag.add_topic(topic, msgtype)
        for topic, timestamp_ns, message in records:
            bag.write(topic, timestamp_ns, message)
        return bag.count


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    timestamp_ns: int
    data: object  # decoded typestore message, or raw CDR bytes


def bag_topics(path):
    """{topic: msgtype} of a bag."""
    with Reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def read_bag(path, topics=None, decode=True):
    """Yield BagMessage in time order, for all topics or only those named."""
    with Reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        if topics is not None:
            missing = set(topics) - {c.topic for c in connections}
            if missing:
                raise KeyError(f'bag {path} has no topic {sorted(missing)[0]}; it has: '
                               + ', '.join(sorted(c.topic for c in reader.connections)))
        if not connections:
            return
        for connection, timestamp, raw in reader.messages(connections=connections):
            data = typestore().deserialize_cdr(raw, connection.msgtype) if decode else raw
            yield BagMessage(connection.topic, connection.msgtype, timestamp, data)


def pose_stamped(stamp_ns, frame_id, position, quaternion):
    """Build a typestore geometry_msgs/PoseStamped."""
    types = typestore().types
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id)
    pose = types['geometry_msgs/msg/Pose'](
        position=types['geometry_msgs/msg/Point'](*(float(v) for v in position)),
        orientation=types['geometry_msgs/msg/Quaternion'](*(float(v) for v in quaternion)))
    return types[POSE_STAMPED](header=header, pose=pose)


def _pose_of(message, msgtype):
    if msgtype == POSE_STAMPED:
        pose = message.pose
        p, o = pose.position, pose.orientation
    elif msgtype == POSE_WITH_COVARIANCE_STAMPED:
        p, o = message.pose.pose.position, message.pose.pose.orientation
    elif msgtype == TRANSFORM_STAMPED:
        p, o = message.transform.translation, message.transform.rotation
    else:
        raise ValueError(f'cannot read poses from {msgtype}; supported: {POSE_STAMPED}, '
                         f'{POSE_WITH_COVARIANCE_STAMPED}, {TRANSFORM_STAMPED}')
    return (p.x, p.y, p.z), (o.x, o.y, o.z, o.w)


def read_poses(path, topic):
    """
    Read the poses of one topic by header stamp.

    Returns (t (N,) s, positions (N, 3), quaternions (N, 4), frame_id of the first
    message). Reads PoseStamped, PoseWithCovarianceStamped and TransformStamped topics.
    """
    t, p, q, frame_id = [], [], [], None
    for msg in read_bag(path, [topic]):
        position, quaternion = _pose_of(msg.data, msg.msgtype)
        stamp = msg.data.header.stamp
        t.append(stamp.sec + stamp.nanosec * 1e-9)
        p.append(position)
        q.append(quaternion)
        if frame_id is None:
            frame_id = msg.data.header.frame_id
    return (np.array(t, dtype=float), np.array(p, dtype=float).reshape(-1, 3),
            np.array(q, dtype=float).reshape(-1, 4), frame_id)


def write_poses(path, poses, frame_id, storage='mcap'):
    """
    Write PoseStamped topics from arrays: poses {topic: (t (N,), p (N, 3), q (N, 4))}.

    Each message is recorded at its own stamp. Returns the number of messages.
    """
    records = []
    for topic, (t, p, q) in poses.items():
        for ti, pi, qi in zip(t, p, q):
            ns = round(float(ti) * NS_PER_S)
            records.append((ns, topic, pose_stamped(ns, frame_id, pi, qi)))
    records.sort(key=lambda r: r[0])
    return write_bag(path, {topic: POSE_STAMPED for topic in poses},
                     ((topic, ns, msg) for ns, topic, msg in records), storage)
