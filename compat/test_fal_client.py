"""fal-client (Python), unmodified, against invokd over TLS.

Environment (set by compat/run): FAL_QUEUE_RUN_HOST=127.0.0.1:<port>,
FAL_RUN_HOST=127.0.0.1:<port>/run, FAL_KEY, SSL_CERT_FILE, INVOKD_URL (https://127.0.0.1:<port>),
and INVOKD_SLOW_MODEL (a model the server runs slowly).
"""

import asyncio
import io
import os
import struct
import time

import fal_client
import fal_client.client as fal_module
import httpx
from PIL import Image

BASE = os.environ["INVOKD_URL"]
SLOW = os.environ["INVOKD_SLOW_MODEL"]
# fal-client hard-codes its storage hosts; pointing them at the gateway is the documented way.
fal_module.REST_URL = BASE
fal_module.CDN_URL = BASE

client = fal_client.SyncClient(key=os.environ["FAL_KEY"])


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what.split(":")[0])


def png_size(data: bytes):
    check(data[:8] == b"\x89PNG\r\n\x1a\n", f"a PNG file: {data[:8]!r}")
    return struct.unpack(">II", data[16:24])


def download(url: str) -> bytes:
    r = httpx.get(url)  # output URLs need no key
    r.raise_for_status()
    return r.content


# submit, status with logs, iter_events, get
handle = client.submit(
    "fal-ai/flux/schnell",
    {"prompt": "a lighthouse", "image_size": {"width": 320, "height": 200}, "output_format": "png", "num_images": 2},
)
check(len(handle.request_id) == 36, f"submit returns a request id: {handle.request_id}")
first = client.status("fal-ai/flux/schnell", handle.request_id, with_logs=True)
check(isinstance(first, (fal_client.Queued, fal_client.InProgress, fal_client.Completed)), f"status parses: {first!r}")
events = list(handle.iter_events(with_logs=True, interval=0.05))
check(isinstance(events[-1], fal_client.Completed), f"iter_events ends Completed: {events[-1]!r}")
check(any(log["message"].startswith("invokd emulator") for log in events[-1].logs), f"logs: {events[-1].logs}")
result = handle.get()
check(len(result["images"]) == 2, f"two images: {result}")
for img in result["images"]:
    check(png_size(download(img["url"])) == (320, 200), "each image is 320x200")
same = client.result("fal-ai/flux/schnell", handle.request_id)
check(same == result, "result by id equals the handle's")

# subscribe with queue updates and logs
updates = []
out = client.subscribe(
    "fal-ai/stable-audio-25/text-to-audio",
    {"prompt": "rain", "seconds_total": 2},
    with_logs=True,
    on_queue_update=updates.append,
    interval=0.05,
)
wav = download(out["audio"]["url"])
check(wav[:4] == b"RIFF" and wav[8:12] == b"WAVE", "subscribe gives a WAV")
byte_rate = struct.unpack("<I", wav[28:32])[0]
check(abs((len(wav) - 44) / byte_rate - 2.0) < 0.01, f"it lasts 2 s: {(len(wav) - 44) / byte_rate}")
check(len(updates) >= 1 and isinstance(updates[-1], fal_client.Completed), f"queue updates: {updates}")

# cancel a queued job and a running one (the slow model runs one job at a time)
running = client.submit(SLOW, {"prompt": "runs"})
queued = client.submit(SLOW, {"prompt": "waits"})
deadline = time.time() + 30
while not isinstance(client.status(SLOW, running.request_id), fal_client.InProgress):
    if time.time() > deadline:
        raise AssertionError("the first slow job did not start")
    time.sleep(0.05)
queued.cancel()
running.cancel()
for h, what in [(queued, "queued"), (running, "running")]:
    final = None
    for final in h.iter_events(interval=0.05):
        pass
    check(isinstance(final, fal_client.Completed), f"cancelled {what} job completes")
    try:
        h.get()
        check(False, f"the result of a cancelled {what} job is an error")
    except fal_client.FalClientHTTPError as e:
        check(e.status_code == 499, f"cancelled {what} result is 499: {e.status_code} {e}")

# upload a file, then use its URL as an input
pixel = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)
url = client.upload(pixel, "image/png", file_name="pixel.png")
check(url.startswith(BASE), f"upload returns an invokd URL: {url}")
check(download(url) == pixel, "the uploaded bytes come back")
edited = client.subscribe(
    "fal-ai/omnigen-v2",
    {"prompt": "make it blue", "input_image_urls": [url], "image_size": "square"},
    interval=0.05,
)
check(len(edited["images"]) == 1, f"an input with the uploaded URL completes: {edited}")

# run: the model's output, not a queue receipt, as a job of invokd
def image_of(url: str):
    img = Image.open(io.BytesIO(download(url)))
    img.load()  # decodes every pixel
    return img


ran = fal_client.run("fal-ai/flux/schnell", arguments={"prompt": "a run", "image_size": {"width": 200, "height": 120}})
check("status" not in ran and ran["prompt"] == "a run", f"run answers with the output: {ran}")
check(image_of(ran["images"][0]["url"]).size == (200, 120), "the run's image is 200x120")
try:
    fal_client.run("fal-ai/flux/schnell", arguments={"prompt": "x", "num_images": 10})
    check(False, "an invalid run is an error")
except fal_client.FalClientHTTPError as e:
    check(e.status_code == 422 and "num_images" in str(e), f"an invalid run is fal's 422: {e}")


# stream: previews of the requested size, then the final output, which ends the stream
def check_stream(events, size, what):
    check(len(events) >= 2, f"{what} sends previews then the output: {len(events)} events")
    for e in events[:-1]:
        check(image_of(e["images"][0]["url"]).size == size, f"each preview of {what} decodes at {size}")
    final = events[-1]
    check(image_of(final["images"][0]["url"]).size == size, f"the final image of {what} is {size}")
    check(final["prompt"] == "a cat", f"the last event of {what} is the output: {final}")


size = {"width": 320, "height": 240}
events = list(fal_client.stream("fal-ai/hidream-i1-fast", arguments={"prompt": "a cat", "image_size": size}))
check_stream(events, (320, 240), "stream")


# The async client keeps its connections in one event loop: both calls run in it.
async def async_calls():
    ran = await fal_client.run_async("fal-ai/fast-sdxl", arguments={"prompt": "async", "image_size": "square"})
    streamed = [
        e
        async for e in fal_client.stream_async(
            "fal-ai/hidream-i1-full", arguments={"prompt": "a cat", "image_size": "square"}
        )
    ]
    return ran, streamed


ran_async, streamed = asyncio.run(async_calls())
check(image_of(ran_async["images"][0]["url"]).size == (512, 512), f"run_async answers with the output: {ran_async}")
check_stream(streamed, (512, 512), "stream_async")

print("fal-client: all checks passed")
