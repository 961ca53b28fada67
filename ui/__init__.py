"""The Chaperone tray app (PySide6): presentation only; it talks to the agent through the local API."""
