"""The one error type of the embedded stack: its message is a single line meant for the user."""


class StackError(Exception):
    """A part of the stack cannot start or run (missing binary, taken port, not ready in time)."""
