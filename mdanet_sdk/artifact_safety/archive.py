"""The artefact as a zip archive: read once, hashed member by member, and checked against its integrity record.

:func:`open_archive` reads the file once (torch then gets exactly those bytes), refuses duplicate or stray member
names and any layout on which zip readers could disagree (:func:`_check_layout`), and reads every member, which
checks its CRC; it tells a TorchScript archive from a torch.export one.
:func:`seal` appends the integrity record (the SHA-256 of every other member) at export and
:func:`check_integrity` compares the members with it: it detects damage, not forgery, since whoever can edit the
file can rewrite the record too. ``_json`` reads the archive's JSON members strictly.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdanet_sdk.errors import CheckpointError

INTEGRITY = "mdanet/integrity.json"
#: Largest artefact read (and largest total of its members): this network is well under 1 GiB in any format.
MAX_ARCHIVE_BYTES = 4 << 30
_MAX_METADATA_BYTES = 1 << 20
_REDO = "export it again with `mdanet-sdk export`"


@dataclass(frozen=True)
class Archive:
    """An artefact read into memory: its bytes, the folder all members sit in, and every member's SHA-256.

    Attributes:
        path: the file.
        data: its bytes, read once.
        root: the archive folder (``<root>/data.pkl``, ``<root>/extra/...``).
        digests: member name below ``root`` -> hex SHA-256 of its content.
        kind: ``"torchscript"``, ``"pt2"`` or None (neither container).
    """

    path: Path
    data: bytes = field(repr=False)
    root: str
    digests: dict[str, str] = field(repr=False)
    kind: str | None

    @property
    def sealed(self) -> bool:
        """Whether the archive carries an integrity record (:func:`seal`)."""
        return f"extra/{INTEGRITY}" in self.digests

    def read(self, name: str) -> bytes:
        """The content of member ``name`` (below the root)."""
        with zipfile.ZipFile(io.BytesIO(self.data)) as archive:
            return archive.read(f"{self.root}/{name}")


# NotImplementedError: zipfile raises it for compression methods it lacks (a crafted member can declare any).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError)


def open_archive(path: Path) -> Archive:
    """Read ``path`` and hash every member.

    Raises:
        CheckpointError: missing, too large, not a zip archive, members outside one folder or listed twice, or a
            member that does not match its CRC.
    """
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(f"artefact {path} {what}; pass a file written by `mdanet-sdk export`.")
    if path.stat().st_size > MAX_ARCHIVE_BYTES:
        raise CheckpointError(f"{path} is larger than any mdanet-sdk artefact ({MAX_ARCHIVE_BYTES >> 30} GiB).")
    data = path.read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise CheckpointError(
            f"{path} is not a readable export artefact ({exc}); pass a file written by `mdanet-sdk export`."
        ) from None
    with archive:
        infos = archive.infolist()
        root = _root(path, [info.filename for info in infos])
        _check_layout(path, data, infos)
        if sum(info.file_size for info in infos) > MAX_ARCHIVE_BYTES:
            raise CheckpointError(f"{path} unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GiB; {_REDO}.")
        try:
            digests = {info.filename[len(root) + 1 :]: _sha256(archive, info) for info in infos}
        except _ZIP_ERRORS as exc:  # a CRC mismatch or a truncated member
            raise CheckpointError(f"{path} is damaged ({exc}); {_REDO} or copy it again.") from None
    return Archive(path, data, root, digests, _container(digests))


def _root(path: Path, names: list[str]) -> str:
    """The one folder every member sits in. Duplicate names are refused: zip readers disagree on which wins,
    so the member torch reads could differ from the one checked here."""
    if len(set(names)) != len(names):
        raise CheckpointError(f"{path} lists a member twice, so zip readers may disagree on its content; {_REDO}.")
    root = names[0].split("/", 1)[0] if names else ""
    for name in names:
        head, _, rest = name.partition("/")
        parts = rest.split("/")
        if not root or head != root or not rest or "\\" in name or ".." in parts or "" in parts[:-1]:
            raise CheckpointError(f"{path} has a member {name!r:.80} outside its archive folder; {_REDO}.")
    return root


_EOCD = struct.Struct("<4s4H2LH")  # signature, disk, cd disk, entries here, entries, cd size, cd offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk of the zip64 record, its offset, number of disks
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # signature, record size, versions, disks, entries x2, cd size, offset
_LOCAL = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc, sizes, name, extra


def _check_layout(path: Path, data: bytes, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive that is not laid out exactly as written: torch's zip reader takes the recorded offsets
    as they are, whereas :mod:`zipfile` shifts them by whatever precedes the archive. A doctored copy put in
    front of a sealed artefact would be what torch loads, while the checks here would read the original. So the
    end record must close the file, the central directory must sit exactly where it says, and every member's
    local header must be where the directory says, hold the same name and end before the next member."""

    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a well-formed archive ({why}): the file was altered; {_REDO}.")

    eocd = len(data) - _EOCD.size
    if eocd < 0 or data[:4] != b"PK\x03\x04":
        raise refuse("it does not start with a zip member")
    sig, disk, cd_disk, here, entries, cd_size, cd_offset, comment = _EOCD.unpack_from(data, eocd)
    if sig != b"PK\x05\x06" or comment:
        raise refuse("bytes after its end record")
    cd_end, locator = eocd, eocd - _ZIP64_LOCATOR.size
    if locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":  # zip64, as torch writes it
        _, z64_disk, z64_offset, disks = _ZIP64_LOCATOR.unpack_from(data, locator)
        if z64_disk or disks != 1 or z64_offset > locator - _ZIP64_EOCD.size:
            raise refuse("a bad zip64 locator")
        sig, size, _, _, disk, cd_disk, here, entries, cd_size, cd_offset = _ZIP64_EOCD.unpack_from(data, z64_offset)
        if sig != b"PK\x06\x06" or z64_offset + 12 + size != locator:
            raise refuse("a bad zip64 end record")
        cd_end = z64_offset
    elif 0xFFFF in (here, entries) or 0xFFFFFFFF in (cd_size, cd_offset):
        raise refuse("a zip64 field without a zip64 record")
    if disk or cd_disk or here != entries or entries != len(infos):
        raise refuse("a central directory that does not list every member")
    if cd_offset + cd_size != cd_end:
        raise refuse(f"{cd_end - cd_size - cd_offset} bytes before the archive or in its central directory")
    ends = sorted(info.header_offset for info in infos) + [cd_offset]
    for info in infos:
        start = info.header_offset
        if start + _LOCAL.size > cd_offset:
            raise refuse(f"member {info.filename!r:.80} outside the archive")
        sig, *_, name_length, extra_length = _LOCAL.unpack_from(data, start)
        name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        name_start = start + _LOCAL.size
        if sig != b"PK\x03\x04" or data[name_start : name_start + name_length] != name:
            raise refuse(f"member {info.filename!r:.80} is not where its directory entry says")
        data_end = name_start + name_length + extra_length + info.compress_size
        if data_end > ends[ends.index(start) + 1]:
            raise refuse(f"member {info.filename!r:.80} overlaps the next one")


def _sha256(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    digest = hashlib.sha256()
    with archive.open(info) as member:  # reading to the end checks the CRC
        for block in iter(lambda: member.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _container(names: dict[str, str]) -> str | None:
    if {"data.pkl", "constants.pkl"} <= names.keys() and any(n.startswith("code/") for n in names):
        return "torchscript"
    if "archive_format" in names and any(n.startswith("models/") for n in names):
        return "pt2"
    return None


# -- integrity ----------------------------------------------------------------------------------------------
def seal(path: Path) -> None:
    """Append the integrity record (SHA-256 of every member) to a freshly written artefact.

    Appending a stored member leaves every other member where it was: ``torch.jit.load``, ``torch.export.load``
    and libtorch's ``torch::jit::load`` read the archive as before.
    """
    archive = open_archive(path)
    if archive.sealed:
        raise ValueError(f"{path} is sealed already")  # a second record would be a duplicate member
    record = {"algorithm": "sha256", "members": archive.digests}
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{archive.root}/extra/{INTEGRITY}", json.dumps(record, sort_keys=True), zipfile.ZIP_STORED)


def check_integrity(archive: Archive, trust: bool = False) -> None:
    """Compare the members with the integrity record; without one, refuse unless ``trust``.

    Raises:
        CheckpointError: no record (and not ``trust``), a damaged record, or members changed, missing or added.
    """
    name, path = f"extra/{INTEGRITY}", archive.path
    if not archive.sealed:
        if trust:
            return
        raise CheckpointError(
            f"{path} has no integrity record (it was written by an older mdanet-sdk or another tool), so damage "
            "to it cannot be detected; export it again, or pass trust=True (--trust) if you trust the file."
        )
    record = _json(path, INTEGRITY, archive.read(name))
    expected = record.get("members") if isinstance(record, dict) else None
    if (
        not isinstance(expected, dict)
        or record.get("algorithm") != "sha256"
        or not all(isinstance(v, str) for v in expected.values())
    ):
        raise CheckpointError(f"{path} has a damaged integrity record; {_REDO} or copy it again.")
    actual = {k: v for k, v in archive.digests.items() if k != name}
    changed = sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])  # no secret to time
    problems = [
        f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
        for label, names in (
            ("changed:", changed),
            ("missing:", sorted(expected.keys() - actual.keys())),
            ("added:", sorted(actual.keys() - expected.keys())),
        )
        if names
    ]
    if problems:
        raise CheckpointError(
            f"{path} does not match its integrity record ({'; '.join(problems)}), so it was damaged or edited "
            f"after export; {_REDO} or copy it again."
        )


# -- JSON members -------------------------------------------------------------------------------------------
def _json(path: Path, name: str, raw: bytes, limit: int = _MAX_METADATA_BYTES) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys (readers would disagree on which one counts)."""
    if len(raw) > limit:
        raise CheckpointError(f"{path} has a {name} of {len(raw)} bytes, far more than mdanet-sdk writes; {_REDO}.")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("a key appears twice")
        return dict(pairs)

    def constant(word: str) -> Any:
        raise ValueError(f"{word} is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=unique, parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} has a damaged {name} ({exc}); {_REDO}.") from None
