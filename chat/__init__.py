"""Shared kernel: wire contract, settings, stream and topic names, client factories.

Imported by both tiers (``realtime`` and ``functions``); imports neither.
"""
