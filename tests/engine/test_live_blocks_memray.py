"""The allocations live at the end of a real memray capture, with their addresses: what frees, shrinks in place
(realloc) and unmaps is gone, what is kept is there with its stack."""

from __future__ import annotations

import json
import subprocess
import sys

from tracer.analysis.mapped_allocations import live_blocks

SCRIPT = r"""
import ctypes, json, mmap, sys
import memray

def address(buffer):
    return ctypes.addressof((ctypes.c_char * 1).from_buffer(buffer))

def keep_bytes():
    kept = bytearray(b"\x01") * 300_000
    shrunk = bytearray(b"\x02") * 200_000
    del shrunk[600:]
    freed = bytearray(b"\x03") * 250_000
    freed_at = address(freed)
    del freed
    return kept, shrunk, freed_at

def keep_pages():
    kept = mmap.mmap(-1, 1 << 20)
    closed = mmap.mmap(-1, 2 << 20)
    closed_at = address(closed)
    closed.close()
    return kept, closed_at

with memray.Tracker(sys.argv[1], file_format=memray.FileFormat.ALL_ALLOCATIONS):
    kept, shrunk, freed_at = keep_bytes()
    pages, closed_at = keep_pages()
    where = {"kept": address(kept), "shrunk": address(shrunk), "freed": freed_at, "pages": address(pages),
             "closed": closed_at}
print(json.dumps(where))
"""


def test_live_blocks_follow_frees_reallocs_and_munmaps(tmp_path):
    capture = tmp_path / "host.memray"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(capture)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    where = json.loads(result.stdout.splitlines()[-1])
    blocks, stacks = live_blocks(capture)
    by_address = {b.address: b for b in blocks}
    assert by_address[where["kept"]].size >= 300_000
    assert by_address[where["shrunk"]].size < 1000  # realloc in place: the shrunk block, not the first one
    assert by_address[where["pages"]].size == 1 << 20
    assert where["closed"] not in by_address and where["freed"] not in by_address
    assert stacks[by_address[where["kept"]].stack][0].function == "keep_bytes"
    assert stacks[by_address[where["pages"]].stack][0].function == "keep_pages"
    assert [b.address for b in blocks] == sorted(by_address)
