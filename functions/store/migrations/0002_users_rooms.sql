-- Users and rooms, as metadata beside the messages. Users are recorded from their token's claims
-- (id, display name); rooms are created on first use (first stored message) or explicitly.
CREATE TABLE users (
    id           text        PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    display_name text        CHECK (length(display_name) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rooms (
    name         text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    display_name text        CHECK (length(display_name) BETWEEN 1 AND 200),
    created_by   text        REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Who belongs to a room: a user is a member from the first time they join or post there.
CREATE TABLE memberships (
    room      text        NOT NULL REFERENCES rooms (name) ON DELETE CASCADE,
    user_id   text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room, user_id)
);
-- "Which rooms is this user in" reads the other way round.
CREATE INDEX memberships_user_idx ON memberships (user_id, room);

-- Messages stored before this migration name rooms and users that must exist too.
INSERT INTO users (id) SELECT DISTINCT sender FROM messages ON CONFLICT DO NOTHING;
INSERT INTO rooms (name) SELECT DISTINCT room FROM messages ON CONFLICT DO NOTHING;
INSERT INTO memberships (room, user_id)
SELECT DISTINCT room, sender FROM messages
ON CONFLICT DO NOTHING;
