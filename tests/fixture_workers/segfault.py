import ctypes

from supervisor import worker


def crash_in_c():
    ctypes.string_at(0)  # reads address 0: SIGSEGV inside a C function


@worker(interval=0.3)
def segfault(ctx):
    crash_in_c()
