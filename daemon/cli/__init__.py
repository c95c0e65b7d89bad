"""The `nightshift` command line and its HTTP client into the running daemon."""
