"""OpenTrackIO codec: samples, the OTrk header, segmentation and the pose mapping."""
import json
from pathlib import Path
import random
import struct

from camstab_ros.io import opentrackio as otio
import numpy as np
import pytest
from scipy.spatial.transform import Rotation


REFERENCE = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'reference' / 'opentrackio'
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason='../shared/data is absent (OpenTrackIO schema, examples)')
EXAMPLES = sorted(REFERENCE.glob('examples/*.json'))


@pytest.fixture(scope='module')
def validator():
    jsonschema = pytest.importorskip('jsonschema')
    schema = json.loads((REFERENCE / 'schema.json').read_text())
    return jsonschema.Draft202012Validator(schema)


def by_hand_fletcher16(data):
    sum1 = sum2 = 0
    for byte in data:
        sum1 = (sum1 + byte) % 256
        sum2 = (sum2 + sum1) % 256
    return (sum2 << 8) | sum1


def stage_rotation(pan, tilt, roll):
    """Return the stage-axes rotation of the schema's words: intrinsic Z, then X, then Y."""
    def about(axis, deg):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m
    return about(2, pan) @ about(0, tilt) @ about(1, roll)


# -- checksum and header -----------------------------------------------------------------

def test_fletcher16_known_answers_by_hand():
    # 'abcde': sum1 runs 97, 195, 38, 138, 239 (0xEF); sum2 = 707 % 256 = 195 (0xC3).
    assert otio.fletcher16(b'abcde') == 0xC3EF
    assert otio.fletcher16(b'') == 0
    assert otio.fletcher16(b'\x01\x02') == (4 << 8) | 3
    rng = random.Random(3)
    for n in (1, 15, 16, 1484, 5000):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert otio.fletcher16(data) == by_hand_fletcher16(data)


def test_header_layout_is_the_published_one():
    (packet,) = otio.packets(b'{"a":1}', 'json', 0x1234)
    assert len(packet) == 16 + 7
    assert packet[:4] == b'OTrk' and packet[4] == 0 and packet[5] == 0x01
    assert struct.unpack('>H', packet[6:8])[0] == 0x1234
    assert struct.unpack('>I', packet[8:12])[0] == 0
    assert struct.unpack('>H', packet[12:14])[0] == 0x8000 | 7  # last segment, 7 bytes
    checked = packet[:14] + packet[16:]
    assert struct.unpack('>H', packet[14:16])[0] == by_hand_fletcher16(checked)
    (cbor,) = otio.packets(b'\xa0', 'cbor', 65536 + 5)
    assert cbor[5] == 0x02 and struct.unpack('>H', cbor[6:8])[0] == 5  # sequence wraps


@pytest.mark.parametrize('mangle, reason', [
    (lambda p: p[:15], 'truncated_header'),
    (lambda p: b'OTrK' + p[4:], 'wrong_identifier'),
    (lambda p: p[:5] + b'\x07' + p[6:], 'unknown_encoding'),
    (lambda p: p[:-1] + bytes([p[-1] ^ 0x40]), 'bad_checksum'),
    (lambda p: p[:16] + p[16:-1], 'bad_checksum'),
])
def test_bad_packets_are_refused_with_their_reason(mangle, reason):
    (packet,) = otio.packets(b'{"transforms":[]}', 'json', 9)
    with pytest.raises(otio.OpenTrackIOError) as error:
        otio.parse_packet(mangle(packet))
    assert error.value.reason == reason


def test_a_length_field_that_lies_is_refused():
    (packet,) = otio.packets(b'{}', 'json', 1)
    head = bytearray(packet[:14])
    head[12:14] = struct.pack('>H', 0x8000 | 3)
    lying = bytes(head) + struct.pack('>H', by_hand_fletcher16(bytes(head) + b'{}')) + b'{}'
    with pytest.raises(otio.OpenTrackIOError) as error:
        otio.parse_packet(lying)
    assert error.value.reason == 'wrong_length'


# -- segmentation ------------------------------------------------------------------------

def big_payload(size=5000, seed=0):
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(size))


def test_a_large_payload_goes_in_segments_of_at_most_1500_bytes_and_comes_back_whole():
    payload = big_payload()
    datagrams = otio.packets(payload, 'cbor', 7)
    assert len(datagrams) == 4 and all(len(d) <= 1500 for d in datagrams)
    assert [otio.parse_packet(d).last for d in datagrams] == [False, False, False, True]
    assembler = otio.Reassembler()
    results = [assembler.add(otio.parse_packet(d)) for d in datagrams]
    assert results[:3] == [None, None, None]
    assert results[3] == ('cbor', payload)


def test_reordered_segments_reassemble():
    payload = big_payload(4000, seed=1)
    datagrams = otio.packets(payload, 'json', 300)
    for order in ([2, 0, 1], [1, 2, 0], [2, 1, 0]):
        assembler = otio.Reassembler()
        results = [assembler.add(otio.parse_packet(datagrams[i])) for i in order]
        assert results[-1] == ('json', payload) and results[:-1] == [None, None]


def test_interleaved_samples_reassemble_each_whole():
    a, b = big_payload(3000, 2), big_payload(3000, 3)
    da, db = otio.packets(a, 'json', 1), otio.packets(b, 'json', 2)
    assembler = otio.Reassembler()
    out = [assembler.add(otio.parse_packet(d)) for d in (da[0], db[1], db[0], da[2], db[2],
                                                         da[1])]
    assert [o for o in out if o] == [('json', b), ('json', a)]


def test_a_lost_segment_drops_its_sample_counted_and_never_half_applies_it():
    assembler = otio.Reassembler()
    lost = otio.packets(big_payload(4000, 4), 'json', 10)
    assert assembler.add(otio.parse_packet(lost[0])) is None
    assert assembler.add(otio.parse_packet(lost[2])) is None  # [1] never comes
    delivered = []
    for seq in range(11, 11 + otio.MAX_PENDING + 1):
        for d in otio.packets(big_payload(3000, seq), 'json', seq)[:1]:  # incomplete too
            delivered.append(assembler.add(otio.parse_packet(d)))
    good = otio.packets(big_payload(2000, 99), 'json', 50)
    delivered += [assembler.add(otio.parse_packet(d)) for d in good]
    assert [d for d in delivered if d] == [('json', big_payload(2000, 99))]
    assert assembler.dropped['incomplete_sample'] >= 2
    assembler.flush()
    assert assembler.dropped['incomplete_sample'] == 1 + otio.MAX_PENDING + 1


def test_a_corrupt_segment_is_refused_and_its_sample_dropped():
    datagrams = otio.packets(big_payload(3000, 5), 'json', 20)
    corrupt = datagrams[1][:-1] + bytes([datagrams[1][-1] ^ 1])
    assembler = otio.Reassembler()
    assert assembler.add(otio.parse_packet(datagrams[0])) is None
    with pytest.raises(otio.OpenTrackIOError):
        otio.parse_packet(corrupt)
    assert assembler.add(otio.parse_packet(datagrams[2])) is None
    assembler.flush()
    assert assembler.dropped['incomplete_sample'] == 1


def test_inconsistent_and_duplicate_segments_are_counted():
    payload = big_payload(3000, 6)
    datagrams = otio.packets(payload, 'json', 30)
    assembler = otio.Reassembler()
    assembler.add(otio.parse_packet(datagrams[0]))
    other = otio.packets(big_payload(3000, 7), 'json', 30)[0]  # same offset, other bytes
    assert assembler.add(otio.parse_packet(other)) is None
    assert assembler.dropped['inconsistent_segments'] == 1
    fresh = otio.Reassembler()
    assert [fresh.add(otio.parse_packet(d)) for d in datagrams][-1] == ('json', payload)
    assert fresh.add(otio.parse_packet(datagrams[-1])) is None  # a duplicate datagram
    assert fresh.dropped['duplicate'] == 1


# -- samples -----------------------------------------------------------------------------

@needs_reference
@pytest.mark.parametrize('path', EXAMPLES, ids=lambda p: p.stem)
def test_every_official_example_decodes_in_json_and_cbor(path):
    sample = json.loads(path.read_text())
    for encoding in ('json', 'cbor'):
        payload = otio.encode_payload(sample, encoding)
        assembler = otio.Reassembler()
        for d in otio.packets(payload, encoding, 1):
            whole = assembler.add(otio.parse_packet(d))
        assert otio.decode_sample(whole[1], whole[0]) == sample  # round trip, untouched
    position, quaternion = otio.sample_pose(sample)
    assert np.all(np.isfinite(position)) and abs(np.linalg.norm(quaternion) - 1) < 1e-12


@needs_reference
def test_the_pose_follows_the_schemas_axes_and_composes_the_transforms():
    # One transform: stage (X right, Y forward, Z up) -> REP 103 (x forward, y left, z up).
    sample = json.loads((REFERENCE / 'examples' / 'recommended_dynamic_example.json')
                        .read_text())
    position, quaternion = otio.sample_pose(sample)
    assert position == pytest.approx([2.0, -1.0, 3.0])  # x = Y, y = -X, z = Z
    axes = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)  # columns: REP 103 axes
    expected = axes.T @ stage_rotation(180.0, 90.0, 45.0) @ axes
    assert Rotation.from_quat(quaternion).as_matrix() == pytest.approx(expected, abs=1e-12)
    # A chain: each transform relative to the one before it.
    chain = {'transforms': [
        {'translation': {'x': 1.0, 'y': 0.0, 'z': 0.0},
         'rotation': {'pan': 90.0, 'tilt': 0.0, 'roll': 0.0}},
        {'translation': {'x': 0.0, 'y': 2.0, 'z': 0.5},
         'rotation': {'pan': 0.0, 'tilt': 10.0, 'roll': 0.0}}]}
    position, quaternion = otio.sample_pose(chain)
    stage = np.array([1.0, 0.0, 0.0]) + stage_rotation(90, 0, 0) @ [0.0, 2.0, 0.5]
    assert position == pytest.approx(axes.T @ stage)
    assert Rotation.from_quat(quaternion).as_matrix() == pytest.approx(
        axes.T @ stage_rotation(90, 10, 0) @ axes, abs=1e-12)


def test_positive_pan_turns_left_and_positive_tilt_looks_up():
    turned = otio.sample_pose({'transforms': [{
        'translation': {'x': 0, 'y': 0, 'z': 0}, 'rotation': {'pan': 30, 'tilt': 20}}]})[1]
    forward = Rotation.from_quat(turned).apply([1.0, 0.0, 0.0])  # REP 103 camera x
    assert forward[1] > 0 and forward[2] > 0  # y left, z up


@needs_reference
@pytest.mark.parametrize('path', EXAMPLES, ids=lambda p: p.stem)
def test_with_pose_keeps_everything_but_the_pose_and_validates(path, validator):
    sample = json.loads(path.read_text())
    position, quaternion = otio.sample_pose(sample)
    moved_q = (Rotation.from_euler('z', 3, degrees=True) * Rotation.from_quat(quaternion))
    out = otio.with_pose(sample, position + [0.01, -0.02, 0.03], moved_q.as_quat())
    validator.validate(out)
    p, q = otio.sample_pose(out)
    assert p == pytest.approx(position + [0.01, -0.02, 0.03], abs=1e-12)
    assert (Rotation.from_quat(q).inv() * moved_q).magnitude() < 1e-9
    for key in sample:
        if key not in ('transforms', 'sampleId', 'relatedSampleIds'):
            assert out[key] == sample[key], key  # timing, lens, ... untouched
    assert [t.get('id') for t in out['transforms']] == [
        t.get('id') for t in sample['transforms']]
    assert out['transforms'][:-1] == sample['transforms'][:-1]  # the parents untouched
    assert out['sampleId'] != sample['sampleId']
    assert out['relatedSampleIds'][-1] == sample['sampleId']
    assert sample == json.loads(path.read_text())  # the input is not modified


@needs_reference
def test_every_sample_the_encoder_writes_validates(validator):
    from fractions import Fraction
    q = Rotation.from_euler('ZYX', [20, -5, 2], degrees=True).as_quat()
    samples = [
        otio.make_sample([1, 2, 3], q, otio.new_id()),
        otio.make_sample([1, 2, 3], q, otio.new_id(), 7, sequence=2 ** 33 + 5,
                         rate=Fraction(24000, 1001), stamp_s=1718806554.5,
                         raw_encoders={'zoom': 1000, 'focus': 2000},
                         encoders={'zoom': 0.5, 'iris': 0.1}),
    ]
    samples.append({**samples[1], 'timing': otio.frame_timing(
        samples[1]['timing'], 1718806554.541, Fraction(25), 12)})
    for sample in samples:
        validator.validate(sample)
        for encoding in ('json', 'cbor'):
            assert otio.decode_payload(otio.encode_payload(sample, encoding),
                                       encoding) == sample
    assert samples[1]['timing']['sampleTimestamp'] == {'seconds': 1718806554,
                                                       'nanoseconds': 500000000}
    assert samples[2]['timing']['sampleRate'] == {'num': 25, 'denom': 1}


@pytest.mark.parametrize('payload, encoding', [
    (b'{"transforms": [', 'json'), (b'\xff\xfe', 'json'), (b'[1, 2]', 'json'),
    (b'\x9f\x01', 'cbor'), (b'\x01', 'cbor'), (b'', 'cbor')])
def test_garbage_payloads_are_refused(payload, encoding):
    with pytest.raises(otio.OpenTrackIOError) as error:
        otio.decode_payload(payload, encoding)
    assert error.value.reason == 'garbage_payload'


def test_a_sample_without_a_camera_pose_is_refused():
    sample = otio.make_sample([1, 2, 3], [0, 0, 0, 1], otio.new_id())
    del sample['transforms']  # valid by the schema, but there is nothing to stabilise
    with pytest.raises(otio.OpenTrackIOError) as error:
        otio.check_sample(sample)
    assert error.value.reason == 'no_pose'


@pytest.mark.parametrize('change', [
    lambda s: s.update(transforms=[]),
    lambda s: s['transforms'][0].pop('rotation'),
    lambda s: s['transforms'][0]['translation'].update(x='1.0'),
    lambda s: s['transforms'][0]['rotation'].update(pan=True),
    lambda s: s['timing'].update(sequenceNumber=-1),
    lambda s: s['timing']['sampleTimestamp'].update(nanoseconds=2 ** 32),
    lambda s: s['timing']['sampleRate'].update(denom=0),
    lambda s: s.update(lens={'encoders': {'zoom': 1.5}}),
    lambda s: s.update(lens={'rawEncoders': {'zoom': 1.5}}),
    lambda s: s.update(timing='now'),
])
def test_schema_invalid_samples_are_refused(change, validator):
    from fractions import Fraction
    sample = otio.make_sample([1, 2, 3], [0, 0, 0, 1], otio.new_id(), sequence=1,
                              rate=Fraction(25), stamp_s=100.0)
    validator.validate(sample)
    change(sample)
    assert not validator.is_valid(sample)  # the official schema refuses it too
    with pytest.raises(otio.OpenTrackIOError) as error:
        otio.check_sample(sample)
    assert error.value.reason == 'invalid_sample'


def test_non_finite_numbers_never_reach_the_pose():
    sample = {'transforms': [{'translation': {'x': float('nan'), 'y': 0, 'z': 0},
                              'rotation': {'pan': 0, 'tilt': 0, 'roll': 0}}]}
    with pytest.raises(otio.OpenTrackIOError):
        otio.sample_pose(sample)
    with pytest.raises(ValueError):
        otio.encode_payload({'x': float('inf')}, 'json')


def test_multicast_group_of_a_source_number():
    assert otio.multicast_group(1) == '239.135.1.1'
    assert otio.multicast_group(200) == '239.135.1.200'
    for bad in (0, 201, True):
        with pytest.raises(ValueError):
            otio.multicast_group(bad)


# -- across protocols and recordings ------------------------------------------------------

def test_freed_and_opentrackio_carry_lens_and_ids_across():
    from camstab_ros.io import freed
    from camstab_ros.io.tracking_udp import TrackingEncoder
    packet = freed.FreeDPacket(12, 30.0, -4.0, 1.0, 0.5, 2.0, 1.4, 70000, 1234, 99)
    position, quaternion = freed.packet_to_pose(packet)
    (datagram,) = TrackingEncoder('opentrackio').encode(position, quaternion, packet)
    sample = otio.decode_payload(otio.parse_packet(datagram).data)
    assert sample['sourceNumber'] == 12
    assert sample['lens']['rawEncoders'] == {'zoom': 70000, 'focus': 1234}
    assert sample['transforms'][0]['rotation']['pan'] == pytest.approx(-30.0)  # turns left
    assert sample['transforms'][0]['rotation']['tilt'] == pytest.approx(-4.0)
    assert sample['transforms'][0]['rotation']['roll'] == pytest.approx(1.0)
    (back,) = TrackingEncoder('freed').encode(*otio.sample_pose(sample), sample)
    back = freed.decode(back)
    assert (back.camera_id, back.zoom, back.focus) == (12, 70000, 1234)
    for axis in ('pan_deg', 'tilt_deg', 'roll_deg', 'x_m', 'y_m', 'z_m'):
        assert getattr(back, axis) == pytest.approx(getattr(packet, axis), abs=1e-4)
    sample['sourceNumber'] = 4000  # no FreeD camera id: 0
    sample['lens']['rawEncoders']['zoom'] = 1 << 30  # beyond 24 bits: 0
    back = freed.decode(TrackingEncoder('freed').encode(position, quaternion, sample)[0])
    assert (back.camera_id, back.zoom, back.focus) == (0, 0, 1234)


def test_recordings_read_as_json_lines_and_cbor_sequences(tmp_path):
    from camstab_ros.io.trajectory import read_trajectory, TrajectoryError
    import cbor2
    samples = [otio.make_sample([0.1 * k, 2.0, 1.5], [0, 0, 0, 1], otio.new_id(),
                                sequence=k, stamp_s=50.0 + k / 25) for k in range(10)]
    jsonl = tmp_path / 'take.jsonl'
    jsonl.write_text('\n'.join(json.dumps(s) for s in samples) + '\n')
    cbor = tmp_path / 'take.cbor'
    cbor.write_bytes(b''.join(cbor2.dumps(s) for s in samples))
    for path in (jsonl, cbor):
        assert otio.read_samples(path) == samples
        traj = read_trajectory(path)
        assert traj.t == pytest.approx(50.0 + np.arange(10) / 25)
        assert traj.p[:, 0] == pytest.approx(0.1 * np.arange(10))
    for sample in samples:  # no stamps: timed by the sample rate
        sample['timing'] = {'mode': 'external', 'sampleRate': {'num': 30000, 'denom': 1001}}
    jsonl.write_text('\n'.join(json.dumps(s) for s in samples))
    assert read_trajectory(jsonl).t == pytest.approx(np.arange(10) * 1001 / 30000)
    for sample in samples:
        del sample['timing']
    jsonl.write_text('\n'.join(json.dumps(s) for s in samples))
    with pytest.raises(TrajectoryError, match='cannot be timed'):
        read_trajectory(jsonl)
    jsonl.write_text(json.dumps(samples[0]) + '\n{"transforms": [\n')
    with pytest.raises(TrajectoryError, match='take.jsonl:2'):
        read_trajectory(jsonl)
    cbor.write_bytes(cbor2.dumps(samples[0]) + b'\xff\xff')
    with pytest.raises(TrajectoryError, match='not CBOR'):
        read_trajectory(cbor)
    with pytest.raises(TrajectoryError, match='read, not written'):
        from camstab_ros.io.trajectory import write_trajectory
        write_trajectory(jsonl, [0.0], [[0, 0, 0]], [[0, 0, 0, 1]])
