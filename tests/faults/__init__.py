"""Fault injection: real systems whose processes are killed while they work."""
