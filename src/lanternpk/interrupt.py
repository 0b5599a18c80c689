"""A Ctrl-C that cannot be lost before an output is put in place.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the interpreter happens to be; when
that is a garbage-collection callback (JAX registers one), the exception is printed as
"Exception ignored" and the command carries on, and ``lanternpk fit --overwrite`` went on to
replace the run it was asked to stop writing. :func:`handling_interrupts` also records the
signal, and :func:`check` (called by :mod:`lanternpk.io` just before a file or directory is
renamed into place) raises it again there.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_interrupted = False


def _on_interrupt(signum, frame) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


@contextmanager
def handling_interrupts() -> Iterator[None]:
    """Record SIGINT for :func:`check` while the block runs (main thread only; elsewhere,
    and where Python cannot set handlers, a no-op). The previous handler is restored."""
    global _interrupted
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_interrupt)
    _interrupted = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted = False


def check() -> None:
    """Raise ``KeyboardInterrupt`` if SIGINT arrived, even if its first raise was lost."""
    if _interrupted:
        raise KeyboardInterrupt
