"""Real peers (homeservers, alert managers) run as child processes for contract tests."""
