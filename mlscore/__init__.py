"""mlscore: an RFC 9420 (MLS) core and the two-party profile, sans-I/O."""
