"""Errors a user can cause. Each message says what went wrong and what to do about it.

The command line turns any :class:`FlickerlessError` into a one-line message and exit code 2.
"""

import sys  # (first: the `flickerless` command's first moment is this module's, see below)


def _is_the_command() -> bool:
    """Whether this process is the ``flickerless`` command: its script (``flickerless``; on Windows
    ``flickerless.exe`` or ``flickerless-script.py``), or ``python -m flickerless`` (argv[0] is ``-m``
    while the package imports), not a program that imports the library."""
    if not sys.argv:
        return False
    if sys.argv[0] == "-m":
        args = getattr(sys, "orig_argv", [])
        at = next((i for i, a in enumerate(args[1:], 1) if a.startswith("-m")), None)
        module = "" if at is None else args[at][2:] or (args[at + 1] if at + 1 < len(args) else "")
        return module.split(".")[0] == "flickerless"
    return sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1].split(".")[0].removesuffix("-script") == "flickerless"


def _interrupted_in_one_line(kind, value, tb, _before=sys.excepthook):
    """The command's hook for an exception nothing caught: a Ctrl-C, said in one line as ``cli.main`` says
    one. Python then ends the process by SIGINT, as for any Ctrl-C it did not catch (exit status 130)."""
    if issubclass(kind, KeyboardInterrupt):
        print("flickerless: interrupted", file=sys.stderr)
    else:
        _before(kind, value, tb)


# A Ctrl-C in the command's first moment (~0.05 s of imports, this package's and cli's, before main() can
# catch one) printed a KeyboardInterrupt traceback through the import machinery. This module is the first
# of the package to run, so the hook is set here; only for the command, since a program importing the
# library keeps Python's ways. (Before this line is Python's own start, out of reach: a Ctrl-C in its first
# ms ends it silently, in its site import with Python's "Fatal Python error" traceback.)
if sys.excepthook is sys.__excepthook__ and _is_the_command():
    sys.excepthook = _interrupted_in_one_line

import contextlib  # noqa: E402


class FlickerlessError(Exception):
    """Base class: a problem the user can fix; ``str(err)`` tells them how."""


class InputError(FlickerlessError, ValueError):
    """An input video, image folder or argument is missing, unreadable or inconsistent. Also a
    :class:`ValueError`, which is what Python code calling the library catches for a bad argument."""


class UnknownOptionError(InputError, TypeError):
    """A keyword argument a function does not take (``deflicker(..., windw=3)``): an :class:`InputError`,
    and the :class:`TypeError` Python raises for an unknown keyword. The message suggests the nearest
    valid name."""


def unknown_options(given, valid, what: str = "option") -> None:
    """Raise :class:`UnknownOptionError` for the names in ``given`` not in ``valid``, suggesting for each
    the closest valid one (``windw`` -> ``window``) and listing them all."""
    import difflib

    unknown = sorted(set(given) - set(valid))
    if not unknown:
        return
    near = {k: difflib.get_close_matches(k, list(valid), n=1, cutoff=0.6) for k in unknown}
    said = ", ".join(f"{k!r} (did you mean {near[k][0]!r}?)" if near[k] else repr(k) for k in unknown)
    raise UnknownOptionError(f"unknown {what}{'s' if len(unknown) > 1 else ''} {said}; valid: {', '.join(sorted(valid))}")


def check_has_values(frames, what: str) -> None:
    """Refuse a tensor on torch's ``meta`` device (a shape without values, as a model built with
    ``init_empty_weights`` has): it failed deep in the library with torch's error."""
    device = getattr(frames, "device", None)
    if getattr(device, "type", None) == "meta":
        raise InputError(f"{what}: a tensor on the meta device has a shape but no values; pass the frames "
                         "themselves (on the CPU or a GPU)")


def check_unit_range(lo: float, hi: float, what: str) -> None:
    """Float frames are read as [0, 1]: ones clearly off it (``lo``..``hi`` their range) are refused,
    saying what they look like: 0-255 floats (``frames.astype(np.float32)``) would be blended or scored
    as values up to 255 (saturated, white), [-1, 1] ones (a VAE decode before ``(x + 1) / 2``) clamped
    at 0, NaN read as black. A decoder's or a resampler's overshoot (-0.05, 1.1) is not refused; frames
    brightened past 1.25 are (they were clamped, washed out, without a word)."""
    if -0.1 <= lo and hi <= 1.25:  # NaN fails
        return
    hint = ("for [-1, 1] values (a VAE decode) pass (x + 1) / 2" if -1.5 <= lo < -0.1 and hi <= 1.25 else
            "divide 0-255 floats by 255, or pass uint8" if hi > 20 else
            "scale them into [0, 1] (values over 1 are clamped to white)" if hi > 1.25 else
            "replace the frames holding NaN")
    raise InputError(f"{what} are floats, which are read as [0, 1], but they range from {lo:.4g} to {hi:.4g}: {hint}")


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


class HeldStop:
    """What :func:`stops_held` held back: the first Ctrl-C, SIGTERM or SIGHUP of the block, if any."""

    def __init__(self):
        self.signum: int | None = None
        self.handlers: dict = {}  # the handlers the block replaced, by signal

    def raise_stop(self, done: str | None = None) -> None:
        """Act on the stop held back, if any, as its own handler would have (a KeyboardInterrupt, or
        :class:`Stopped`); ``done``: what was finished before it took effect, carried as ``.done`` (the
        command line says it in place of "the output was not written")."""
        if self.signum is None:
            return
        signum, self.signum = self.signum, None
        try:
            self.handlers[signum](signum, None)
        except KeyboardInterrupt as e:
            if done:
                e.done = done
            raise


@contextlib.contextmanager
def stops_held(what: str | None = None, raise_at_end: bool = True):
    """Hold Ctrl-C, SIGTERM and SIGHUP while the block runs (work that, stopped half done, loses what it
    was to keep: an optimiser's update, an output being finished or moved into place), then act on the
    first one as its handler would have (raise it at the end of the block, or, ``raise_at_end=False``, where
    the caller calls the yielded :class:`HeldStop`'s ``raise_stop``). ``what``: said when a stop is held,
    with "again to stop at once"; a second one stops at once. Only the main thread gets signals, and only
    handlers set from Python are replaced (an ignored or default one is left alone)."""
    import signal
    import sys
    import threading

    held = HeldStop()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def hold(signum, frame):
        if held.signum is not None:  # asked twice: stop now
            held.raise_stop()
        held.signum = signum
        if what:
            print(f"flickerless: {what} first (again to stop at once, losing it)", file=sys.stderr)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)  # Windows has no SIGHUP
        if sig is not None and callable(signal.getsignal(sig)):
            held.handlers[sig] = signal.signal(sig, hold)
    try:
        yield held
    finally:
        for sig, handler in held.handlers.items():
            if signal.getsignal(sig) is hold:  # (a stop at once may have set its own: ignoring a third)
                signal.signal(sig, handler)
    if raise_at_end:
        held.raise_stop()


def interrupted(e: KeyboardInterrupt) -> tuple[str, int]:
    """What to call a stop, and the exit code a shell expects of it: ``("interrupted", 130)`` for
    Ctrl-C, ``("stopped by SIGTERM", 143)`` for a :class:`Stopped` (128 + the signal's number)."""
    if isinstance(e, Stopped):
        return f"stopped by {e.name}", 128 + e.signum
    return "interrupted", 130


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` says a device ran out of memory: CUDA's ``torch.OutOfMemoryError``, or the
    ``RuntimeError`` that Apple's MPS ("MPS backend out of memory") and torch's CPU allocator raise
    instead ("not enough memory" on Windows; "DefaultCPUAllocator: can't allocate memory" on Linux and
    macOS, under a memory limit such as ``ulimit -v``, which ended in a traceback)."""
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e) for s in ("out of memory", "not enough memory",
                                                                     "can't allocate memory"))


def perhaps_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is oneDNN's "could not create a primitive" (torch's CPU convolutions): it does not
    say why, and under a memory limit it is what a failed allocation (of the primitive's compiled code or
    its scratch space) ends in, though a primitive oneDNN does not implement ends in it too. Said as
    possibly out of memory, never taken for it (:func:`in_batches` does not halve on it)."""
    return isinstance(e, RuntimeError) and "could not create a primitive" in str(e)


def halve_batch(batch: int, what: str, start: str | None = None) -> int:
    """A batch of ``batch`` items ran out of memory: the batch half as large, said once, with the option
    that starts there next time, if there is one: ``start`` formatted with the new batch
    (``"--set sampling.batch_size={}"``, ``"--batch {}"``)."""
    import logging

    import torch

    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # what the failed batch held goes back to the GPU, not to the cache
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()
    hint = f"; {start.format(batch // 2)} starts there" if start else ""
    logging.getLogger("flickerless").warning("out of memory with %s batches of %d: going on with %d (slower%s)",
                                             what, batch, batch // 2, hint)
    return batch // 2


def in_batches(n: int, batch: int, step, what: str, start: str | None = None) -> int:
    """Run ``step(a, b)`` over ``[0, n)`` in consecutive ranges of ``batch`` items. An out-of-memory
    error in a step (:func:`out_of_memory`: CUDA, MPS or the CPU) halves the batch and runs the same
    range again, down to one item (then the error is raised): a batch chosen for a large GPU still
    runs on a smaller one, slower, with the same results. ``step`` must change nothing before it can
    fail (compute, then store). Returns the batch it ended with, for the caller to start from next
    time. ``start``: see :func:`halve_batch`."""
    a = 0
    while a < n:
        b = min(n, a + batch)
        try:
            step(a, b)
            a = b
            continue
        except Exception as e:  # noqa: BLE001 - only running out of memory is handled
            if batch == 1 or not out_of_memory(e):
                raise
        batch = halve_batch(batch, what, start)  # out of the handler: the failed step's tensors are gone
    return batch
