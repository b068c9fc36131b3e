"""Survey data files, plain or compressed: the copy shipped in the package is xz-compressed, a user's folder is
usually plain JSON, and configs name both the same way (``wvs7/sft_wvs_train.json``).

Every reader of a data-root file goes through :func:`find_data_file` and :func:`read_data_bytes`, so "plain file
if it exists, else the same name + .xz, else + .gz" is decided in this one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COMPRESSED_SUFFIXES = (".xz", ".gz")  # tried in this order after the plain name; both are Python standard library


def data_file_candidates(name: str | Path, root: str | Path) -> list[Path]:
    """Where ``name`` may be: ``name`` itself when absolute, else under ``root``; then with .xz and .gz added."""
    base = Path(name) if Path(name).is_absolute() else Path(root) / name
    return [base, *(base.with_name(base.name + suffix) for suffix in COMPRESSED_SUFFIXES)]


def find_data_file(name: str | Path, root: str | Path) -> Path:
    """The first existing candidate for ``name`` (plain, .xz, .gz), or a one-line error naming them all."""
    candidates = data_file_candidates(name, root)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(missing_message(name, root))


def missing_message(name: str | Path, root: str | Path) -> str:
    base, *compressed = data_file_candidates(name, root)
    also = " nor ".join(path.name for path in compressed)
    return f"survey data file {base} does not exist, nor {also} beside it (data.files, data.root, $SIMLAB_DATA)"


def plain_name(name: str | Path) -> str:
    """``name`` without a compression suffix (``wvs7/x.jsonl.xz`` -> ``wvs7/x.jsonl``): what the content is."""
    name = Path(name).as_posix()
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_data_bytes(path: str | Path) -> bytes:
    """The file's content, decompressed when its name ends in .xz or .gz; a damaged archive is a one-line error."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".xz":
        import lzma  # imported here: a Python built without liblzma still reads plain and .gz files

        try:
            return lzma.decompress(raw, format=lzma.FORMAT_XZ)
        except lzma.LZMAError as err:
            raise ValueError(f"{path}: not a readable xz file ({err}); re-create it or use the plain .json") from err
    if path.suffix == ".gz":
        import gzip

        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: not a readable gzip file ({err}); re-create it or use the plain .json") from err
    return raw


def decode_utf8(raw: bytes, where: str | Path) -> str:
    """``raw`` as UTF-8 text, a leading byte-order mark dropped; a byte that is not UTF-8 (a Latin-1 "é" saved by an
    old editor) is a one-line error naming ``where``, the line and the byte."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{where}: not UTF-8: byte {raw[err.start]:#04x} on line {line} (offset {err.start}); save "
                         f"the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def read_data_text(path: str | Path) -> str:
    """The file's content as UTF-8 text (decompressed as :func:`read_data_bytes` does)."""
    return decode_utf8(read_data_bytes(path), path)


def read_data_json(name: str | Path, root: str | Path) -> Any:
    """``name`` under ``root`` (plain or compressed) parsed as JSON; a malformed file names itself and the line."""
    path = find_data_file(name, root)
    try:
        return json.loads(read_data_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON (line {err.lineno} column {err.colno}: {err.msg})") from err
