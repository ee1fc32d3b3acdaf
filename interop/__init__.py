"""Interop: the RFC 9420 test-vector runner and live interop with independent peers."""
