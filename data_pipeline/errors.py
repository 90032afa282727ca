"""Errors that mean the user asked for something that cannot be done."""


class UserInputError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits non-zero."""
