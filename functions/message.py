"""The message function: dedup, per-room seq, recent log, fan-out, then Kafka, per batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from chat import names
from chat.contract import ContractError, ErrorCode, Message, SendRequest, parse
from chat.ids import message_id
from functions.batch import BatchResult, StreamRecord
from functions.deps import Deps, OutRecord

# One atomic step per message. Redis runs scripts one at a time, so a room's seq order, its
# recent-log order and its fan-out order are the same order on every gateway, whichever host
# of this function ran the script. A dedup hit returns the first assignment and publishes nothing.
#   KEYS: seq counter, recent log, dedup key
#   ARGV: id, room, sender, text, client_msg_id, ts, stream entry id, dedup ttl,
#         log length, fan-out channel, Socket.IO room
_SEQUENCE = """
local hit = redis.call('GET', KEYS[3])
if hit then
  return {0, hit}
end
local seq = redis.call('INCR', KEYS[1])
local msg = cjson.encode({id = ARGV[1], room = ARGV[2], seq = seq, sender = ARGV[3],
                          text = ARGV[4], client_msg_id = ARGV[5], ts = ARGV[6]})
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], seq .. '-0', 'm', msg)
redis.call('SET', KEYS[3], seq .. '|' .. ARGV[6] .. '|' .. ARGV[7], 'EX', ARGV[8])
redis.call('PUBLISH', ARGV[10], '{"method":"emit","event":"message","data":[' .. msg ..
  '],"binary":false,"namespace":"/","room":' .. cjson.encode(ARGV[11]) ..
  ',"skip_sid":null,"callback":null,"host_id":"message-function"}')
return {1, tostring(seq)}
"""

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Inbound:
    """A validated send, as the gateway put it on the inbound stream."""

    record: StreamRecord
    request: SendRequest
    sender: str
    ts: str

    @property
    def id(self) -> str:
        """The message's final id."""
        return message_id(self.sender, self.request.room, self.request.client_msg_id)


def decode(record: StreamRecord) -> Inbound:
    """Validate a stream entry again: the stream is a trust boundary like any other."""
    fields = record.fields
    sender, ts = fields.get("sender"), fields.get("ts")
    if not sender or not ts:
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "entry lacks sender or ts")
    request = parse(
        SendRequest,
        {k: fields.get(k) for k in ("room", "text", "client_msg_id")},
    )
    return Inbound(record=record, request=request, sender=sender, ts=ts)


async def handle(batch: Sequence[StreamRecord], deps: Deps) -> BatchResult:
    """Sequence, fan out and forward a batch of accepted sends."""
    result = BatchResult()
    accepted: list[Inbound] = []
    for record in batch:
        try:
            accepted.append(decode(record))
        except ContractError as exc:
            result.poison[record.id] = f"{exc.code}: {exc.message}"
    if not accepted:
        return result

    settings = deps.settings
    script = deps.redis.register_script(_SEQUENCE)
    async with deps.redis.pipeline(transaction=False) as pipe:
        for item in accepted:
            room, msg_id = item.request.room, item.id
            await script(
                keys=[
                    names.seq_key(room),
                    names.recent_log_key(room),
                    names.dedup_key(room, msg_id),
                ],
                args=[
                    msg_id,
                    room,
                    item.sender,
                    item.request.text,
                    item.request.client_msg_id,
                    item.ts,
                    item.record.origin,
                    settings.dedup_ttl_s,
                    settings.recent_log_len,
                    settings.fanout_channel,
                    names.sio_room(room),
                ],
                client=pipe,
            )
        replies = await pipe.execute()

    to_kafka: list[OutRecord] = []
    for item, (fresh, value) in zip(accepted, replies, strict=True):
        if int(fresh):
            seq, ts = int(value), item.ts
        else:
            first_seq, first_ts, first_entry = str(value).split("|", 2)
            if first_entry != item.record.origin:
                # A re-sent duplicate: its first entry produces (or already produced) it.
                continue
            # A redelivery or a replay of the first entry: produce again; persist is idempotent.
            seq, ts = int(first_seq), first_ts
        message = Message(
            id=item.id,
            room=item.request.room,
            seq=seq,
            sender=item.sender,
            text=item.request.text,
            client_msg_id=item.request.client_msg_id,
            ts=ts,
        )
        to_kafka.append((message.room, _encode(message), None))
    await deps.produce(names.MESSAGES_TOPIC, to_kafka)
    return result
