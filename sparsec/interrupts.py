"""Ctrl-C that survives TVM: a KeyboardInterrupt raised inside a Python callback that TVM's C++
called (a pass, a schedule rule) comes back as a RuntimeError, or is swallowed by code that
catches errors to try something else. The flag set here remembers the interrupt so long work
stops at its next stage and the command line still reports it as an interrupt."""

from __future__ import annotations

import signal
import threading

_interrupted = False


def _on_sigint(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def install() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def interrupted() -> bool:
    return _interrupted


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even if something swallowed it."""
    if _interrupted:
        raise KeyboardInterrupt
