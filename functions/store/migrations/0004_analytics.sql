-- Analytics rollups: one row per (room, day) and per (day, user), kept in step with messages by
-- statement-level triggers. Counting a day from the rollups reads a few rows instead of every
-- message of the day, whatever wrote the messages (persist, a backfill, retention's deletes).
-- Days are UTC dates.
CREATE TABLE room_daily_stats (
    room     text   NOT NULL,
    day      date   NOT NULL,
    messages bigint NOT NULL CHECK (messages > 0),
    PRIMARY KEY (room, day)
);
-- Busiest rooms over a window of days: an index-only scan of the window.
CREATE INDEX room_daily_stats_day_idx ON room_daily_stats (day) INCLUDE (room, messages);

-- Who posted on which day. Insert-only on purpose: a counter here would be one row that every
-- consumer touching the user's rooms updates and locks until its commit, serializing consumers
-- of different Kafka partitions; an existing row instead costs an index probe and no lock.
CREATE TABLE user_daily_activity (
    day     date NOT NULL,
    user_id text NOT NULL,
    PRIMARY KEY (day, user_id)
);

-- Transition tables hold only the rows a statement really changed: an INSERT ... ON CONFLICT DO
-- NOTHING that skips a redelivered message counts nothing. Keys are taken in sorted order so two
-- concurrent writers lock rollup rows in the same order and cannot deadlock on them. A room's
-- counters are only contended by writers of the same room, which Kafka's room key keeps on one
-- consumer. A deleted message leaves its sender active on its day: retention removes whole days.
CREATE FUNCTION messages_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        -- Rows that would drop to zero go first; the rest are decremented.
        DELETE FROM room_daily_stats AS s
        USING (
            SELECT room, (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
            FROM deleted GROUP BY 1, 2
        ) AS gone
        WHERE s.room = gone.room AND s.day = gone.day AND s.messages <= gone.n;
        UPDATE room_daily_stats AS s SET messages = s.messages - gone.n
        FROM (
            SELECT room, (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
            FROM deleted GROUP BY 1, 2
        ) AS gone
        WHERE s.room = gone.room AND s.day = gone.day;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO room_daily_stats AS s (room, day, messages)
        SELECT room, (created_at AT TIME ZONE 'UTC')::date, count(*)
        FROM inserted GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (room, day) DO UPDATE SET messages = s.messages + excluded.messages;

        INSERT INTO user_daily_activity (day, user_id)
        SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date, sender
        FROM inserted ORDER BY 1, 2
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

-- A trigger with transition tables serves one event, hence three.
CREATE TRIGGER messages_rollup_insert AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION messages_rollup();
CREATE TRIGGER messages_rollup_update AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS deleted NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION messages_rollup();
CREATE TRIGGER messages_rollup_delete AFTER DELETE ON messages
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION messages_rollup();

CREATE FUNCTION messages_rollup_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE room_daily_stats, user_daily_activity;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_rollup_truncate AFTER TRUNCATE ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION messages_rollup_truncate();

-- Messages stored before this migration.
INSERT INTO room_daily_stats (room, day, messages)
SELECT room, (created_at AT TIME ZONE 'UTC')::date, count(*) FROM messages GROUP BY 1, 2;
INSERT INTO user_daily_activity (day, user_id)
SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date, sender FROM messages;

-- The documented analytics views (docs/data.md).
CREATE VIEW room_messages_per_day AS
SELECT room, day, messages FROM room_daily_stats;

CREATE VIEW active_users_per_day AS
SELECT day, count(*) AS active_users FROM user_daily_activity GROUP BY day;

CREATE VIEW busiest_rooms_7d AS
SELECT room, sum(messages)::bigint AS messages
FROM room_daily_stats
WHERE day > (now() AT TIME ZONE 'UTC')::date - 7
GROUP BY room;
