"""Observations → rules → alert events; Alertmanager's webhook intake."""
