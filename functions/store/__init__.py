"""The functions' PostgreSQL store: migrations, users, rooms, the handlers' queries and the
room events' writes."""
