"""AWS adapters: Lambda entry points, the Redis-stream bridge and the packaging command."""
