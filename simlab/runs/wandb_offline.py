"""Read a W&B run file (``<run dir>/wandb/offline-run-*/run-*.wandb``) back without the W&B service.

The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of records,
each with a 7-byte header (CRC32, length, type: full / first / middle / last) and a serialized
``wandb_internal_pb2.Record``. Tests use it to check what a run really logged (tables, images, artifacts) rather
than trusting the calls, and ``simlab.simulator.artifacts.resolve_adapter`` uses it to find an adapter logged offline.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

BLOCK_SIZE = 32768
HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """The file is not a W&B run file, or it is damaged."""


def record_payloads(path: str | Path) -> Iterator[bytes]:
    """The serialized records of a ``.wandb`` file, reassembled across blocks."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise WandbFileError(f"{path}: not a W&B run file (starts with {data[:4]!r})")
    index, pending = HEADER_SIZE, b""
    while index + HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - index % BLOCK_SIZE
        if left_in_block < HEADER_SIZE:  # too small for a record header: the writer padded the block
            index += left_in_block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[index:index + HEADER_SIZE])
        index += HEADER_SIZE
        chunk = data[index:index + length]
        index += length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:  # zero padding at the end of a block
            continue
        else:
            raise WandbFileError(f"{path}: record type {kind} at byte {index - length - HEADER_SIZE}")


def read_run(path: str | Path) -> dict:
    """What a run file holds, as plain data: ``history`` (a dict per logged step: key -> decoded JSON value),
    ``summary`` and ``config`` (key -> value), the run's ``group``, ``name`` and ``id``, and ``artifacts`` (name,
    type, metadata, files: path -> local staging path)."""
    from wandb.proto import wandb_internal_pb2 as pb

    run: dict = {"history": [], "summary": {}, "artifacts": [], "config": {}, "group": None, "name": None}
    for payload in record_payloads(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.update(group=info.run_group or None, name=info.display_name, id=info.run_id)
        elif kind == "history":
            run["history"].append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run["summary"][_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "artifact":
            artifact = record.artifact
            run["artifacts"].append({
                "name": artifact.name,
                "type": artifact.type,
                "aliases": list(artifact.aliases),
                "metadata": json.loads(artifact.metadata) if artifact.metadata else {},
                "files": {entry.path: entry.local_path for entry in artifact.manifest.contents},
            })
    return run


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def run_files(folder: str | Path) -> list[Path]:
    """Every offline run file under ``folder`` (a run dir, a sweep dir or a ``wandb`` dir), oldest first."""
    return sorted(Path(folder).glob("**/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)


def logged_media(run: dict) -> dict[str, str]:
    """key -> W&B media type (``table-file``, ``image-file``...) of everything logged as media in a run."""
    media = {}
    for step in run["history"]:
        for key, value in step.items():
            if key.endswith("/_type") and isinstance(value, str):
                media[key[: -len("/_type")]] = value
    return media
