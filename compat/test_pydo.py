"""pydo, unmodified, against invokd's async-invoke surface over TLS.

Environment (set by compat/run): INVOKD_URL (https://127.0.0.1:<port>), MODEL_ACCESS_KEY,
SSL_CERT_FILE / REQUESTS_CA_BUNDLE (the local CA).
"""

import os
import time

import httpx
import pydo

BASE = os.environ["INVOKD_URL"]
KEY = os.environ["MODEL_ACCESS_KEY"]
client = pydo.Client(token=KEY, inference_endpoint=BASE)
http = httpx.Client(base_url=BASE, headers={"Authorization": f"Bearer {KEY}"})


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what.split(":")[0])


def field(obj, name):
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def wait(request_id):
    # pydo has no get/status method; the status is read over plain HTTP, as its docs say.
    deadline = time.time() + 60
    while True:
        r = http.get(f"/v1/async-invoke/{request_id}/status")
        r.raise_for_status()
        body = r.json()
        if body["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            full = http.get(f"/v1/async-invoke/{request_id}")
            full.raise_for_status()
            return full.json()
        if time.time() > deadline:
            raise AssertionError(f"{request_id} did not finish")
        time.sleep(0.05)


created = client.async_invoke.create(
    model_id="fal-ai/fast-sdxl",
    input={"prompt": "A futuristic cityscape at sunset", "output_format": "landscape_4_3", "num_images": 1},
    tags=[{"key": "type", "value": "test"}],
)
check(field(created, "status") == "QUEUED", f"async_invoke.create queues: {created}")
done = wait(field(created, "request_id"))
img = done["output"]["images"][0]
check((img["width"], img["height"]) == (1024, 768), f"landscape_4_3 is 1024x768: {img}")
check(done["tags"] == [{"key": "type", "value": "test"}], f"tags come back: {done['tags']}")
jpeg = httpx.get(img["url"]).content
check(jpeg[:3] == b"\xff\xd8\xff", "the image is a JPEG")

gen = client.async_images.generate(prompt="A futuristic city at sunset", model_id="fal-ai/flux/schnell")
done = wait(field(gen, "request_id"))
check(done["status"] == "COMPLETED" and done["output"]["images"], f"async_images.generate completes: {done}")

music = client.audio.generate(prompt="Techno song", model_id="fal-ai/stable-audio-25/text-to-audio", seconds_total=3)
done = wait(field(music, "request_id"))
wav = httpx.get(done["output"]["audio"]["url"]).content
check(wav[:4] == b"RIFF", "audio.generate gives a WAV")

speech = client.audio.speech.create(
    input="This text-to-speech example uses DigitalOcean multilingual voice.",
    model_id="fal-ai/elevenlabs/tts/multilingual-v2",
)
done = wait(field(speech, "request_id"))
check(done["status"] == "COMPLETED" and done["output"]["audio"]["url"], f"audio.speech.create completes: {done}")

try:
    client.async_invoke.create(model_id="fal-ai/nope", input={"prompt": "x"})
    check(False, "an unknown model is refused")
except Exception as e:  # azure-core maps 404 to ResourceNotFoundError
    check("404" in str(e) or "not in the catalog" in str(e), f"an unknown model is a 404: {e}")

print("pydo: all checks passed")
