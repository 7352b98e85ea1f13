"""The message function: dedup, per-room seq, recent log, per-room fan-out, then Kafka.

Live delivery never waits for Kafka: the batch's messages are sequenced, logged and published
to their rooms in one script call per room, then handed to the producer; the handler returns
at once with a ``settle`` future that resolves when Kafka has confirmed them, and the runtime
acks the stream entries only then. A host killed meanwhile loses nothing: its entries are
reclaimed, the dedup records give each the seq it already has, and they are produced again
(persist is idempotent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chat import frames, names
from chat.contract import ContractError, ErrorCode, Message, SendRequest, parse
from chat.ids import message_id
from functions.batch import BatchResult, StreamRecord
from functions.deps import Deps, OutRecord

# One call per room per batch, atomic: Redis runs scripts one at a time, so a room's seq order,
# its recent-log order and its fan-out order are one order, whichever host ran the script. A
# dedup hit assigns nothing and publishes nothing; it returns the first assignment.
#   KEYS: seq counter, recent log, then one dedup key per message
#   ARGV: dedup ttl, log length, room channel, then per message: JSON head, JSON tail, entry id
# Reply per message: {1, seq} when sequenced now, {0, "<seq>|<entry id>"} on a dedup hit.
_SEQUENCE = (
    frames.MESSAGE_LUA
    + """
local ttl, log_len, channel = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 1, #KEYS - 2 do
  local dedup = KEYS[2 + i]
  local hit = redis.call('GET', dedup)
  if hit then
    out[i] = {0, hit}
  else
    local at = 3 + 3 * (i - 1)
    local seq = redis.call('INCR', KEYS[1])
    local msg = message_json(ARGV[at + 1], seq, ARGV[at + 2])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', log_len, seq_text(seq) .. '-0', 'm', msg)
    redis.call('SET', dedup, seq_text(seq) .. '|' .. ARGV[at + 3], 'EX', ttl)
    redis.call('SPUBLISH', channel, fanout_frame('message', seq, event_packet('message', msg)))
    out[i] = {1, seq}
  end
end
return out
"""
)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A validated send, as the gateway put it on the inbound stream."""

    record: StreamRecord
    request: SendRequest
    sender: str
    ts: str
    # The message's final id (derived once: a uuid5 per message is most of this handler's work).
    id: str

    def template(self) -> tuple[bytes, bytes]:
        """The message's JSON around its seq, which the sequencing script fills in."""
        return frames.message_template(
            Message(
                id=self.id,
                room=self.request.room,
                seq=0,
                sender=self.sender,
                text=self.request.text,
                client_msg_id=self.request.client_msg_id,
                ts=self.ts,
            )
        )


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
    msg_id = message_id(sender, request.room, request.client_msg_id)
    return Inbound(record=record, request=request, sender=sender, ts=ts, id=msg_id)


def _to_forward(item: Inbound, head: bytes, tail: bytes, reply: Sequence[object]) -> bytes | None:
    """The Kafka value for one script reply, or None for a re-sent duplicate."""
    fresh, value = reply
    if int(str(fresh)):
        return frames.message_json(head, int(str(value)), tail)
    first = str(value)
    seq, _, origin = first.partition("|")
    # Records written before the ts left the dedup value read "<seq>|<ts>|<entry id>".
    origin = origin.rpartition("|")[2]
    if origin != item.record.origin:
        return None  # a re-sent duplicate: its first entry produces (or produced) it
    # A redelivery or a replay of the first entry: produce again; persist is idempotent.
    return frames.message_json(head, int(seq), tail)


async def handle(batch: Sequence[StreamRecord], deps: Deps) -> BatchResult:
    """Sequence and fan out a batch of accepted sends; Kafka's confirmation settles it."""
    result = BatchResult()
    by_room: dict[str, list[Inbound]] = {}
    for record in batch:
        try:
            item = decode(record)
        except ContractError as exc:
            result.poison[record.id] = f"{exc.code}: {exc.message}"
            continue
        by_room.setdefault(item.request.room, []).append(item)
    if not by_room:
        return result

    settings = deps.settings
    script = deps.redis.register_script(_SEQUENCE)
    plans: list[tuple[list[Inbound], list[tuple[bytes, bytes]]]] = []
    async with deps.redis.pipeline(transaction=False) as pipe:
        for room, items in by_room.items():
            templates = [item.template() for item in items]
            args: list[str | bytes | int] = [
                settings.dedup_ttl_s,
                settings.recent_log_len,
                names.room_channel(room),
            ]
            for item, (head, tail) in zip(items, templates, strict=True):
                args += [head, tail, item.record.origin]
            await script(
                keys=[
                    names.seq_key(room),
                    names.recent_log_key(room),
                    *(names.dedup_key(room, item.id) for item in items),
                ],
                args=args,
                client=pipe,
            )
            plans.append((items, templates))
        replies = await pipe.execute()

    to_kafka: list[OutRecord] = []
    for (items, templates), room_replies in zip(plans, replies, strict=True):
        for item, (head, tail), reply in zip(items, templates, room_replies, strict=True):
            value = _to_forward(item, head, tail, reply)
            if value is not None:
                to_kafka.append((item.request.room, value, None))
    result.settle = deps.forwarder.send(names.MESSAGES_TOPIC, to_kafka)
    return result
