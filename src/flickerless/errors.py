"""Errors a user can cause. Each message says what went wrong and what to do about it.

The command line turns any :class:`FlickerlessError` into a one-line message and exit code 2.
"""


class FlickerlessError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` tells them how."""


class InputError(FlickerlessError):
    """An input video, image folder or argument is missing, unreadable or inconsistent."""


class OutputError(FlickerlessError):
    """The output cannot be written where it was asked for."""


class DeviceError(FlickerlessError):
    """The requested device does not exist or ran out of memory."""


class ModelNotFoundError(FlickerlessError):
    """Model weights are missing: the message names the id, where it was looked for, and how to supply it."""
