"""Benchmarks: each module is a command (python -m bench.<name>) that reports its figures."""
