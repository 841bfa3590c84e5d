"""Lake under SIGKILL, and its memory use as it grows (both in real subprocesses)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import torch

from tau2.continual_learning.tiered import Lake

WRITER = r"""
import sys
from pathlib import Path
import torch
from tau2.continual_learning.tiered import Field, Lake

path = Path(sys.argv[1])
fields = {
    "obs": Field((1, 64, 64), torch.uint8),
    "action": Field((), torch.int64),
    "terminated": Field((), torch.bool),
}
lake = Lake.open(path) if (path / "lake.json").exists() else Lake.create(path, 10**6, fields)
i = len(lake)
print("ready", flush=True)
while True:
    ids = torch.arange(i, i + 200)
    terminal = ids % 50 == 49
    nxt = torch.where(terminal, 255, (ids + 1) % 250)
    lake.extend({
        "obs": (ids % 250).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 64, 64).clone(),
        "next_obs": nxt.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 64, 64).clone(),
        "action": ids,
        "terminated": terminal,
    })
    i += 200
"""

GROWER = r"""
import json, resource, sys
import torch
from tau2.continual_learning.tiered import Field, Lake

torch.set_num_threads(1)
path, sizes = sys.argv[1], [int(n) for n in sys.argv[2:]]
fields = {"obs": Field((3, 84, 84), torch.uint8), "action": Field((), torch.int64)}
lake = Lake.create(path, sizes[-1], fields)
generator = torch.Generator().manual_seed(0)
chunk = 250
for n in sizes:  # grow to each size, sample it, report the peak RSS so far
    while len(lake) < n:
        frames = torch.randint(0, 256, (chunk + 1, 3, 84, 84), dtype=torch.uint8)
        lake.extend({"obs": frames[:-1], "next_obs": frames[1:], "action": torch.arange(chunk)})
    for _ in range(2 * n // 32):
        lake.sample(32, generator)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "peak_mb": peak_mb, "disk_mb": lake.disk_bytes() / 2**20}))
"""


def _check_consistent(path) -> int:
    """Every committed transition is intact; returns how many there are."""
    with Lake.open(path, readonly=True) as lake:
        n = len(lake)
        out = lake.get(torch.arange(n))
    ids = torch.arange(n)
    assert torch.equal(out["action"], ids)
    assert torch.equal(out["terminated"], ids % 50 == 49)
    assert torch.equal(out["obs"][:, 0, 0, 0].long(), ids % 250)
    nxt = torch.where(ids % 50 == 49, 255, (ids + 1) % 250)
    assert torch.equal(out["next_obs"][:, 0, 0, 0].long(), nxt)
    assert (out["obs"] == out["obs"][:, :, :1, :1]).all()  # whole frames, not torn ones
    assert (out["next_obs"] == out["next_obs"][:, :, :1, :1]).all()
    return n


def _committed(path) -> int:
    return json.loads((path / "lake.json").read_text())["count"]


def test_sigkill_while_writing_leaves_a_consistent_lake(tmp_path):
    path = tmp_path / "lake"
    rng = random.Random(7)
    counts = [0]
    for _ in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while _committed(path) <= counts[-1] + 1000 and time.monotonic() < deadline:
            time.sleep(0.01)  # let it commit a few chunks, then kill it at a random moment
        time.sleep(rng.uniform(0.0, 0.2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        counts.append(_check_consistent(path))  # the lock died with the writer
        assert counts[-1] > counts[-2], "the writer should have committed something"


def test_rss_does_not_grow_with_the_lake(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", GROWER, str(tmp_path / "lake"), "1000", "4000"],
        capture_output=True,
        text=True,
        check=True,
    )
    small, large = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
    assert large["disk_mb"] - small["disk_mb"] > 60  # what was written and sampled grew 4x
    assert large["peak_mb"] - small["peak_mb"] < 16, (small, large)
