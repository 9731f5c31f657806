"""glibc's allocator told to keep the memory a run frees for its next arrays.

A run's numpy work comes in chunk-sized arrays (a step log's 16,384 steps, an exact sum's
65,536 values: 128 kB to a few MB each, several temporaries per pass). glibc maps each such
block afresh (its mmap threshold starts at 128 kB) and, once a freed one has raised that
threshold, gives the heap's free top back to the system whenever it exceeds twice the
threshold: either way the next chunk's arrays are new pages, each a page fault (about 7,000 a
run, 5 % of the CPU time, at orca sessions 1 of the speed matrix; 22,000 in its first run).
Above the size of those arrays, with the heap's top kept, the pages are reused: the faults
fall to a few dozen, and the peak RSS stays the same (a block is reused, not added).

`keep_freed_memory` sets both limits (`mallopt`), once per process in effect (setting them
again changes nothing). It is a process-wide setting, as the collector's pause around a run
(`simulate`) is; it is left alone where the process was started with settings of its own
(`MALLOC_*` or `GLIBC_TUNABLES` in the environment), and where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os

#: blocks below this come from the heap, not each from its own mapping (glibc's largest
#: allowed value on 64-bit systems; numpy's chunk-sized temporaries are far below it)
MMAP_THRESHOLD = 32 << 20
#: free memory kept at the heap's top before it is given back to the system
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # (glibc's malloc.h)


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); True if set."""
    if any(k.startswith("MALLOC_") for k in os.environ) or "GLIBC_TUNABLES" in os.environ:
        return False  # (the user's own settings stand)
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError, TypeError):  # (no such name here: not glibc)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
