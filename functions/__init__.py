"""Short-lived functions (message, persist, history), their registry and their runtimes."""
