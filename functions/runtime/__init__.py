"""The local function runtime: runs the registry's functions on their triggers."""
