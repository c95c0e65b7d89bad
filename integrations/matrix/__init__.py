"""Matrix through the client-server API."""
