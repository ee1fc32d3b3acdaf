"""The key schedule (RFC 9420 sections 8-9): epoch secrets, PSKs, the secret tree."""
