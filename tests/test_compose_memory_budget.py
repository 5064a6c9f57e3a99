"""compose.working_bytes is an upper bound of what a compose really allocates, so a server's
--max-compose-mb refuses what would not fit instead of running out of memory."""

import json
import subprocess
import sys

import pytest

_MEASURE = r"""
import ctypes, json, sys, torch
from pathlib import Path
from loradb.lora.compose import compose_exact, compress
from loradb.lora.merges import compose_merged, working_bytes

def status(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024

torch.manual_seed(0)
k, d, r, merge = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
adapters = [{f"m{j}": (torch.randn(r, d), torch.randn(d, r), 1.0) for j in range(2)} for _ in range(k)]
weights = [1.0 / k] * k
torch.zeros(1) @ torch.zeros(1)  # load the kernels before the baseline
# hand freed setup memory back and reset the peak (VmHWM) to now, so the peak measured is
# this compose's own and not hidden under what the setup once held
ctypes.CDLL("libc.so.6").malloc_trim(0)
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS")
if merge == "exact":
    compress(compose_exact(adapters, weights), rank=r)
else:
    compose_merged(adapters, weights, mode=merge, density=0.5)
print(json.dumps({"used": status("VmHWM") - before, "estimate": working_bytes(adapters, merge=merge, compressed=merge == "exact")}))
"""


RSS_NOISE = 1 << 20  # bytes: the peak RSS of one process run is this coarse


@pytest.mark.parametrize("merge, k, d, r", [("ties", 6, 768, 8), ("ties", 16, 256, 8), ("dare", 6, 768, 8), ("dare", 2, 1024, 8),
                                         ("exact", 32, 2048, 16)])
def test_estimate_bounds_the_real_peak(merge, k, d, r):
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(k), str(d), str(r), merge], capture_output=True, text=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, check=True)
    measured = json.loads(out.stdout)
    assert measured["used"] > 0
    # a bound, and not a loose one; RSS moves in allocator arenas and pages, so the measured
    # peak may exceed an exact estimate by that noise alone (seen: 0.5 MiB over 63 MiB, 1 run in 4)
    assert measured["used"] <= measured["estimate"] + RSS_NOISE <= 4 * measured["used"] + RSS_NOISE, measured
