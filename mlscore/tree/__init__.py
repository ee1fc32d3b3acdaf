"""The ratchet tree (RFC 9420 sections 4, 7): array tree math, nodes and hashes, TreeKEM."""
