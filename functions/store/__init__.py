"""The functions' PostgreSQL store: schema migrations, users, rooms and memberships."""
