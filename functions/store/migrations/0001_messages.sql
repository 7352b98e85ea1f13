-- Messages: the system of record. The id is derived from (sender, room, client_msg_id), so a
-- redelivered or re-sent message can never become a second row; (room, seq) is unique too.
CREATE TABLE messages (
    id            uuid        PRIMARY KEY,
    room          text        NOT NULL,
    seq           bigint      NOT NULL CHECK (seq > 0),
    sender        text        NOT NULL,
    text          text        NOT NULL,
    client_msg_id text        NOT NULL,
    created_at    timestamptz NOT NULL,
    persisted_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_room_seq_key UNIQUE (room, seq)
);
