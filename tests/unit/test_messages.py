"""Unit tests for adrizzle.wire.messages: typed messages and checked meta decoding."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrizzle.errors import RemoteProtocolError
from adrizzle.wire.checks import check_map_outputs
from adrizzle.wire.messages import (
    HANDSHAKE_TYPES,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Auth,
    BatchResult,
    CancelGroups,
    ClusterView,
    Draining,
    DriverLink,
    DropShared,
    Error,
    FetchBlocks,
    GroupDone,
    GroupFailed,
    Heartbeat,
    Hello,
    LaunchGroup,
    MapOutputReady,
    MapOutputs,
    Message,
    OffsetsLogged,
    PeerLost,
    PutShared,
    RunTasks,
    Shutdown,
    SinkFailed,
    SlotDone,
    SlotNotice,
    SlotReady,
    StateCheckpoint,
    decode_meta,
    encode_meta,
    fields_of,
)

#: One hand-written instance of every message type, with every field set to a non-default value.
SAMPLES: list[Message] = [
    Hello(
        version=PROTOCOL_VERSION,
        role="worker",
        id="w-1",
        nonce="ab" * 16,
        cores=8,
        pid=1234,
        data_address="127.0.0.1:5000",
    ),
    Auth(mac="00ff" * 16),
    Error(reason="bye: ünïcode ✓"),
    Heartbeat(),
    LaunchGroup(
        group=3,
        first_job=10,
        last_job=14,
        stages=[0, 1],
        placement_workers=["w1", "w2"],
        placement_slots=[0, 0],
        slot_ids=[0, 1],
        slot_data=[0, 17],
        program_len=99,
        release=[1, 2],
        slot_state=[5, 0],
        checkpoint=1,
    ),
    BatchResult(
        group=3,
        jobs=[11, 12],
        parts=[0, 2],
        failed=[0, 1],
        positions=[[11, 0, "0-0", "17-3"], [12, 1, [5, "a.log"], [9, "b.log"]]],
    ),
    GroupDone(group=3, tasks=16, failed=1, busy_us=12345, pushed_blocks=4, pushed_bytes=999),
    Shutdown(),
    SlotReady(pid=4321),
    SlotNotice(message="slot 0: no result link, sending through the worker: refused"),
    DriverLink(
        host="127.0.0.1",
        port=7077,
        token="t" * 43,
        worker="w-1",
        pid=99,
        slot=1,
        handshake_timeout_ms=5000,
        tls_ca_file="/etc/adrizzle/ca.pem",
    ),
    RunTasks(
        group=3,
        first_job=10,
        last_job=14,
        stages=[0],
        placement_workers=["w1"],
        placement_slots=[0],
        worker="w1",
        slot=0,
        program_len=99,
        release=[],
        state_len=5,
        checkpoint=1,
    ),
    ClusterView(workers=["w1", "w2"], data_addresses=["127.0.0.1:1", "127.0.0.1:2"]),
    MapOutputReady(group=3, job=4, shuffle=0, map_part=2, worker="w2", slot=1, reduce_parts=[1, 3]),
    MapOutputs(group=3, worker="w2", slot=1, outputs=[[4, 0, 2, 17], [5, 0, 2, 19]]),
    FetchBlocks(group=3, first_job=0, last_job=10, shuffles=[0], worker="w1"),
    GroupFailed(group=3, worker="w1", slot=0, reason="cannot load: ModuleNotFoundError"),
    CancelGroups(groups=[3, 4]),
    Draining(reason="received SIGTERM"),
    PeerLost(peer="w2", reason="data link closed"),
    SlotDone(group=3, tasks=8, failed=0, busy_us=777, pushed_blocks=2, pushed_bytes=500, of=2),
    StateCheckpoint(group=3, slot=1, keys=[[7, 0], [7, 2]], batches=[41, 41]),
    OffsetsLogged(stream="clicks", through=41),
    SinkFailed(group=3),
    PutShared(kind="files", ids=[2, 5], lens=[120, 9], names=["helpers.py", "pkg"]),
    DropShared(ids=[4]),
]


def test_samples_cover_every_registered_type() -> None:
    # A new message type must get a sample here (and so a round-trip test).
    assert {type(m) for m in SAMPLES} == set(MESSAGE_TYPES.values())
    assert len(SAMPLES) == len(MESSAGE_TYPES)


def test_tags_are_unique_and_registered_under_their_tag() -> None:
    for tag, cls in MESSAGE_TYPES.items():
        assert cls.TAG == tag
        assert tag
    assert len({cls.TAG for cls in MESSAGE_TYPES.values()}) == len(MESSAGE_TYPES)


def test_handshake_types() -> None:
    assert {Hello, Auth, Error} == HANDSHAKE_TYPES


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.TAG)
def test_roundtrip(msg: Message) -> None:
    meta = encode_meta(msg)
    assert type(meta) is bytes
    decoded = decode_meta(meta)
    assert type(decoded) is type(msg)
    assert decoded == msg


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.TAG)
def test_meta_is_a_json_object_with_tag_and_all_fields(msg: Message) -> None:
    obj = orjson.loads(encode_meta(msg))
    assert obj.pop("t") == msg.TAG
    assert obj == {name: getattr(msg, name) for name, _a, _r in fields_of(type(msg))}


def test_optional_fields_take_their_defaults() -> None:
    msg = decode_meta(b'{"t":"hello","version":1,"role":"driver","id":"d","nonce":"n"}')
    assert msg == Hello(version=1, role="driver", id="d", nonce="n")
    assert isinstance(msg, Hello)
    assert (msg.cores, msg.pid, msg.data_address) == (0, 0, None)


def test_optional_str_accepts_null() -> None:
    meta = b'{"t":"hello","version":1,"role":"r","id":"i","nonce":"n","data_address":null}'
    msg = decode_meta(meta)
    assert isinstance(msg, Hello)
    assert msg.data_address is None


def test_empty_lists_are_valid() -> None:
    msg = RunTasks(
        group=0,
        first_job=0,
        last_job=0,
        stages=[],
        placement_workers=[],
        placement_slots=[],
        worker="",
        slot=0,
        program_len=0,
        release=[],
    )
    assert decode_meta(encode_meta(msg)) == msg


# -- random values for every field of every type -------------------------------------------

_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "str": st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20),
}
_STRATEGIES["str | None"] = st.none() | _STRATEGIES["str"]
_STRATEGIES["list[int]"] = st.lists(_STRATEGIES["int"], max_size=5)
_STRATEGIES["list[list[int]]"] = st.lists(_STRATEGIES["list[int]"], max_size=4)
_STRATEGIES["list[str]"] = st.lists(_STRATEGIES["str"], max_size=4)
_JSON = st.recursive(
    st.none() | st.booleans() | _STRATEGIES["int"] | _STRATEGIES["str"],
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)
_STRATEGIES["list[list[Any]]"] = st.lists(st.lists(_JSON, max_size=4), max_size=3)


def _message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    return st.builds(cls, **{name: _STRATEGIES[a] for name, a, _r in fields_of(cls)})


@settings(max_examples=300, deadline=None)
@given(st.one_of([_message_strategy(cls) for cls in MESSAGE_TYPES.values()]))
def test_roundtrip_random_values(msg: Message) -> None:
    assert decode_meta(encode_meta(msg)) == msg


# -- malformed metas -----------------------------------------------------------------------


@pytest.mark.parametrize("meta", [b"{", b"", b"\xff\xfe", b'{"t":"heartbeat",}', b"nope"])
def test_invalid_json(meta: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="not valid JSON"):
        decode_meta(meta)


@pytest.mark.parametrize("meta", [b"[]", b'["t","hello"]', b'"hello"', b"1", b"null", b"true"])
def test_json_that_is_not_an_object(meta: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="not a JSON object"):
        decode_meta(meta)


@pytest.mark.parametrize(
    ("meta", "shown"),
    [
        (b'{"t":"no_such_type"}', "'no_such_type'"),
        (b'{"t":"Hello"}', "'Hello'"),
        (b'{"t":""}', "''"),
        (b'{"t":5}', "5"),
        (b'{"t":["hello"]}', "['hello']"),
        (b'{"t":null}', "None"),
        (b"{}", "None"),
    ],
)
def test_unknown_type(meta: bytes, shown: str) -> None:
    with pytest.raises(RemoteProtocolError, match="unknown message type") as info:
        decode_meta(meta)
    assert shown in str(info.value)


def _meta(msg: Message, **changes: object) -> bytes:
    obj = orjson.loads(encode_meta(msg))
    for key, value in changes.items():
        if value is _DROP:
            del obj[key]
        else:
            obj[key] = value
    return orjson.dumps(obj)


_DROP = object()
_HELLO = Hello(version=1, role="worker", id="w", nonce="n")
_LAUNCH = SAMPLES[4]
assert isinstance(_LAUNCH, LaunchGroup)


@pytest.mark.parametrize("name", ["version", "role", "id", "nonce"])
def test_missing_required_field(name: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_meta(_meta(_HELLO, **{name: _DROP}))
    assert str(info.value) == f"hello is missing field {name!r}"


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.TAG)
def test_every_required_field_is_checked(msg: Message) -> None:
    for name, _annotation, required in fields_of(type(msg)):
        if required:
            with pytest.raises(RemoteProtocolError, match=f"missing field '{name}'"):
                decode_meta(_meta(msg, **{name: _DROP}))


@pytest.mark.parametrize(
    ("msg", "name", "value", "expected"),
    [
        (_HELLO, "version", "1", "hello.version must be int, got str"),
        (_HELLO, "version", 1.0, "hello.version must be int, got float"),
        (_HELLO, "version", True, "hello.version must be int, got bool"),
        (_HELLO, "version", None, "hello.version must be int, got NoneType"),
        (_HELLO, "role", 1, "hello.role must be str, got int"),
        (_HELLO, "id", ["w"], "hello.id must be str, got list"),
        (_HELLO, "nonce", {"a": 1}, "hello.nonce must be str, got dict"),
        (_HELLO, "cores", "8", "hello.cores must be int, got str"),
        (_HELLO, "data_address", 5, "hello.data_address must be str | None, got int"),
        (_LAUNCH, "slot_ids", [1, "2"], "launch_group.slot_ids must be list[int], got list"),
        (_LAUNCH, "slot_ids", [1, 2.0], "launch_group.slot_ids must be list[int], got list"),
        (_LAUNCH, "slot_ids", [True], "launch_group.slot_ids must be list[int], got list"),
        (_LAUNCH, "slot_ids", 1, "launch_group.slot_ids must be list[int], got int"),
        (_LAUNCH, "slot_ids", {"0": 1}, "launch_group.slot_ids must be list[int], got dict"),
        (
            _LAUNCH,
            "placement_workers",
            ["w1", 2],
            "launch_group.placement_workers must be list[str], got list",
        ),
        (
            _LAUNCH,
            "placement_workers",
            "w1",
            "launch_group.placement_workers must be list[str], got str",
        ),
        (Auth(mac="x"), "mac", None, "auth.mac must be str, got NoneType"),
        (Error(reason="x"), "reason", 0, "error.reason must be str, got int"),
    ],
)
def test_wrong_field_type_names_the_field(
    msg: Message, name: str, value: object, expected: str
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_meta(_meta(msg, **{name: value}))
    assert str(info.value) == expected


def test_unknown_extra_field() -> None:
    launch = LaunchGroup(
        group=0,
        first_job=0,
        last_job=1,
        stages=[0],
        placement_workers=["w"],
        placement_slots=[0],
        slot_ids=[0],
        slot_data=[0],
        program_len=0,
        release=[],
    )
    with pytest.raises(RemoteProtocolError) as info:
        decode_meta(_meta(launch, zeta=1, alpha="x"))
    assert str(info.value) == "launch_group has unknown fields ['alpha', 'zeta']"


def test_hello_tolerates_unknown_fields_for_forward_compatibility() -> None:
    # A newer peer's hello must still decode, so the version check can name both versions.
    assert decode_meta(_meta(_HELLO, zeta=1)) == _HELLO


def test_extra_field_on_a_message_without_fields() -> None:
    with pytest.raises(RemoteProtocolError, match=r"heartbeat has unknown fields \['x'\]"):
        decode_meta(b'{"t":"heartbeat","x":null}')


def test_class_attribute_tag_is_not_a_field() -> None:
    # "TAG" is a ClassVar, not a field: sending it is an unknown field, not an override.
    with pytest.raises(RemoteProtocolError, match="unknown fields"):
        decode_meta(b'{"t":"heartbeat","TAG":"hello"}')


def test_messages_are_frozen() -> None:
    msg = Auth(mac="x")
    with pytest.raises(AttributeError):  # msgspec: "immutable type"
        msg.mac = "y"  # type: ignore[misc]


def test_a_map_outputs_bundle_must_add_up_to_its_payload() -> None:
    bundle = MapOutputs(group=3, worker="w2", slot=1, outputs=[[4, 0, 2, 17], [5, 0, 2, 19]])
    check_map_outputs(bundle, 36)
    with pytest.raises(RemoteProtocolError, match="payload length does not match"):
        check_map_outputs(bundle, 35)
    short = MapOutputs(group=3, worker="w2", slot=1, outputs=[[4, 0, 17]])
    with pytest.raises(RemoteProtocolError, match=r"\[job, shuffle, map_part, length\]"):
        check_map_outputs(short, 17)
    negative = MapOutputs(group=3, worker="w2", slot=1, outputs=[[4, 0, 2, -1], [5, 0, 2, 2]])
    with pytest.raises(RemoteProtocolError, match=r"\[job, shuffle, map_part, length\]"):
        check_map_outputs(negative, 1)
