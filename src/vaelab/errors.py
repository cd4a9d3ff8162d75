"""The one exception type users see: a clear, one-line message about their input."""


class VaelabError(Exception):
    """An expected error caused by user input (a file, a flag, a dataset).

    The CLI prints ``str(error)`` as a single line and exits with code 2.
    """
