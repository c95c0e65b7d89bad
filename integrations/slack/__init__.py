"""Slack through Socket Mode."""
