"""Errors the user can act on. The CLI prints them as one line and exits non-zero."""


class KondenseError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""
