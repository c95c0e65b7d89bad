"""The core below everything: clock, error tree, shared value types, boundary Protocols."""
