"""An invokd worker that makes real images with Pillow: a picture generated from the prompt
and its seed, with the prompt written on it, in the shape of ``fal-ai/flux/schnell``.

    INVOKD_API_URL=http://127.0.0.1:8080 INVOKD_WORKER_TOKEN=invw_... python worker.py

It serves ``fal-ai/flux/schnell`` unless ``INVOKD_WORKER_MODELS`` says otherwise; every
``fal-ai/flux``-shaped input works: ``prompt``, ``image_size`` (a preset such as
``landscape_4_3`` or ``{"width", "height"}``), ``num_images``, ``output_format`` (``jpeg`` or
``png``), ``seed`` and ``num_inference_steps`` (reported as progress).
"""

from __future__ import annotations

import colorsys
import io
import os
import random
import textwrap
import time
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from invokd_worker import Job, JobError, start

#: fal's image_size presets (width, height).
PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
DEFAULT_SIZE = "landscape_4_3"
#: The most pixels one image may have here (a 14142 x 14142 image would take gigabytes).
MAX_PIXELS = 40_000_000

_fonts: dict[int, Any] = {}


def setup() -> None:
    """Once per process, before the first job: load the font at the sizes most used."""
    for size in (24, 48):
        font_of(size)


def font_of(size: int) -> Any:
    if size not in _fonts:
        try:
            _fonts[size] = ImageFont.load_default(size=size)
        except (TypeError, OSError):  # a Pillow without FreeType: the bitmap font
            _fonts[size] = ImageFont.load_default()
    return _fonts[size]


def size_of(image_size: Any) -> tuple[int, int]:
    """The (width, height) an ``image_size`` asks for."""
    if image_size is None:
        return PRESETS[DEFAULT_SIZE]
    if isinstance(image_size, str):
        if image_size not in PRESETS:
            raise JobError(f"image_size {image_size!r} is not one of {', '.join(PRESETS)}")
        return PRESETS[image_size]
    if isinstance(image_size, dict):
        w, h = int(image_size.get("width", 512)), int(image_size.get("height", 512))
        if w <= 0 or h <= 0:
            raise JobError("image_size: width and height must be positive")
        if w * h > MAX_PIXELS:
            raise JobError(f"image_size: {w}x{h} is over this worker's {MAX_PIXELS} pixels")
        return w, h
    raise JobError(f"image_size must be a preset or {{width, height}}, not {image_size!r}")


def draw(prompt: str, width: int, height: int, seed: int) -> Image.Image:
    """A picture from the seed: a sky gradient, hills and a sun, and the prompt written on it."""
    rng = random.Random(seed)
    hue = rng.random()
    top = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.55, 0.95))
    bottom = tuple(int(c * 255) for c in colorsys.hsv_to_rgb((hue + 0.12) % 1, 0.8, 0.35))
    # The gradient drawn at one pixel wide, then stretched: fast at any size.
    column = Image.new("RGB", (1, 256))
    for y in range(256):
        t = y / 255
        column.putpixel((0, y), tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    image = column.resize((width, height), Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(image)
    unit = min(width, height)
    sun_r = max(2, int(unit * rng.uniform(0.08, 0.16)))
    sx, sy = int(width * rng.uniform(0.15, 0.85)), int(height * rng.uniform(0.12, 0.4))
    d.ellipse((sx - sun_r, sy - sun_r, sx + sun_r, sy + sun_r), fill=(255, 236, 180))
    for layer in range(3):
        shade = tuple(int(c * (0.5 - 0.12 * layer)) for c in bottom)
        base = height * (0.6 + 0.12 * layer)
        points: list[tuple[float, float]] = [(0, height)]
        for i in range(9):
            points.append((width * i / 8, base - rng.uniform(0, height * 0.18)))
        points.append((width, height))
        d.polygon(points, fill=shade)
    if unit >= 64:
        image = image.filter(ImageFilter.GaussianBlur(radius=max(1, unit // 256)))
        d = ImageDraw.Draw(image)
        font = font_of(max(10, unit // 20))
        chars = max(8, int(width / (max(10, unit // 20) * 0.55)))
        text = "\n".join(textwrap.wrap(prompt, width=chars)[:6]) or " "
        box = d.multiline_textbbox((0, 0), text, font=font)
        tw, th = int(box[2] - box[0]), int(box[3] - box[1])
        tx, ty = (width - tw) // 2, height - th - max(8, height // 12)
        pad = max(4, unit // 60)
        d.rectangle((tx - pad, ty - pad, tx + tw + pad, ty + th + pad * 2), fill=(0, 0, 0))
        d.multiline_text((tx, ty), text, font=font, fill=(255, 255, 255), align="center")
    return image


def handler(job: Job) -> dict[str, Any]:
    """One job: ``num_images`` images of the requested size and format."""
    started = time.perf_counter()
    inp = job.input
    prompt = str(inp.get("prompt") or "")
    width, height = size_of(inp.get("image_size"))
    count = int(inp.get("num_images") or 1)
    fmt = str(inp.get("output_format") or "jpeg").lower()
    if fmt not in ("jpeg", "png"):
        raise JobError(f"output_format {fmt!r} is not jpeg or png")
    seed = inp.get("seed")
    seed = int(seed) if seed is not None else random.randrange(2**32)
    steps = int(inp.get("num_inference_steps") or 4)
    job.log(f"drawing {count} image(s) of {width}x{height} as {fmt}, seed {seed}")

    images = []
    for i in range(count):
        for step in range(1, steps + 1):
            job.raise_if_cancelled()
            job.progress(i * steps + step, count * steps, message=f"image {i + 1} of {count}")
        picture = draw(prompt, width, height, seed + i)
        buf = io.BytesIO()
        picture.save(buf, "JPEG" if fmt == "jpeg" else "PNG", quality=90)
        ext = "jpg" if fmt == "jpeg" else "png"
        images.append(
            job.save_file(buf.getvalue(), f"image-{i}.{ext}", f"image/{fmt}", width=width, height=height)
        )
    inference = time.perf_counter() - started
    job.log(f"done in {inference * 1000:.0f} ms")
    return {
        "images": images,
        "timings": {"inference": inference},
        "seed": seed,
        "has_nsfw_concepts": [False] * count,
        "prompt": prompt,
    }


if __name__ == "__main__":
    start(
        handler,
        setup=setup,
        models=None if os.environ.get("INVOKD_WORKER_MODELS") else ["fal-ai/flux/schnell"],
    )
