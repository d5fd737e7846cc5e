"""Hold interrupts while a file is written, so that Ctrl-C or SIGTERM never cuts a write short.

A ``KeyboardInterrupt`` raised inside ``torch.save`` surfaces as a ``RuntimeError`` from its zip
writer, which would skip the interrupt path (``last.pt``, ``metrics.json``, exit 130).
"""

from __future__ import annotations

import contextlib
import signal
import threading

HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interrupts_held():
    """Record SIGINT / SIGTERM during the block and deliver the first one after it, to the
    handler that was in place (a no-op outside the main thread, where Python runs no handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in HELD}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        signal.raise_signal(received[0])
