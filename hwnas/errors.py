"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class HwnasError(Exception):
    """A user-facing error: bad input, missing data, an unusable backend.

    The message is one line that says what went wrong and what to do about it.
    """


class HwnasWarning(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints it as one `warning:` line)."""
