"""Repository hygiene: committed files outside tests/ name no absolute path of the machine they were made on.

Write `<run dir>`, `<sweep dir>` or a path relative to the repository instead (issue 13).
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One machine's folders: home and work trees, temporary folders, installed packages. A path such as
# `/models/x` or `/path/to/data` in a usage example, `/proc/cpuinfo` or `/dev/null` names no one machine.
MACHINE_PATH = re.compile(
    r"(?<![\w.~$}-])/(?:work|tmp|root|home|check|Users|mnt|scratch|private/var)/"
    r"|site-packages|dist-packages"
)


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each line that names a machine's absolute path."""
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if MACHINE_PATH.search(line)]


def tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = []
    for name in filter(None, names.split("\0")):
        path = ROOT / name
        if name.startswith("tests/") or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary (figures)
            continue
        files.append(path)
    return files


def test_detector_finds_machine_paths():
    assert machine_paths("run folder /work/sweeps/multirun/table7\nok line") == [
        (1, "run folder /work/sweeps/multirun/table7")]
    assert machine_paths("`/tmp/site`")
    assert machine_paths("x /root/.cache/y")
    assert machine_paths("from .venv/lib/python3.12/site-packages/torch")
    for fine in ("model.path=/models/x", "SIMLAB_DATA=/path/to/data", "/proc/cpuinfo", "> /dev/null",
                 "multirun/table7/2026", "<run dir>/metrics.json", "$PWD/.device/data", "#!/usr/bin/env bash"):
        assert not machine_paths(fine), fine


def test_committed_files_name_no_machine_paths():
    found = []
    for path in tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{path.relative_to(ROOT)}:{i}: {line.strip()[:120]}" for i, line in machine_paths(text)]
    assert not found, "absolute paths of one machine (write <run dir>, <sweep dir> or a relative path):\n" + "\n".join(
        found)
