"""The Pillow example worker (examples/pillow-worker) against the fake gateway: real images
of the requested size and format."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fake_gateway import FakeGateway

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "pillow-worker" / "worker.py"


@pytest.fixture(scope="module")
def example() -> Any:
    spec = importlib.util.spec_from_file_location("pillow_worker", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FLUX_FIELDS = {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}


def flux_output_check(job: Any, output: dict[str, Any]) -> str | None:
    """What the gateway checks of an image model's output (its output_check): only the model's
    fields, as many images as asked, each a file of this job with its true size."""
    if set(output) - FLUX_FIELDS:
        return f"{sorted(set(output) - FLUX_FIELDS)} are not fields of the output"
    images = output.get("images")
    if not isinstance(images, list) or len(images) != job.input.get("num_images", 1):
        return "images: not as many as asked"
    for image in images:
        name = image["url"].removeprefix(f"blob:{job.id}/")
        if name not in job.files:
            return f"{image['url']} is not a file of this job"
        real = Image.open(io.BytesIO(job.files[name][1])).size
        if (image.get("width"), image.get("height")) != real:
            return f"width and height must be the image's, {real}"
    return None


@pytest.mark.parametrize(
    ("input", "size", "fmt", "count"),
    [
        ({}, (1024, 768), "JPEG", 1),
        ({"image_size": "square", "output_format": "png", "num_images": 2}, (512, 512), "PNG", 2),
        ({"image_size": "portrait_16_9", "seed": 5}, (576, 1024), "JPEG", 1),
        ({"image_size": {"width": 300, "height": 200}, "output_format": "png"}, (300, 200), "PNG", 1),
        ({"image_size": {"width": 16, "height": 9}}, (16, 9), "JPEG", 1),
    ],
)
def test_the_example_makes_images_of_the_requested_size(
    gateway: FakeGateway, start_worker, example: Any, input: dict, size: tuple, fmt: str, count: int
) -> None:
    gateway.output_check = flux_output_check
    start_worker(example.handler, setup=example.setup)
    job_id = gateway.submit({"prompt": "A futuristic city at sunset", **input}, model="acme/flux")
    job = gateway.wait_status(job_id, "COMPLETED")
    out = job.output
    assert set(out) == {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}
    assert out["prompt"] == "A futuristic city at sunset"
    assert out["has_nsfw_concepts"] == [False] * count
    assert out["timings"]["inference"] > 0
    if "seed" in input:
        assert out["seed"] == input["seed"]
    assert len(out["images"]) == count
    for image in out["images"]:
        assert (image["width"], image["height"]) == size
        assert image["content_type"] == f"image/{fmt.lower()}"
        ctype, data = job.files[image["file_name"]]
        assert ctype == image["content_type"] and image["url"].startswith("blob:")
        decoded = Image.open(io.BytesIO(data))
        assert (decoded.size, decoded.format) == (size, fmt)
    # Progress over the steps, and its log lines.
    assert any("drawing" in line["message"] for line in job.logs)


def test_the_same_seed_makes_the_same_picture(example: Any) -> None:
    a = example.draw("a cat", 128, 96, 42).tobytes()
    assert a == example.draw("a cat", 128, 96, 42).tobytes()
    assert a != example.draw("a cat", 128, 96, 43).tobytes()


def test_a_bad_size_fails_the_job_with_a_clear_message(gateway: FakeGateway, start_worker, example: Any) -> None:
    start_worker(example.handler)
    job = gateway.wait_status(gateway.submit({"prompt": "p", "image_size": "huge"}), "FAILED")
    assert job.error["message"].startswith("image_size 'huge' is not one of square_hd")
