"""Reading what a file is without an imaging library, checked against Pillow's own files."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from invokd_worker import _media
from invokd_worker._http import Backoff, retryable_status


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (333, 1017)])
def test_image_size_reads_the_header(fmt: str, size: tuple[int, int]) -> None:
    buf = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    Image.new("RGB", size, (10, 20, 30)).save(buf, fmt, **options)
    data = buf.getvalue()
    assert _media.image_size(data) == size
    assert _media.sniff(data) == f"image/{fmt.lower()}"


def test_image_size_of_a_lossy_webp_and_a_progressive_jpeg() -> None:
    for fmt, options in (("WEBP", {"quality": 50}), ("JPEG", {"progressive": True})):
        buf = io.BytesIO()
        Image.new("RGB", (123, 45)).save(buf, fmt, **options)
        assert _media.image_size(buf.getvalue()) == (123, 45)


def test_not_an_image() -> None:
    assert _media.image_size(b"RIFF\0\0\0\0WAVEfmt ") is None
    assert _media.image_size(b"") is None
    assert _media.image_size(b"\xff\xd8\xff") is None


def test_names_and_content_types() -> None:
    assert _media.content_type_for("a.png", b"") == "image/png"
    assert _media.content_type_for("a.wav", b"") == "audio/wav"
    assert _media.content_type_for(None, b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert _media.content_type_for(None, b"??") == "application/octet-stream"
    assert _media.safe_name("my city!.png", "image/png") == "my_city_.png"
    assert _media.safe_name("/tmp/x/out.jpg", "image/jpeg") == "out.jpg"
    assert _media.safe_name("output-1", "image/jpeg") == "output-1.jpg"
    assert _media.safe_name("noext", "application/x-unknown") == "noext.bin"
    long = _media.safe_name("a" * 300 + ".png", "image/png")
    assert len(long) == 128 and long.endswith(".png")


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    b = Backoff(0.5, 8.0, random.Random(1))
    for n, ceiling in enumerate([0.5, 1, 2, 4, 8, 8, 8]):
        d = b.delay(n)
        assert ceiling / 2 <= d <= ceiling
    assert b.delay(0, retry_after=3) == 3
    assert b.delay(0, retry_after=100) == 8.0
    assert [s for s in (400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503) if retryable_status(s)] == [
        429,
        500,
        502,
        503,
    ]
