"""The functions' PostgreSQL store: schema migrations, users, rooms and memberships,
and the room events' writes (``writes``)."""
