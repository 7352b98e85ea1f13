-- New messages reach the search index through GIN's pending list; when the list is full, the
-- inserting transaction merges it, which stalled persist batches for hundreds of milliseconds.
-- A larger list leaves most merges to autovacuum, in the background, at the same total cost.
ALTER INDEX messages_search_idx SET (gin_pending_list_limit = 65536);
