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
from chat.shards import Command, NotReplicated, Script
from functions.batch import BatchResult, StreamRecord
from functions.deps import Deps, OutRecord

# One call per room per batch, atomic: Redis runs scripts one at a time, so a room's seq order,
# its recent-log order and its fan-out order are one order, whichever host ran the script. A
# dedup hit assigns nothing and publishes nothing; it returns the first assignment.
# The counter never falls behind the room's recent log (a counter lost or restored older than
# the log would hand out seqs already taken): the next seq follows the newest logged one.
# With ``publish`` '0' the script publishes nothing: the caller publishes once replicas hold
# the writes (Redis WAIT), so no member ever sees a seq a failover could hand out again.
#   KEYS: seq counter, recent log, then one dedup key per message
#   ARGV: dedup ttl, log length, room channel, publish ('1'/'0'),
#         then per message: JSON head, JSON tail, entry id
# Reply per message: {1, seq} when sequenced now, {0, "<seq>|<entry id>"} on a dedup hit.
_SEQUENCE = Script(
    frames.MESSAGE_LUA
    + """
local ttl, log_len, channel, publish = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
local guarded = false
for i = 1, #KEYS - 2 do
  local dedup = KEYS[2 + i]
  local hit = redis.call('GET', dedup)
  if hit then
    out[i] = {0, hit}
  else
    if not guarded then
      guarded = true
      local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
      if newest then
        local logged = tonumber(string.match(newest[1], '^(%d+)-'))
        if logged > tonumber(redis.call('GET', KEYS[1]) or '0') then
          redis.call('SET', KEYS[1], string.format('%d', logged))
        end
      end
    end
    local at = 4 + 3 * (i - 1)
    local seq = redis.call('INCR', KEYS[1])
    local msg = message_json(ARGV[at + 1], seq, ARGV[at + 2])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', log_len, seq_text(seq) .. '-0', 'm', msg)
    redis.call('SET', dedup, seq_text(seq) .. '|' .. ARGV[at + 3], 'EX', ttl)
    if publish == '1' then
      redis.call('SPUBLISH', channel, fanout_frame('message', seq, event_packet('message', msg)))
    end
    out[i] = {1, seq}
  end
end
return out
"""
)
# A batch whose writes the replicas did not confirm in time is run again this often (the
# script is idempotent: a second run returns the first run's seqs) before the batch fails.
_REPLICATION_TRIES = 3


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


def _to_forward(
    item: Inbound, head: bytes, tail: bytes, reply: Sequence[object]
) -> tuple[int, bytes] | None:
    """The seq and message JSON for one script reply, or None for a re-sent duplicate."""
    fresh, value = reply
    if int(str(fresh)):
        seq = int(str(value))
        return seq, frames.message_json(head, seq, tail)
    first = str(value)
    logged, _, origin = first.partition("|")
    # Records written before the ts left the dedup value read "<seq>|<ts>|<entry id>".
    origin = origin.rpartition("|")[2]
    if origin != item.record.origin:
        return None  # a re-sent duplicate: its first entry produces (or produced) it
    # A redelivery or a replay of the first entry: produce again; persist is idempotent.
    return int(logged), frames.message_json(head, int(logged), tail)


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
    wait = settings.redis_wait_replicas
    plans: list[tuple[list[Inbound], list[tuple[bytes, bytes]]]] = []
    calls = []
    for room, items in by_room.items():
        templates = [item.template() for item in items]
        args: list[str | bytes | int] = [
            settings.dedup_ttl_s,
            settings.recent_log_len,
            names.room_channel(room),
            0 if wait else 1,
        ]
        for item, (head, tail) in zip(items, templates, strict=True):
            args += [head, tail, item.record.origin]
        keys = [
            names.seq_key(room),
            names.recent_log_key(room),
            *(names.dedup_key(room, item.id) for item in items),
        ]
        calls.append(_SEQUENCE.call(keys, args))
        plans.append((items, templates))
    # One pipeline per node holding these rooms (every room on a standalone Redis).
    for attempt in range(1, _REPLICATION_TRIES + 1):
        try:
            replies = await deps.shards.run(calls, wait_replicas=wait)
            break
        except NotReplicated:
            if attempt == _REPLICATION_TRIES:
                raise

    to_kafka: list[OutRecord] = []
    publish: list[Command] = []
    for (items, templates), room_replies in zip(plans, replies, strict=True):
        for item, (head, tail), reply in zip(items, templates, room_replies, strict=True):
            out = _to_forward(item, head, tail, reply)
            if out is None:
                continue
            seq, value = out
            room = item.request.room
            to_kafka.append((room, value, None))
            if wait:
                channel = names.room_channel(room)
                frame = frames.encode_frame("message", frames.event_packet("message", value), seq)
                publish.append(Command(channel, ("SPUBLISH", channel, frame)))
    if publish:
        # Replicated: members may see these seqs now (a redelivery publishes again; nodes drop
        # a seq they already delivered).
        await deps.shards.run(publish)
    result.settle = deps.forwarder.send(names.MESSAGES_TOPIC, to_kafka)
    return result
