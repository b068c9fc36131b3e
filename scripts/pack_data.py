"""Make the survey data shipped in the package from a data folder: each file xz-compressed, plus SHA256SUMS.

    python scripts/pack_data.py SRC_DIR [--out simlab/data/survey]

SRC_DIR holds the country-level files under their usual names (wvs7/sft_wvs_train.json, ...) and the population
files in wvs7_populations/ (``simlab build-populations ... --out SRC_DIR/wvs7_populations``). SHA256SUMS lists
the sha256 of each file's uncompressed bytes (`sha256sum` format), which tests/test_packaged_data.py checks
against the shipped copies. When SRC_DIR has a README.md whose table gives a file's sha256 (as the shared data
folder's does), the file must match it, so the shipped copy is the documented one byte for byte.
Respondent-level files are never packed: only the FILES below are. Same input, same output (no timestamps).
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import re
import sys
from pathlib import Path

FILES = (  # relative to SRC_DIR and to --out (there with .xz added)
    "wvs7/sft_wvs_train.json",
    "wvs7/sft_wvs_valid.json",
    "wvs7/sft_wvs_test.json",
    "wvs7/countries.json",
    "wvs7/questionnaire_en.json",
    "wvs7_zh/sft_wvs_zh_valid.json",
    "pew/global_pew_test.json",
    "pew/pew_c1_test.json",
    "pew/pew_c3_test.json",
    "wvs7_populations/populations_train.json",  # built by `simlab build-populations` (docs/DATA.md)
    "wvs7_populations/populations_valid.json",
    "wvs7_populations/populations_test.json",
    "wvs7_populations/populations_build.json",  # its report: settings, counts, input checksums
)
MANIFEST = "SHA256SUMS"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "simlab" / "data" / "survey"
README_ROW = re.compile(r"^\|\s*`(?P<name>[^`]+)`\s*\|.*\|\s*`(?P<sha>[0-9a-f]{64})`\s*\|\s*$")


def compress(data: bytes) -> bytes:
    """xz at the strongest preset, CRC64 check: deterministic for the same liblzma."""
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME)


def documented_checksums(src: Path) -> dict[str, str]:
    """name -> sha256 from the README.md table of SRC_DIR (empty without one)."""
    readme = src / "README.md"
    if not readme.is_file():
        return {}
    found = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        match = README_ROW.match(line.strip())
        if match:
            found[match["name"]] = match["sha"]
    return found


def pack(src: Path, out: Path) -> list[str]:
    """Compress every file of FILES from ``src`` into ``out`` and write ``out``/SHA256SUMS; returns its lines."""
    documented = documented_checksums(src)
    missing = [name for name in FILES if not (src / name).is_file()]
    if missing:
        raise SystemExit(f"error: {src} lacks {missing}")
    lines = []
    for name in FILES:
        data = (src / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if name in documented and documented[name] != digest:
            raise SystemExit(f"error: {src / name}: sha256 {digest} differs from {documented[name]} in "
                             f"{src / 'README.md'}")
        target = out / f"{name}.xz"
        target.parent.mkdir(parents=True, exist_ok=True)
        packed = compress(data)
        if lzma.decompress(packed) != data:
            raise SystemExit(f"error: {target}: the compressed copy does not decompress to {src / name}")
        target.write_bytes(packed)
        checked = "matches README.md" if name in documented else "not listed in a README.md"
        print(f"{name}: {len(data)} bytes -> {len(packed)} bytes xz, sha256 {digest[:12]}... ({checked})")
        lines.append(f"{digest}  {name}")
    (out / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="data folder with wvs7/, wvs7_zh/ and pew/ (plain JSON)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the .xz files go (default: the package)")
    args = parser.parse_args(argv)
    pack(args.src, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
