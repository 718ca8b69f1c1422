"""The one error type for bad input: its message is shown to the user as is, and whatever raised
it has written nothing (the transaction around it rolls back)."""


class InputError(ValueError):
    """Bad input from a user or a file; the message says what is wrong and how to fix it."""
