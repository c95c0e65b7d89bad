"""Recurring tasks: schedules, the scheduler, the runner, commands, digest, quiet hours."""
