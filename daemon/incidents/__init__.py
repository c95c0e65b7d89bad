"""Alert events → incidents and notices: grouping, muting, routing, runbooks, text, commands."""
