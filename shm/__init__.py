"""Shared-memory transport: SPSC rings between front-ends and partition workers (DESIGN.md §3)."""
