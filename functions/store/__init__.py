"""The functions' PostgreSQL store: migrations, users, rooms, and the queries of the handlers."""
