"""CFFI build scripts (out-of-line API mode); see build_ring.py."""
