-- Room events beside messages: replies, edits, deletes, reactions and read positions. Every
-- column added here has a constant default (or none), so adding it rewrites no row.
ALTER TABLE messages
    ADD COLUMN reply_to   uuid,
    ADD COLUMN version    integer     NOT NULL DEFAULT 1,
    ADD COLUMN edited_at  timestamptz,
    ADD COLUMN deleted    boolean     NOT NULL DEFAULT false,
    ADD COLUMN deleted_at timestamptz;
-- A thread: the replies to one message, in seq order.
CREATE INDEX messages_reply_to_idx ON messages (reply_to, seq) WHERE reply_to IS NOT NULL;

-- Every superseded text of a message: the text of `version`, who replaced it and when (an
-- edit, or the delete that left the message a tombstone). History shows the current text only,
-- search never sees these.
CREATE TABLE message_versions (
    message_id  uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    version     integer     NOT NULL CHECK (version >= 1),
    text        text        NOT NULL,
    replaced_by text        NOT NULL,
    replaced_at timestamptz NOT NULL,
    PRIMARY KEY (message_id, version)
);

-- One row per (message, emoji, user) ever reacted; `on` is its state after the op at `seq`, so
-- applying a room's reactions again, or out of order, ends in the same state.
CREATE TABLE reactions (
    message_id uuid    NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    emoji      text    NOT NULL CHECK (length(emoji) BETWEEN 1 AND 32),
    user_id    text    NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    "on"       boolean NOT NULL,
    seq        bigint  NOT NULL CHECK (seq > 0),
    PRIMARY KEY (message_id, emoji, user_id)
);

-- The room events other than messages, as clients received them (GET /rooms/{room}/events).
CREATE TABLE room_events (
    room       text        NOT NULL,
    seq        bigint      NOT NULL CHECK (seq > 0),
    type       text        NOT NULL
        CHECK (type IN ('message_updated', 'message_deleted', 'reaction')),
    message_id uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room, seq)
);
CREATE INDEX room_events_message_idx ON room_events (message_id);

-- Read positions (forward only: persist writes GREATEST) and each room's last persisted seq,
-- so GET /me/rooms counts unread messages only in rooms with something after the position.
ALTER TABLE memberships ADD COLUMN last_read_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN last_seq bigint NOT NULL DEFAULT 0;
UPDATE rooms r SET last_seq = m.seq
FROM (SELECT room, max(seq) AS seq FROM messages GROUP BY room) m
WHERE m.room = r.name;
