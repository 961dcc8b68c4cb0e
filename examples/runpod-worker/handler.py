"""A RunPod serverless worker, written only against the ``runpod`` SDK, that makes real images
with Pillow: a picture from the prompt and seed (a sky, a sun, hills) with the prompt written on
it, in the output shape of ``fal-ai/flux/schnell``. invokd runs it unchanged: start it with the
environment ``invokd workers runpod-env`` prints.

    eval "$(invokd workers runpod-env --token invw_... --models fal-ai/flux/schnell)"
    python handler.py

Input: ``prompt``, ``image_size`` (a preset such as ``landscape_4_3`` or ``{"width",
"height"}``), ``num_images``, ``output_format`` (``png`` or ``jpeg``), ``seed`` and
``num_inference_steps``: each step is reported with ``progress_update`` and takes
``STEP_SECONDS`` (default 0.05) seconds. ``CONCURRENCY`` jobs run at once (default 1).
"""

from __future__ import annotations

import asyncio
import base64
import colorsys
import io
import os
import random
import textwrap
import time
from typing import Any

import runpod
from PIL import Image, ImageDraw, ImageFont

PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
STEP_SECONDS = float(os.environ.get("STEP_SECONDS", "0.05"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "1"))


def size_of(image_size: Any) -> tuple[int, int]:
    if image_size is None:
        return PRESETS["landscape_4_3"]
    if isinstance(image_size, str):
        if image_size not in PRESETS:
            raise ValueError(f"image_size {image_size!r} is not one of {', '.join(PRESETS)}")
        return PRESETS[image_size]
    w, h = int(image_size.get("width", 512)), int(image_size.get("height", 512))
    if not (0 < w <= 4096 and 0 < h <= 4096):
        raise ValueError("image_size: width and height must be 1 to 4096")
    return w, h


def draw(prompt: str, width: int, height: int, seed: int) -> Image.Image:
    rng = random.Random(seed)
    hue = rng.random()
    top = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.55, 0.95))
    bottom = tuple(int(c * 255) for c in colorsys.hsv_to_rgb((hue + 0.12) % 1, 0.8, 0.35))
    column = Image.new("RGB", (1, 256))
    for y in range(256):
        t = y / 255
        column.putpixel((0, y), tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    image = column.resize((width, height), Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(image)
    unit = min(width, height)
    r = max(2, int(unit * rng.uniform(0.08, 0.16)))
    sx, sy = int(width * rng.uniform(0.15, 0.85)), int(height * rng.uniform(0.12, 0.4))
    d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 236, 180))
    for layer in range(3):
        shade = tuple(int(c * (0.5 - 0.12 * layer)) for c in bottom)
        base = height * (0.6 + 0.12 * layer)
        points = [(0.0, float(height))]
        points += [(width * i / 8, base - rng.uniform(0, height * 0.18)) for i in range(9)]
        points.append((float(width), float(height)))
        d.polygon(points, fill=shade)
    if unit >= 64 and prompt:
        font = ImageFont.load_default()
        text = "\n".join(textwrap.wrap(prompt, width=max(8, width // 8))[:6])
        d.multiline_text((8, height - 16 * (text.count("\n") + 2)), text, font=font, fill=(255, 255, 255))
    return image


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    inp = job["input"]
    prompt = str(inp.get("prompt") or "")
    width, height = size_of(inp.get("image_size"))
    count = int(inp.get("num_images") or 1)
    fmt = str(inp.get("output_format") or "png").lower()
    if fmt not in ("png", "jpeg"):
        return {"error": f"output_format {fmt!r} is not png or jpeg"}
    seed = inp.get("seed")
    seed = int(seed) if seed is not None else random.randrange(2**32)
    steps = int(inp.get("num_inference_steps") or 4)
    images = []
    for i in range(count):
        for step in range(1, steps + 1):
            runpod.serverless.progress_update(job, f"image {i + 1} of {count}: step {step} of {steps}")
            await asyncio.sleep(STEP_SECONDS)
        picture = await asyncio.to_thread(draw, prompt, width, height, seed + i)
        buf = io.BytesIO()
        picture.save(buf, "PNG" if fmt == "png" else "JPEG")
        data = base64.b64encode(buf.getvalue()).decode()
        images.append({"url": f"data:image/{fmt};base64,{data}"})
    return {
        "images": images,
        "timings": {"inference": time.perf_counter() - started},
        "seed": seed,
        "has_nsfw_concepts": [False] * count,
        "prompt": prompt,
    }


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda _current: CONCURRENCY})
