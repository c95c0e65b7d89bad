"""Telegram through long polling."""
