-- Retention deletes the oldest messages by time. Messages arrive in roughly time order, so a
-- BRIN index finds them for a fraction of a B-tree's size and write cost.
CREATE INDEX messages_created_at_brin ON messages USING brin (created_at);
