"""Errors that are the user's input, not tracer's bug: shown as one line with exit code 2."""


class UsageError(ValueError):
    """Bad input: an option, a file, a model name. The message is one line that says what to do."""
