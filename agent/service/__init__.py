"""The agent service: a Unix-socket server speaking JSON lines, and its client."""
