"""A timer the loop's selector can wait on, precise to the scheduler's slack instead of to the millisecond.

epoll's own timeout counts whole milliseconds and Python rounds it up, so a loop that sleeps "until the next
run is due" wakes up to a millisecond late: half a millisecond on average, which was a third of a run's whole
start latency. A timerfd (Linux) counts nanoseconds and is just another descriptor in the selector, so the loop
keeps handling every event while it waits. (Python 3.13 has os.timerfd_create; 3.10-3.12 reach it through
ctypes.) Where there is no timerfd the loop falls back to epoll's timeout.
"""
from __future__ import annotations

import ctypes
import os

_CLOCK_MONOTONIC = 1  # what time.monotonic() reads
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class PreciseTimer:
    """A one-shot timer on a descriptor: `arm(seconds)` makes `fd` readable that long from now."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd: int = fd
        self._spec = _Itimerspec()
        self.armed = False

    def arm(self, seconds: float | None) -> None:
        """Fire once, `seconds` from now (at least a nanosecond); None disarms."""
        if seconds is None:
            if not self.armed:
                return
            nanoseconds = 0  # an all-zero it_value disarms
        else:
            nanoseconds = max(1, int(seconds * 1e9))
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(nanoseconds, 1_000_000_000)
        if self._settime(self.fd, 0, ctypes.byref(self._spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
        self.armed = seconds is not None

    def clear(self) -> None:
        """Take the expiry off the descriptor (it stays readable until read)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.armed = False

    def close(self) -> None:
        os.close(self.fd)


def precise_timer() -> PreciseTimer | None:
    """A PreciseTimer, or None where the system has no timerfd."""
    try:
        return PreciseTimer()
    except (OSError, AttributeError):
        return None
