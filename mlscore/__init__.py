"""mlscore: RFC 9420 (MLS) from scratch on `cryptography`, sans-I/O; knows nothing of two parties or transports."""
