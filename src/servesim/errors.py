"""The one exception type for bad user input (config, trace, CLI, HTTP).

Raise `InputError` with a single line that names the problem and, where there is a closed set,
the allowed values. The CLI prints it without a traceback and exits with code 2.
"""


class InputError(ValueError):
    """Bad user input; the message is shown to the user as is."""
