-- Full-text search over message text. The configuration is fixed here because a generated
-- column needs an immutable expression; the search route must use the same one ('english').
-- btree_gin lets one GIN index hold the room beside the lexemes, so a room's search reads only
-- that room's postings instead of every room's matches.
CREATE EXTENSION IF NOT EXISTS btree_gin;

ALTER TABLE messages
    ADD COLUMN search tsvector
    GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED;

CREATE INDEX messages_search_idx ON messages USING gin (room, search);
