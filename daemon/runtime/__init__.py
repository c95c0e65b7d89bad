"""The running daemon: the process, supervisor, local API, status, systemd notify."""
