"""The message function: dedup, per-room seq, recent log, per-room fan-out, then Kafka.

Every room event goes through here: sends, edits, deletes and reactions are sequenced by one
script call per room per batch, so they share the room's seq and its order. Read positions
are only forwarded (the gateway already moved them in Redis) so that they reach PostgreSQL.

Live delivery never waits for Kafka: the batch's events are sequenced, logged and published
to their rooms in one script call per room, then handed to the producer; the handler returns
at once with a ``settle`` future that resolves when Kafka has confirmed them, and the runtime
acks the stream entries only then. A host killed meanwhile loses nothing: its entries are
reclaimed, the dedup records give each the seq it already has, and they are produced again
(persist is idempotent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import assert_never

from chat import frames, inbound, names, records
from chat.contract import (
    MESSAGE_DELETED,
    MESSAGE_UPDATED,
    REACTION,
    ContractError,
    DeleteRequest,
    EditRequest,
    Message,
    MessageDeleted,
    MessageUpdated,
    Reaction,
    ReactRequest,
    SendRequest,
)
from chat.ids import message_id, op_id
from chat.lua import Signature
from chat.settings import Settings
from chat.shards import Command, NotReplicated
from functions.batch import BatchResult, StreamRecord
from functions.deps import Deps, OutRecord

# One call per room per batch, atomic: Redis runs scripts one at a time, so a room's seq order,
# its recent-log order and its fan-out order are one order, whichever host ran the script. A
# dedup hit assigns nothing and publishes nothing but its op's outcome; it returns the first
# outcome. The counter never falls behind the room's recent log (a counter lost or restored
# older than the log would hand out seqs already taken): the next seq follows the newest one.
# With ``publish`` '0' the script publishes nothing: the caller publishes once replicas hold
# the writes (Redis WAIT), so no member ever sees a seq a failover could hand out again.
#
# Per message the room keeps ``<seq>|<version>|<deleted>|<sender>`` (the rules of edits,
# deletes, reactions and replies), its seq in the live set and in its sender's own set (exact
# unread counts), and per message with reactions a count per emoji and the (emoji, user) pairs.
# A rule broken (not_found, forbidden, too_many_emojis) sequences nothing and is recorded under
# the op's dedup key, so a retry gets the same answer.
#   Per room: its keys and the batch's settings; publish is '1'/'0'.
#   Per item: its kind (m/e/d/r), JSON head and tail, entry id, message id, sender, op id ('' when
#   nobody waits for the outcome), reply_to or emoji, on ('1'/'0').
# Reply per item: {1, seq, msg_seq, version} sequenced now; {0, "<dedup record>"} on a dedup
# hit; {2, code} when nothing was sequenced ('ok' for a reaction that changes nothing).
SEQUENCE = Signature(
    keys=("seq_key", "log_key", "states", "live"),
    args=("ttl", "log_len", "channel", "publish", "max_emojis"),
    item_keys=("dedup", "own", "reactions", "reactors"),
    item_args=("kind", "head", "tail", "origin", "id", "sender", "op", "extra", "on"),
)
_SEQUENCE = SEQUENCE.script(
    prelude=frames.MESSAGE_LUA,
    body="""
local emoji_cap = tonumber(max_emojis)
local out = {}
local guarded = false
local function next_seq()
  if not guarded then
    guarded = true
    local newest = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', 1)[1]
    if newest then
      local logged = tonumber(string.match(newest[1], '^(%d+)-'))
      if logged > tonumber(redis.call('GET', seq_key) or '0') then
        redis.call('SET', seq_key, string.format('%d', logged))
      end
    end
  end
  return redis.call('INCR', seq_key)
end
local function tell(op, code, version)
  if op ~= '' and publish == '1' then
    redis.call('SPUBLISH', channel, op_frame(op, code, version))
  end
end
local function state_of(id)
  local raw = redis.call('HGET', states, id)
  if not raw then return nil end
  local seq, version, deleted, sender = string.match(raw, '^(%d+)|(%d+)|(%d)|(.*)$')
  return {seq = tonumber(seq), version = tonumber(version), deleted = deleted == '1',
          sender = sender}
end
local function emit(seq, event, json)
  log_append(log_key, log_len, seq, event, json)
  if publish == '1' then
    redis.call('SPUBLISH', channel, fanout_frame(event, seq, event_packet(event, json)))
  end
end
"""
    + SEQUENCE.each_item()
    + """
  local hit = redis.call('GET', dedup)
  if hit then
    local code = string.match(hit, '^%-|(.*)$')
    if code then
      tell(op, code, 0)
    elseif kind == 'e' then
      tell(op, 'ok', tonumber(string.match(hit, '|(%d+)$')))
    else
      tell(op, 'ok', 0)
    end
    out[i] = {0, hit}
  else
    local refused = nil
    local target = nil
    if kind == 'm' then
      if extra ~= '' then
        target = state_of(extra)
        if not target or target.deleted then refused = 'not_found' end
      end
    else
      target = state_of(id)
      if not target or target.deleted then
        refused = 'not_found'
      elseif kind ~= 'r' and target.sender ~= sender then
        refused = 'forbidden'
      elseif kind == 'r' then
        local pair = extra .. '\\n' .. sender
        if on == '1' then
          if redis.call('SISMEMBER', reactors, pair) == 1 then
            refused = 'ok'
          elseif redis.call('HEXISTS', reactions, extra) == 0
              and redis.call('HLEN', reactions) >= emoji_cap then
            refused = 'too_many_emojis'
          else
            redis.call('SADD', reactors, pair)
            redis.call('HINCRBY', reactions, extra, 1)
          end
        elseif redis.call('SREM', reactors, pair) == 0 then
          refused = 'ok'
        elseif redis.call('HINCRBY', reactions, extra, -1) <= 0 then
          redis.call('HDEL', reactions, extra)
        end
      end
    end
    if refused then
      redis.call('SET', dedup, '-|' .. refused, 'EX', ttl)
      tell(op, refused, 0)
      out[i] = {2, refused}
    else
      local seq = next_seq()
      local msg_seq, version = seq, 1
      if kind == 'm' then
        emit(seq, 'message', message_json(head, seq, tail))
        redis.call('HSET', states, id, seq_text(seq) .. '|1|0|' .. sender)
        redis.call('ZADD', live, seq, seq_text(seq))
        redis.call('ZADD', own, seq, seq_text(seq))
        redis.call('SET', dedup, seq_text(seq) .. '|' .. origin, 'EX', ttl)
      else
        msg_seq, version = target.seq, target.version
        local record = '|' .. seq_text(msg_seq)
        if kind == 'e' then
          version = version + 1
          emit(seq, 'message_updated', event_json(head, seq, msg_seq, version, tail))
          redis.call('HSET', states, id,
            seq_text(msg_seq) .. '|' .. seq_text(version) .. '|0|' .. target.sender)
          record = record .. '|' .. seq_text(version)
        elseif kind == 'd' then
          emit(seq, 'message_deleted', event_json(head, seq, msg_seq, nil, tail))
          redis.call('HSET', states, id,
            seq_text(msg_seq) .. '|' .. seq_text(version) .. '|1|' .. target.sender)
          redis.call('ZREM', live, seq_text(msg_seq))
          redis.call('ZREM', own, seq_text(msg_seq))
          redis.call('DEL', reactions, reactors)
        else
          emit(seq, 'reaction', event_json(head, seq, msg_seq, nil, tail))
        end
        redis.call('SET', dedup, seq_text(seq) .. '|' .. origin .. record, 'EX', ttl)
      end
      if kind == 'e' then tell(op, 'ok', version) else tell(op, 'ok', 0) end
      out[i] = {1, seq, msg_seq, version}
    end
  end
end
return out
""",
)
# A batch whose writes the replicas did not confirm in time is run again this often (the
# script is idempotent: a second run returns the first run's seqs) before the batch fails.
_REPLICATION_TRIES = 3
_EVENT_OF = {"m": "message", "e": MESSAGE_UPDATED, "d": MESSAGE_DELETED, "r": REACTION}


@dataclass(frozen=True, slots=True)
class Inbound:
    """A validated room op (send, edit, delete, react), as the gateway put it on the stream."""

    record: StreamRecord
    room: str
    # "m" (send), "e" (edit), "d" (delete), "r" (react)
    kind: str
    sender: str
    # A send: its final id; an op: the id of the message it applies to.
    id: str
    # The id under which the outcome is published ("" when nobody waits for it) and recorded.
    op: str
    dedup: str
    head: bytes
    tail: bytes
    extra: str = ""
    on: str = ""

    @property
    def origin(self) -> str:
        """The id of the stream entry this op was first appended as."""
        return self.record.origin

    # Both lists follow SEQUENCE's item_args and item_keys (a unit test holds them to it).
    def args(self) -> list[str | bytes]:
        """The item's arguments of the sequencing script."""
        return [
            self.kind,
            self.head,
            self.tail,
            self.record.origin,
            self.id,
            self.sender,
            self.op,
            self.extra,
            self.on,
        ]

    def keys(self) -> list[str]:
        """The item's keys of the sequencing script."""
        room = self.room
        return [
            self.dedup,
            names.own_key(room, self.sender),
            names.reactions_key(room, self.id),
            names.reactors_key(room, self.id),
        ]

    def json(self, seq: int, msg_seq: int, version: int) -> bytes:
        """The event's JSON with the numbers the script assigned."""
        if self.kind == "m":
            return frames.message_json(self.head, seq, self.tail)
        return frames.event_json(
            self.head, seq, msg_seq, version if self.kind == "e" else None, self.tail
        )


# Both lists follow SEQUENCE's keys and args (a unit test holds them to it).
def room_keys(room: str) -> list[str]:
    """The room's keys of the sequencing script."""
    return [
        names.seq_key(room),
        names.recent_log_key(room),
        names.message_state_key(room),
        names.live_key(room),
    ]


def room_args(room: str, settings: Settings) -> list[str | bytes | int]:
    """The room's arguments of the sequencing script (publishing unless replicas are awaited)."""
    return [
        settings.dedup_ttl_s,
        settings.recent_log_len,
        names.room_channel(room),
        0 if settings.redis_wait_replicas else 1,
        settings.max_emojis_per_message,
    ]


def decode(record: StreamRecord) -> Inbound:
    """Validate a stream entry again: the stream is a trust boundary like any other."""
    sender, ts = inbound.sender_and_ts(record.fields)
    request = inbound.decode_op(record.fields)
    room = request.room
    if isinstance(request, SendRequest):
        msg_id = message_id(sender, room, request.client_msg_id)
        head, tail = frames.message_template(
            Message(
                id=msg_id,
                room=room,
                seq=0,
                sender=sender,
                text=request.text,
                client_msg_id=request.client_msg_id,
                ts=ts,
                reply_to=request.reply_to,
            )
        )
        # Only a reply can be refused: only its sender waits for the outcome.
        op = msg_id if request.reply_to is not None else ""
        return Inbound(
            record=record,
            room=room,
            kind="m",
            sender=sender,
            id=msg_id,
            op=op,
            dedup=names.dedup_key(room, msg_id),
            head=head,
            tail=tail,
            extra=request.reply_to or "",
        )
    event: frames.RoomEvent
    extra = on = ""
    target = request.id
    match request:
        case EditRequest():
            kind = "e"
            event = MessageUpdated(MESSAGE_UPDATED, target, room, 0, 0, 0, request.text, ts, sender)
        case DeleteRequest():
            kind = "d"
            event = MessageDeleted(MESSAGE_DELETED, target, room, 0, 0, ts)
        case ReactRequest():
            kind = "r"
            event = Reaction(REACTION, target, room, 0, 0, sender, request.emoji, request.on)
            extra, on = request.emoji, "1" if request.on else "0"
        case _:
            assert_never(request)
    op = op_id(sender, room, request.client_op_id)
    head, tail = frames.event_template(event)
    return Inbound(
        record=record,
        room=room,
        kind=kind,
        sender=sender,
        id=target,
        op=op,
        dedup=names.dedup_key(room, op),
        head=head,
        tail=tail,
        extra=extra,
        on=on,
    )


def _to_forward(item: Inbound, reply: Sequence[object]) -> tuple[int, bytes] | None:
    """The seq and event JSON for one script reply, or None when there is nothing to produce."""
    status = int(str(reply[0]))
    if status == 1:
        seq, msg_seq, version = (int(str(v)) for v in reply[1:4])
        return seq, item.json(seq, msg_seq, version)
    if status == 2:
        return None  # refused, or a reaction that changes nothing
    first = str(reply[1])
    if first.startswith("-|"):
        return None
    # "<seq>|<entry id>" (a send), "<seq>|<entry id>|<msg_seq>[|<version>]" (an op); records
    # of sends written before the ts left the dedup value read "<seq>|<ts>|<entry id>".
    parts = first.split("|")
    if item.kind == "m":
        origin, msg_seq, version = parts[-1], 0, 0
    else:
        origin, msg_seq = parts[1], int(parts[2])
        version = int(parts[3]) if item.kind == "e" else 0
    if origin != item.record.origin:
        return None  # a re-sent duplicate: its first entry produces (or produced) it
    # A redelivery or a replay of the first entry: produce again; persist is idempotent.
    logged = int(parts[0])
    return logged, item.json(logged, msg_seq, version)


def _outcome(item: Inbound, reply: Sequence[object]) -> tuple[str, int]:
    """The op's outcome code and version, as the script published it."""
    status = int(str(reply[0]))
    if status == 1:
        return "ok", int(str(reply[3])) if item.kind == "e" else 0
    if status == 2:
        return str(reply[1]), 0
    first = str(reply[1])
    if first.startswith("-|"):
        return first[2:], 0
    return "ok", int(first.split("|")[3]) if item.kind == "e" else 0


async def handle(batch: Sequence[StreamRecord], deps: Deps) -> BatchResult:
    """Sequence and fan out a batch of room ops; Kafka's confirmation settles it."""
    result = BatchResult()
    by_room: dict[str, list[Inbound]] = {}
    to_kafka: list[OutRecord] = []
    for record in batch:
        try:
            if inbound.is_read(record.fields):
                read = inbound.decode_read(record.fields)
                to_kafka.append(records.encode_read(read))
                continue
            item = decode(record)
        except ContractError as exc:
            result.poison[record.id] = f"{exc.code}: {exc.message}"
            continue
        by_room.setdefault(item.room, []).append(item)
    if not by_room:
        result.settle = deps.forwarder.send(names.MESSAGES_TOPIC, to_kafka)
        return result

    settings = deps.settings
    wait = settings.redis_wait_replicas
    plans: list[list[Inbound]] = []
    calls = []
    for room, items in by_room.items():
        keys = room_keys(room)
        args = room_args(room, settings)
        for item in items:
            args += item.args()
            keys += item.keys()
        calls.append(_SEQUENCE.call(keys, args))
        plans.append(items)
    # One pipeline per node holding these rooms (every room on a standalone Redis).
    for attempt in range(1, _REPLICATION_TRIES + 1):
        try:
            replies = await deps.shards.run(calls, wait_replicas=wait)
            break
        except NotReplicated:
            if attempt == _REPLICATION_TRIES:
                raise

    publish: list[Command] = []
    for items, room_replies in zip(plans, replies, strict=True):
        for item, reply in zip(items, room_replies, strict=True):
            out = _to_forward(item, reply)
            channel = names.room_channel(item.room)
            if out is not None:
                seq, value = out
                to_kafka.append(records.encode(item.room, value))
                if wait:
                    event = _EVENT_OF[item.kind]
                    frame = frames.encode_frame(event, frames.event_packet(event, value), seq)
                    publish.append(Command(channel, ("SPUBLISH", channel, frame)))
            if wait and item.op:
                code, version = _outcome(item, reply)
                frame = frames.encode_op_frame(item.op, code, version)
                publish.append(Command(channel, ("SPUBLISH", channel, frame)))
    if publish:
        # Replicated: members may see these seqs now (a redelivery publishes again; nodes drop
        # a seq they already delivered).
        await deps.shards.run(publish)
    result.settle = deps.forwarder.send(names.MESSAGES_TOPIC, to_kafka)
    return result
