"""Scripted hostile peers: each test attacks one finding class and asserts refusal, nothing delivered,
stored state unchanged, and work bounded (by counting, never by timing)."""
