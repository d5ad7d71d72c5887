"""The one error type for user mistakes.

A stage module calls :func:`trex.common.cli.parse_args` and wraps its body with
:func:`trex.common.cli.cli_entry`, so a user mistake (:class:`UserError`) ends in one line on
stderr and exit status 2, never a traceback.
"""

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake in the user's input (flag, file, id): reported as one line, exit status 2."""
