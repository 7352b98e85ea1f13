"""Lambda adapters on recorded events: the handlers get what the local runtime would give them."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from chat.settings import Settings
from functions.aws.events import (
    BridgeBatch,
    EventError,
    KafkaEvent,
    decode_result,
    encode_result,
    kafka_batch_response,
)
from functions.aws.lambda_handler import LambdaRuntime
from functions.batch import BatchResult, KafkaRecord, StreamRecord
from functions.registry import REGISTRY, Function
from functions.runtime.invoke import invoke
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Route, Schedule
from functions.web import function_app

pytestmark = pytest.mark.timeout(30)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEEN: list[Sequence[Any]] = []
TICKS: list[object] = []


def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


async def probe(batch: Sequence[Any], deps: Any) -> BatchResult:
    """A batch handler that fails the second record and calls the third poison."""
    SEEN.append(list(batch))
    result = BatchResult()
    if len(batch) > 1:
        result.failed.add(batch[1].id)
    if len(batch) > 2:
        result.poison[batch[2].id] = "bad record"
    return result


async def tick(deps: Any) -> None:
    """A scheduled handler that records its runs."""
    TICKS.append(deps)


class FakeDeps:
    """Settings plus a producer that records instead of sending."""

    def __init__(self) -> None:
        self.settings = Settings(environment="test", dev_auth=True)
        self.produced: list[tuple[str, list[Any]]] = []

    async def produce(self, topic: str, records: Any, timeout_s: float = 30) -> None:
        self.produced.append((topic, list(records)))

    async def available(self) -> bool:
        return True


@pytest.fixture
def fake_deps() -> Iterator[FakeDeps]:
    SEEN.clear()
    TICKS.clear()
    yield FakeDeps()


def _runtime(fn: Function, deps: FakeDeps) -> LambdaRuntime:
    return LambdaRuntime(fn, deps)  # type: ignore[arg-type]


def _kafka_fn(handler: str = "test_aws_adapters:probe", **settings: Any) -> Function:
    topic = KafkaTopic(
        topic="chat.messages", group="probe", dead_letter="chat.messages.dead", **settings
    )
    return Function(name="probe", handler=handler, trigger=topic)


def test_msk_event_decodes_to_the_records_the_local_consumer_builds() -> None:
    event = KafkaEvent.parse(_fixture("msk_event.json"))
    assert event.source == "aws:kafka"
    first = event.records[0]
    assert first == KafkaRecord(
        topic="chat.messages",
        partition=0,
        offset=15,
        key=b"lobby",
        value=first.value,
        timestamp_ms=1741608000000,
    )
    assert json.loads(first.value)["text"] == "hello"
    assert [r.id for r in event.records] == [
        "chat.messages/0/15",
        "chat.messages/0/16",
        "chat.messages/3/7",
    ]
    assert event.records[2].value == b"{not json"


def test_self_managed_kafka_events_decode_the_same() -> None:
    raw = _fixture("msk_event.json")
    raw["eventSource"] = "SelfManagedKafka"
    assert KafkaEvent.parse(raw).records == KafkaEvent.parse(_fixture("msk_event.json")).records


def test_other_events_are_refused() -> None:
    with pytest.raises(EventError):
        KafkaEvent.parse({"eventSource": "aws:sqs", "Records": []})
    broken = _fixture("msk_event.json")
    broken["records"]["chat.messages-0"][0]["value"] = "%%%"
    with pytest.raises(EventError):
        KafkaEvent.parse(broken)


def test_kafka_batch_retries_failures_in_process_and_dead_letters_poison(
    fake_deps: FakeDeps,
) -> None:
    # GIVEN a Kafka function whose handler fails one record and rejects another
    runtime = _runtime(_kafka_fn(), fake_deps)
    try:
        # WHEN Lambda hands it the recorded MSK batch
        reply = runtime(_fixture("msk_event.json"), None)
    finally:
        runtime.close()
    records = KafkaEvent.parse(_fixture("msk_event.json")).records
    # THEN the handler saw exactly the decoded records, then the failed one again, alone
    assert [list(records), [dataclasses.replace(records[1], attempt=2)]] == SEEN
    # AND, that retry succeeding, Lambda has nothing to hand over again
    assert reply == {"batchItemFailures": []}
    # AND the poison record went to the dead-letter topic with the local runtime's headers
    ((topic, produced),) = fake_deps.produced
    assert topic == "chat.messages.dead"
    ((key, value, headers),) = produced
    assert (key, value) == (b"garden", b"{not json")
    assert headers == {
        "error": "bad record",
        "attempts": "1",
        "source": "chat.messages/3/7",
        "function": "probe",
    }


async def crash_on_16(batch: Sequence[Any], deps: Any) -> BatchResult:
    """A batch handler that raises on any batch holding offset 16."""
    SEEN.append(list(batch))
    if any(r.offset == 16 for r in batch):
        raise RuntimeError("offset 16 breaks me")
    return BatchResult()


async def all_poison(batch: Sequence[Any], deps: Any) -> BatchResult:
    """A batch handler that calls every record poison (a bad deploy)."""
    SEEN.append(list(batch))
    return BatchResult(poison={r.id: "bad deploy" for r in batch})


def test_kafka_batch_is_bisected_in_process_down_to_the_crashing_record(
    fake_deps: FakeDeps,
) -> None:
    # GIVEN a handler that raises whenever offset 16 is in its batch (max 2 attempts)
    runtime = _runtime(_kafka_fn("test_aws_adapters:crash_on_16", max_attempts=2), fake_deps)
    try:
        reply = runtime(_fixture("msk_event.json"), None)
    finally:
        runtime.close()
    # THEN the batch was split until offset 16 failed alone, twice, before going on
    assert [[r.offset for r in b] for b in SEEN] == [[15, 16, 7], [15], [16, 7], [16], [16], [7]]
    # AND only it was dead-lettered; Lambda commits the whole batch
    ((_, produced),) = fake_deps.produced
    assert [h["source"] for _, _, h in produced] == ["chat.messages/0/16"]
    assert "offset 16 breaks me" in produced[0][2]["error"]
    assert produced[0][2]["attempts"] == "2"
    assert reply == {"batchItemFailures": []}


def test_kafka_batch_past_the_dead_letter_cap_is_handed_back(fake_deps: FakeDeps) -> None:
    # GIVEN a bad deploy (every record poison) and a cap of one dead letter
    runtime = _runtime(_kafka_fn("test_aws_adapters:all_poison", dead_letter_cap=1), fake_deps)
    try:
        first = runtime(_fixture("msk_event.json"), None)
        second = runtime(_fixture("msk_event.json"), None)
    finally:
        runtime.close()
    # THEN one record is dead-lettered and the others are reported, from the first of each
    ((_, produced),) = fake_deps.produced
    assert [h["source"] for _, _, h in produced] == ["chat.messages/0/15"]
    failures = [
        {"itemIdentifier": {"partition": "chat.messages-0", "offset": 16}},
        {"itemIdentifier": {"partition": "chat.messages-3", "offset": 7}},
    ]
    assert first == {"batchItemFailures": failures}
    # AND while the cap holds, the environment hands everything back without running it
    assert len(SEEN) == 1
    assert second == {
        "batchItemFailures": [
            {"itemIdentifier": {"partition": "chat.messages-0", "offset": 15}},
            {"itemIdentifier": {"partition": "chat.messages-3", "offset": 7}},
        ]
    }


class _NearlyOut:
    """A Lambda context with one second left."""

    def get_remaining_time_in_millis(self) -> int:
        return 1000


def test_kafka_batch_without_time_left_is_handed_back_unrun(fake_deps: FakeDeps) -> None:
    runtime = _runtime(_kafka_fn(), fake_deps)
    try:
        reply = runtime(_fixture("msk_event.json"), _NearlyOut())
    finally:
        runtime.close()
    assert SEEN == []
    assert [f["itemIdentifier"]["offset"] for f in reply["batchItemFailures"]] == [15, 7]


def test_kafka_adapter_matches_the_local_invoke_for_persist(fake_deps: FakeDeps) -> None:
    # Only undecodable records: persist decides without reaching PostgreSQL.
    raw = _fixture("msk_event.json")
    raw["records"] = {"chat.messages-3": raw["records"]["chat.messages-3"]}
    persist = REGISTRY["persist"]
    records = KafkaEvent.parse(raw).records
    local = asyncio.run(invoke(persist, persist.load(), records, fake_deps))  # type: ignore[arg-type]
    runtime = _runtime(persist, fake_deps)
    try:
        reply = runtime(raw, None)
    finally:
        runtime.close()
    assert reply == kafka_batch_response(records, local.failed)
    ((_, produced),) = fake_deps.produced
    assert [headers["error"] for _, _, headers in produced] == list(local.poison.values())


def test_partial_batch_reply_resumes_each_partition_at_its_lowest_failure() -> None:
    records = [
        KafkaRecord(topic="t", partition=p, offset=o, key=None, value=b"")
        for p, o in [(0, 5), (0, 6), (0, 7), (1, 2), (1, 3)]
    ]
    reply = kafka_batch_response(records, {"t/0/7", "t/0/6", "t/1/3"})
    assert reply["batchItemFailures"] == [
        {"itemIdentifier": {"partition": "t-0", "offset": 6}},
        {"itemIdentifier": {"partition": "t-1", "offset": 3}},
    ]
    assert kafka_batch_response(records, set()) == {"batchItemFailures": []}


def test_bridge_batch_round_trips_to_the_same_stream_records(fake_deps: FakeDeps) -> None:
    stream = RedisStream(stream="chat:inbound", group="probe")
    fn = Function(name="probe", handler="test_aws_adapters:probe", trigger=stream)
    records = (
        StreamRecord(id="1-0", fields={"room": "lobby", "text": "hi"}),
        StreamRecord(id="2-0", fields={"room": "lobby", "text": "again"}, attempt=3),
        StreamRecord(id="3-0", fields={}),
    )
    payload = json.loads(BridgeBatch(function="probe", records=records).encode())
    runtime = _runtime(fn, fake_deps)
    try:
        reply = runtime(payload, None)
    finally:
        runtime.close()
    assert [list(records)] == SEEN
    local = asyncio.run(probe(records, fake_deps))
    assert reply == encode_result(local)
    assert decode_result(reply) == local


def test_bridge_batch_for_another_function_is_refused(fake_deps: FakeDeps) -> None:
    stream = RedisStream(stream="chat:inbound", group="probe")
    fn = Function(name="probe", handler="test_aws_adapters:probe", trigger=stream)
    payload = json.loads(BridgeBatch(function="other", records=()).encode())
    runtime = _runtime(fn, fake_deps)
    try:
        with pytest.raises(ValueError, match="other"):
            runtime(payload, None)
    finally:
        runtime.close()


def test_scheduled_event_runs_the_function(fake_deps: FakeDeps) -> None:
    fn = Function(name="sweep", handler="test_aws_adapters:tick", trigger=Schedule(every_s=60))
    event = {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2025-03-10T12:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/chat-prod-sweep"],
        "detail": {},
    }
    runtime = _runtime(fn, fake_deps)
    try:
        assert runtime(event, None) is None
        with pytest.raises(EventError):
            runtime({"source": "aws.s3"}, None)
    finally:
        runtime.close()
    assert [fake_deps] == TICKS


def _local_http(app: Any, event: dict[str, Any]) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://local") as client:
            return await client.get(
                event["rawPath"] + "?" + event["rawQueryString"], headers=event["headers"]
            )

    return asyncio.run(call())


async def room_messages(request: Request, deps: Any) -> JSONResponse:
    limit = int(request.query_params.get("limit", "50"))
    if not 1 <= limit <= 200:
        return JSONResponse({"error": {"code": "invalid_parameter", "message": "limit"}}, 400)
    return JSONResponse(
        {"room": request.path_params["room"], "limit": limit, "user": request.headers["x-user"]}
    )


@pytest.mark.parametrize(
    ("query", "status", "answer"),
    [
        ("limit=500", 400, {"error": {"code": "invalid_parameter", "message": "limit"}}),
        ("limit=20", 200, {"room": "lobby", "limit": 20, "user": "alice"}),
    ],
    ids=["limit=500", "limit=20"],
)
def test_api_gateway_event_reaches_the_app_like_a_local_request(
    fake_deps: FakeDeps, query: str, status: int, answer: dict[str, Any]
) -> None:
    # GIVEN the recorded API Gateway v2 request and an HTTP function
    event = _fixture("apigw_v2_event.json")
    event["rawQueryString"] = query
    event["queryStringParameters"] = dict([query.split("=")])
    fn = Function(
        name="probe",
        handler="test_aws_adapters",
        trigger=HttpRoute(routes=(Route("GET /rooms/{room}/messages", "room_messages"),)),
    )
    runtime = _runtime(fn, fake_deps)
    try:
        # WHEN Lambda hands it to the function
        reply = runtime(copy.deepcopy(event), None)
    finally:
        runtime.close()
    # THEN it answers the page, or the refusal, for the path's room and the caller ...
    assert reply is not None
    body = base64.b64decode(reply["body"]) if reply.get("isBase64Encoded") else reply["body"]
    assert (reply["statusCode"], json.loads(body)) == (status, answer)
    # ... exactly as the same app answers the same request locally
    local = _local_http(function_app(fn, fake_deps), event)  # type: ignore[arg-type]
    assert (local.status_code, local.json()) == (status, answer)


def test_each_archive_holds_its_handler_and_only_what_it_imports() -> None:
    from functions.aws.package import archives, closure

    for archive in archives(list(REGISTRY.values())):
        found = closure(archive.roots)
        assert set(archive.roots) <= set(found.files)
        assert not any(m.startswith(("realtime", "devstack", "infra")) for m in found.files)
    persist = closure(["functions.persist", "functions.aws.lambda_handler"])
    assert "functions.history" not in persist.files
    assert "mangum" not in persist.third_party
    with pytest.raises(LookupError):
        closure(["functions.no_such_module"])
