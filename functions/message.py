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

import msgspec

from chat import frames, names
from chat.contract import (
    KIND_DELETE,
    KIND_EDIT,
    KIND_REACT,
    KIND_READ,
    MESSAGE_DELETED,
    MESSAGE_UPDATED,
    REACTION,
    READ,
    ContractError,
    DeleteRequest,
    EditRequest,
    ErrorCode,
    Message,
    MessageDeleted,
    MessageUpdated,
    Reaction,
    ReactRequest,
    ReadPosition,
    ReadRequest,
    SendRequest,
    parse,
)
from chat.ids import message_id, op_id
from chat.shards import Command, NotReplicated, Script
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
#   KEYS: seq counter, recent log, message states, live set,
#         then per item: dedup key, its sender's own set, reactions, reactors
#   ARGV: dedup ttl, log length, room channel, publish ('1'/'0'), max distinct emojis,
#         then per item: kind (m/e/d/r), JSON head, JSON tail, entry id, message id, sender,
#         op id ('' when nobody waits for the outcome), reply_to or emoji, on ('1'/'0')
# Reply per item: {1, seq, msg_seq, version} sequenced now; {0, "<dedup record>"} on a dedup
# hit; {2, code} when nothing was sequenced ('ok' for a reaction that changes nothing).
_SEQUENCE = Script(
    frames.MESSAGE_LUA
    + """
local ttl, log_len, channel, publish = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_emojis = tonumber(ARGV[5])
local states, live = KEYS[3], KEYS[4]
local out = {}
local guarded = false
local function next_seq()
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
  return redis.call('INCR', KEYS[1])
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
  if event == 'message' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', log_len, seq_text(seq) .. '-0', 'm', json)
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', log_len, seq_text(seq) .. '-0', 'm', json,
      'e', event)
  end
  if publish == '1' then
    redis.call('SPUBLISH', channel, fanout_frame(event, seq, event_packet(event, json)))
  end
end
for i = 1, (#KEYS - 4) / 4 do
  local k = 4 + 4 * (i - 1)
  local dedup, own, rx, rxu = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local a = 5 + 9 * (i - 1)
  local kind, head, tail, origin = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local id, sender, op, extra, on = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]
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
          if redis.call('SISMEMBER', rxu, pair) == 1 then
            refused = 'ok'
          elseif redis.call('HEXISTS', rx, extra) == 0 and redis.call('HLEN', rx) >= max_emojis then
            refused = 'too_many_emojis'
          else
            redis.call('SADD', rxu, pair)
            redis.call('HINCRBY', rx, extra, 1)
          end
        elseif redis.call('SREM', rxu, pair) == 0 then
          refused = 'ok'
        elseif redis.call('HINCRBY', rx, extra, -1) <= 0 then
          redis.call('HDEL', rx, extra)
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
          redis.call('DEL', rx, rxu)
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
"""
)
# A batch whose writes the replicas did not confirm in time is run again this often (the
# script is idempotent: a second run returns the first run's seqs) before the batch fails.
_REPLICATION_TRIES = 3
_SCRIPT_KIND = {KIND_EDIT: "e", KIND_DELETE: "d", KIND_REACT: "r"}
_EVENT_OF = {"m": "message", "e": MESSAGE_UPDATED, "d": MESSAGE_DELETED, "r": REACTION}
_encode = msgspec.json.Encoder().encode


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


def _sender_and_ts(fields: StreamRecord) -> tuple[str, str]:
    sender, ts = fields.fields.get("sender"), fields.fields.get("ts")
    if not sender or not ts:
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "entry lacks sender or ts")
    return sender, ts


def _pick(record: StreamRecord, *keys: str) -> dict[str, object]:
    return {k: record.fields[k] for k in keys if k in record.fields}


def decode(record: StreamRecord) -> Inbound:
    """Validate a stream entry again: the stream is a trust boundary like any other."""
    kind = record.fields.get("kind") or "message"
    sender, ts = _sender_and_ts(record)
    if kind == "message":
        request = parse(SendRequest, _pick(record, "room", "text", "client_msg_id", "reply_to"))
        room = request.room
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
    if kind not in _SCRIPT_KIND:
        raise ContractError(ErrorCode.INVALID_PAYLOAD, f"unknown entry kind {kind[:20]!r}")
    event: frames.RoomEvent
    extra = on = ""
    common = ("room", "id", "client_op_id")
    if kind == KIND_EDIT:
        edit = parse(EditRequest, _pick(record, *common, "text"))
        room, target, client_op_id = edit.room, edit.id, edit.client_op_id
        event = MessageUpdated(MESSAGE_UPDATED, target, room, 0, 0, 0, edit.text, ts, sender)
    elif kind == KIND_DELETE:
        delete = parse(DeleteRequest, _pick(record, *common))
        room, target, client_op_id = delete.room, delete.id, delete.client_op_id
        event = MessageDeleted(MESSAGE_DELETED, target, room, 0, 0, ts)
    else:
        if record.fields.get("on") not in ("0", "1"):
            raise ContractError(ErrorCode.INVALID_PAYLOAD, "a react entry's on must be 0 or 1")
        react = parse(
            ReactRequest, {**_pick(record, *common, "emoji"), "on": record.fields["on"] == "1"}
        )
        room, target, client_op_id = react.room, react.id, react.client_op_id
        event = Reaction(REACTION, target, room, 0, 0, sender, react.emoji, react.on)
        extra, on = react.emoji, record.fields["on"]
    op = op_id(sender, room, client_op_id)
    head, tail = frames.event_template(event)
    return Inbound(
        record=record,
        room=room,
        kind=_SCRIPT_KIND[kind],
        sender=sender,
        id=target,
        op=op,
        dedup=names.dedup_key(room, op),
        head=head,
        tail=tail,
        extra=extra,
        on=on,
    )


def decode_read(record: StreamRecord) -> ReadPosition:
    """A read-position entry, validated."""
    request = parse(
        ReadRequest,
        {"room": record.fields.get("room"), "seq": _int(record.fields.get("seq"))},
    )
    user = record.fields.get("sender")
    if not user:
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "entry lacks sender")
    return ReadPosition(READ, request.room, user, request.seq)


def _int(raw: str | None) -> int | None:
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    return int(raw)


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
            if record.fields.get("kind") == KIND_READ:
                read = decode_read(record)
                to_kafka.append((read.room, _encode(read), None))
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
        args: list[str | bytes | int] = [
            settings.dedup_ttl_s,
            settings.recent_log_len,
            names.room_channel(room),
            0 if wait else 1,
            settings.max_emojis_per_message,
        ]
        keys = [
            names.seq_key(room),
            names.recent_log_key(room),
            names.message_state_key(room),
            names.live_key(room),
        ]
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
                to_kafka.append((item.room, value, None))
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
