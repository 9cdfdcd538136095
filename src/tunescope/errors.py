"""The one exception type that reaches the user as a single line.

Raise `UserError` for anything the user can fix (bad path, bad config value, bad data row).
The CLI prints `error: <message>` and exits with status 2; no traceback.
"""


class UserError(Exception):
    """A problem with the user's input. The message must say what to fix."""
