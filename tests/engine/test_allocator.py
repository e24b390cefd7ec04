"""The CLI's allocator settings: on glibc, large blocks come from the heap and stay there once freed."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import tether.cli
from tether.engine.allocator import configure_allocator

ROOT = Path(__file__).resolve().parents[2]
GLIBC = platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallinfo2")

# In a fresh process: apply (or not), malloc 64 MiB, free it; report where it came from and how much more
# free memory the heap holds afterwards (the heap may have had some free space at its top already, so
# its growth alone can fall a few KiB short of 64 MiB; the free bytes it keeps cannot).
PROBE = """
import ctypes, json
from tether.engine.allocator import configure_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
applied = configure_allocator()
before = libc.mallinfo2()
block = libc.malloc(64 << 20)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "mmapped": during.hblkhd - before.hblkhd,
                  "heap_kept": after.fordblks - before.fordblks}))
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "TETHER_MALLOC"))}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc ≥ 2.33 only (mallopt, mallinfo2)")
def test_applied_on_glibc_large_blocks_stay_in_the_heap():
    tuned = probe()
    assert tuned["applied"] is True
    assert tuned["mmapped"] == 0  # 64 MiB from the heap, not its own mmap
    assert tuned["heap_kept"] >= 64 << 20  # freed, and still the process's for the next step

    default = probe(TETHER_MALLOC="default")
    assert default["applied"] is False
    assert default["mmapped"] >= 64 << 20  # glibc's default: a private mapping, unmapped when freed
    assert default["heap_kept"] < 1 << 20

    assert probe(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_="100000000000")["applied"] is False


def test_opt_out_and_user_settings_change_nothing():
    assert configure_allocator({"TETHER_MALLOC": "default"}) is False
    assert configure_allocator({"TETHER_MALLOC": " Default "}) is False
    assert configure_allocator({"MALLOC_MMAP_MAX_": "65536"}) is False
    assert configure_allocator({"MALLOC_TRIM_THRESHOLD_": "131072"}) is False


def test_cli_applies_it_first(monkeypatch):
    calls = []
    monkeypatch.setattr(tether.cli, "configure_allocator", lambda: calls.append("allocator"))
    with pytest.raises(SystemExit):
        tether.cli.main(["--version"])
    assert calls == ["allocator"]
