"""User mistakes: the CLI prints the one-line message and exits non-zero, never a traceback."""


class UserError(Exception):
    exit_code = 2
