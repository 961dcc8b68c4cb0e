"""What a file is: its content type from its name or its first bytes, and an image's size
from its header (PNG, JPEG, GIF, WebP), with no imaging library."""

from __future__ import annotations

import mimetypes
import re
import struct

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]")

_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/mpeg": ".mp3",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "video/mp4": ".mp4",
    "application/json": ".json",
    "text/plain": ".txt",
}


def sniff(head: bytes) -> str | None:
    """The content type the first bytes of a file show, if a known one."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:3] == b"ID3" or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    return None


def content_type_for(name: str | None, head: bytes) -> str:
    """The content type of a file: from its name's extension, else its bytes."""
    if name:
        guessed, _ = mimetypes.guess_type(name, strict=False)
        if guessed:
            return "audio/wav" if guessed in ("audio/x-wav", "audio/wave") else guessed
    return sniff(head) or "application/octet-stream"


def extension_for(content_type: str) -> str:
    """A file name extension for a content type (``.bin`` for an unknown one)."""
    ct = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(ct) or mimetypes.guess_extension(ct, strict=False) or ".bin"


def safe_name(name: str, content_type: str) -> str:
    """A name the gateway takes: ``[A-Za-z0-9._-]``, 1-128 characters, with an extension."""
    name = _NAME_OK.sub("_", name.rsplit("/", 1)[-1]).strip(".") or "output"
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext:
        stem, ext = name, extension_for(content_type).lstrip(".")
    ext = ext[:16]
    return f"{stem[: 127 - len(ext)]}.{ext}"


def image_size(data: bytes) -> tuple[int, int] | None:
    """An image's (width, height) from its header, or None when it is not one this reads."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return w, h
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except (struct.error, IndexError):
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0xF) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, h
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        # Start of frame: every SOFn but DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None
