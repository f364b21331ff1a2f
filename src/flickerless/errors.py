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


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by a signal other than Ctrl-C: SIGTERM (a job scheduler's time
    limit, ``docker stop``, ``systemctl stop``, ``timeout``) or SIGHUP (the terminal closed). Raised in
    the main thread as Ctrl-C's KeyboardInterrupt is, so a stopped run keeps what it computed and says
    how to resume, as an interrupted one does."""

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")


def interrupted(e: KeyboardInterrupt) -> tuple[str, int]:
    """What to call a stop, and the exit code a shell expects of it: ``("interrupted", 130)`` for
    Ctrl-C, ``("stopped by SIGTERM", 143)`` for a :class:`Stopped` (128 + the signal's number)."""
    if isinstance(e, Stopped):
        return f"stopped by {e.name}", 128 + e.signum
    return "interrupted", 130
