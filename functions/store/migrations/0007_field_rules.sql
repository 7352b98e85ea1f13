-- The edge's field rules (chat/contract.py), held by storage too, in the same words: the room
-- pattern is the text of ROOM_PATTERN. \A and \Z anchor the whole string in PostgreSQL's regular
-- expressions as in Python's; a test compares the constraint with the Python pattern.
ALTER TABLE rooms DROP CONSTRAINT rooms_name_check;
ALTER TABLE rooms ADD CONSTRAINT rooms_name_check CHECK (name ~ '\A[A-Za-z0-9_.:-]{1,64}\Z');

-- NOT VALID then VALIDATE: the scan of existing rows takes a lock that lets writers go on.
ALTER TABLE messages
    ADD CONSTRAINT messages_room_check CHECK (room ~ '\A[A-Za-z0-9_.:-]{1,64}\Z') NOT VALID,
    ADD CONSTRAINT messages_sender_check CHECK (length(sender) BETWEEN 1 AND 128) NOT VALID,
    ADD CONSTRAINT messages_client_msg_id_check
        CHECK (length(client_msg_id) BETWEEN 1 AND 64) NOT VALID,
    ADD CONSTRAINT messages_text_check CHECK (length(text) <= 4000) NOT VALID;
ALTER TABLE messages VALIDATE CONSTRAINT messages_room_check;
ALTER TABLE messages VALIDATE CONSTRAINT messages_sender_check;
ALTER TABLE messages VALIDATE CONSTRAINT messages_client_msg_id_check;
ALTER TABLE messages VALIDATE CONSTRAINT messages_text_check;
