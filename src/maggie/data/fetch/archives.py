"""Split zip archives (``name.z01, name.z02, ..., name.zip``, made by ``zip -s``) and safe extraction.

The published I-HIM50K and V-HIM2K5 come as such splits; their README joins them with
``zip -F``.  ``join_split_zip`` does the same in Python: it concatenates the segments and
rewrites the central directory so every entry's offset is absolute in the joined file
(adding zip64 fields where offsets pass 4 GiB), after which ``zipfile`` reads it as usual.
"""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
from pathlib import Path

from maggie.data.layout import DataError
from maggie.files import partial_path

EOCD_SIG, EOCD64_SIG, LOC64_SIG, CDH_SIG = 0x06054B50, 0x06064B50, 0x07064B50, 0x02014B50
U32, U16 = 0xFFFFFFFF, 0xFFFF


def split_segments(archive: Path) -> list[Path]:
    """``name.zip`` (the last segment) -> [name.z01, ..., name.zip]; a plain zip -> [name.zip]."""
    parts = []
    i = 1
    while (p := archive.with_suffix(f".z{i:02d}")).exists():
        parts.append(p)
        i += 1
    return parts + [archive]


class _Joined:
    """Read access to the concatenation of the segments by absolute position."""

    def __init__(self, segments: list[Path]):
        self.segments = segments
        self.starts = []
        pos = 0
        for s in segments:
            self.starts.append(pos)
            pos += s.stat().st_size
        self.size = pos

    def read(self, pos: int, n: int) -> bytes:
        out = bytearray()
        for seg, start in zip(self.segments, self.starts, strict=True):
            end = start + seg.stat().st_size
            if pos < end and pos + n > start:
                with seg.open("rb") as f:
                    f.seek(max(pos - start, 0))
                    out += f.read(min(pos + n, end) - max(pos, start))
        return bytes(out)


def _find_eocd(last: Path) -> tuple[int, bytes]:
    size = last.stat().st_size
    with last.open("rb") as f:
        f.seek(max(0, size - 65557))
        tail = f.read()
    at = tail.rfind(struct.pack("<I", EOCD_SIG))
    if at < 0:
        raise DataError(f"{last}: not a zip archive (no end-of-central-directory record)")
    return size - len(tail) + at, tail[at:at + 22]


def _rewrite_entry(entry: bytes, starts: list[int]) -> bytes:
    (sig, made, need, flags, method, mtime, mdate, crc, csize, usize, nlen, xlen, clen, disk, iattr, eattr,
     offset) = struct.unpack("<IHHHHHHIIIHHHHHII", entry[:46])
    name = entry[46:46 + nlen]
    extra = entry[46 + nlen:46 + nlen + xlen]
    comment = entry[46 + nlen + xlen:46 + nlen + xlen + clen]
    # Parse the extra fields; pull the zip64 values out of 0x0001.
    fields, z64 = [], None
    i = 0
    while i + 4 <= len(extra):
        tag, ln = struct.unpack("<HH", extra[i:i + 4])
        if tag == 0x0001:
            z64 = extra[i + 4:i + 4 + ln]
        else:
            fields.append(extra[i:i + 4 + ln])
        i += 4 + ln
    vals = []
    j = 0
    for is_big, width in ((usize == U32, 8), (csize == U32, 8), (offset == U32, 8), (disk == U16, 4)):
        if is_big:
            if z64 is None or j + width > len(z64):
                raise DataError("split archive: truncated zip64 field")
            vals.append(int.from_bytes(z64[j:j + width], "little"))
            j += width
        else:
            vals.append(None)
    usize64 = vals[0] if vals[0] is not None else usize
    csize64 = vals[1] if vals[1] is not None else csize
    rel = vals[2] if vals[2] is not None else offset
    disk_no = vals[3] if vals[3] is not None else disk
    absolute = starts[disk_no] + rel
    new64 = b""
    if usize == U32:
        new64 += struct.pack("<Q", usize64)
    if csize == U32:
        new64 += struct.pack("<Q", csize64)
    if absolute >= U32:
        new64 += struct.pack("<Q", absolute)
    new_extra = b"".join(fields) + (struct.pack("<HH", 0x0001, len(new64)) + new64 if new64 else b"")
    head = struct.pack("<IHHHHHHIIIHHHHHII", sig, made, need, flags, method, mtime, mdate, crc, csize, usize, nlen,
                       len(new_extra), clen, 0, iattr, eattr, U32 if absolute >= U32 else absolute)
    return head + name + new_extra + comment


def join_split_zip(archive: Path, out: Path) -> Path:
    """Join ``archive``'s segments into one ordinary zip file at ``out``; returns ``out``.

    A malformed archive (truncated or crafted headers, offsets outside the segments) is one DataError."""
    try:
        return _join_split_zip(archive, out)
    except (struct.error, IndexError, ValueError, KeyError, OverflowError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{archive}: malformed split zip archive ({exc.__class__.__name__}: {exc})") from exc


def _join_split_zip(archive: Path, out: Path) -> Path:
    segments = split_segments(archive)
    joined = _Joined(segments)
    eocd_pos, eocd = _find_eocd(segments[-1])
    _, this_disk, cd_disk, _, total, cd_size, cd_off, _ = struct.unpack("<IHHHHIIH", eocd)
    disks = this_disk + 1
    if U16 in (this_disk, cd_disk, total) or U32 in (cd_size, cd_off):
        loc = joined.read(joined.starts[-1] + eocd_pos - 20, 20)
        sig, rec_disk, rec_off, disks = struct.unpack("<IIQI", loc)
        if sig != LOC64_SIG:
            raise DataError(f"{archive}: zip64 archive without a zip64 locator")
        if disks != len(segments):
            raise DataError(f"{archive}: the archive has {disks} segments, {len(segments)} found "
                            f"({', '.join(s.name for s in segments)})")
        rec = joined.read(joined.starts[rec_disk] + rec_off, 56)
        if struct.unpack("<I", rec[:4])[0] != EOCD64_SIG:
            raise DataError(f"{archive}: broken zip64 end-of-central-directory record")
        _, _, _, _, _, cd_disk, _, total, cd_size, cd_off = struct.unpack("<IQHHIIQQQQ", rec)
    if disks != len(segments):
        raise DataError(f"{archive}: the archive has {disks} segments, {len(segments)} found "
                        f"({', '.join(s.name for s in segments)}); download the missing .zNN files")
    cd_start = joined.starts[cd_disk] + cd_off
    cd = joined.read(cd_start, cd_size)
    entries, i = [], 0
    for _ in range(total):
        if struct.unpack("<I", cd[i:i + 4])[0] != CDH_SIG:
            raise DataError(f"{archive}: corrupt central directory (segment missing or out of order?)")
        nlen, xlen, clen = struct.unpack("<HHH", cd[i + 28:i + 34])
        n = 46 + nlen + xlen + clen
        entries.append(_rewrite_entry(cd[i:i + n], joined.starts))
        i += n
    new_cd = b"".join(entries)
    with out.open("wb") as f:
        remaining = cd_start
        for seg in segments:
            with seg.open("rb") as src:
                while remaining > 0:
                    chunk = src.read(min(1 << 20, remaining))
                    if not chunk:
                        break
                    f.write(chunk)
                    remaining -= len(chunk)
        f.write(new_cd)
        if len(entries) >= U16 or cd_start >= U32 or len(new_cd) >= U32:
            rec_at = f.tell()
            f.write(struct.pack("<IQHHIIQQQQ", EOCD64_SIG, 44, 45, 45, 0, 0, len(entries), len(entries),
                                len(new_cd), cd_start))
            f.write(struct.pack("<IIQI", LOC64_SIG, 0, rec_at, 1))
            f.write(struct.pack("<IHHHHIIH", EOCD_SIG, 0, 0, U16, U16, U32, U32, 0))
        else:
            f.write(struct.pack("<IHHHHIIH", EOCD_SIG, 0, 0, len(entries), len(entries), len(new_cd), cd_start, 0))
    return out


def extract_zip(archive: Path, dest: Path) -> Path:
    """Extract into a temporary sibling of ``dest``, then rename: ``dest`` is complete or absent.

    Split archives are joined first (next to ``dest``, removed afterwards).  Member paths
    that would land outside ``dest`` are refused.
    """
    archive = Path(archive)
    joined_tmp = None
    if len(split_segments(archive)) > 1:
        dest.parent.mkdir(parents=True, exist_ok=True)
        joined_tmp = dest.parent / f".{archive.stem}.joined.zip"  # not beside the archive (a read-only cache)
        join_split_zip(archive, joined_tmp)
    source = joined_tmp or archive
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(dest)
    tmp.mkdir()
    try:
        try:
            with zipfile.ZipFile(source) as zf:
                root = tmp.resolve()
                for member in zf.infolist():
                    target = (tmp / member.filename).resolve()
                    if root != target and root not in target.parents:
                        raise DataError(f"{archive}: member {member.filename!r} would be written outside the folder")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as exc:
            raise DataError(f"{archive}: corrupt zip archive ({exc})") from exc
        # An archive usually holds one top folder named like the dataset: unwrap it.
        inner = [p for p in tmp.iterdir() if not p.name.startswith("__MACOSX")]
        content = inner[0] if len(inner) == 1 and inner[0].is_dir() and inner[0].name == dest.name else tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(content, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if joined_tmp is not None and joined_tmp.exists():
            joined_tmp.unlink()
    return dest
