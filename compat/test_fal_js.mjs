// @fal-ai/client (JavaScript), unmodified, against invokd over TLS through fal's proxy protocol.
// Environment (set by compat/run): INVOKD_URL, FAL_KEY, INVOKD_SLOW_MODEL, NODE_EXTRA_CA_CERTS.
import { createFalClient } from "@fal-ai/client";
import jpeg from "jpeg-js";

const BASE = process.env.INVOKD_URL;
const SLOW = process.env.INVOKD_SLOW_MODEL;
const fal = createFalClient({
  credentials: process.env.FAL_KEY,
  proxyUrl: { url: `${BASE}/api/fal/proxy`, when: "always" },
});

function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log("ok -", what.split(":")[0]);
}

async function bytes(url) {
  const r = await fetch(url); // output URLs need no key
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

/// Decodes every pixel of a JPEG; its width and height.
function jpegSize(b) {
  const img = jpeg.decode(b, { useTArray: true, maxMemoryUsageInMB: 1024 });
  return [img.width, img.height];
}

function pngSize(b) {
  const view = new DataView(b.buffer, b.byteOffset);
  return [view.getUint32(16), view.getUint32(20)];
}

// queue.submit / status / result
const endpoint = "fal-ai/flux/schnell";
const sub = await fal.queue.submit(endpoint, {
  input: { prompt: "a red fox", image_size: { width: 256, height: 160 }, output_format: "png" },
});
check(typeof sub.request_id === "string" && sub.request_id.length === 36, `submit: ${JSON.stringify(sub)}`);
let st;
for (let i = 0; i < 600; i++) {
  st = await fal.queue.status(endpoint, { requestId: sub.request_id, logs: true });
  if (st.status === "COMPLETED") break;
  await new Promise((r) => setTimeout(r, 50));
}
check(st.status === "COMPLETED", `status reaches COMPLETED: ${JSON.stringify(st)}`);
check(st.logs.some((l) => l.message.startsWith("invokd emulator")), `status has logs: ${JSON.stringify(st.logs)}`);
const res = await fal.queue.result(endpoint, { requestId: sub.request_id });
check(res.requestId === sub.request_id, `result carries the request id: ${res.requestId}`);
const png = await bytes(res.data.images[0].url);
check(JSON.stringify(pngSize(png)) === "[256,160]", `the image is 256x160: ${pngSize(png)}`);

// subscribe with logs and queue updates
const updates = [];
const sung = await fal.subscribe("fal-ai/elevenlabs/tts/multilingual-v2", {
  input: { text: "Hello from the JavaScript client." },
  logs: true,
  pollInterval: 50,
  onQueueUpdate: (u) => updates.push(u.status),
});
check(updates.at(-1) === "COMPLETED", `onQueueUpdate sees COMPLETED: ${updates}`);
const wav = await bytes(sung.data.audio.url);
check(new TextDecoder().decode(wav.slice(0, 4)) === "RIFF", "subscribe gives a WAV");

// streamStatus over SSE
const sub2 = await fal.queue.submit("fal-ai/fast-sdxl", { input: { prompt: "stream me", image_size: "square" } });
const stream = await fal.queue.streamStatus("fal-ai/fast-sdxl", { requestId: sub2.request_id, logs: true });
const seen = [];
for await (const ev of stream) seen.push(ev.status);
const last = await stream.done();
check(last.status === "COMPLETED", `streamStatus ends COMPLETED: ${seen}`);

// cancel a queued and a running job
const running = await fal.queue.submit(SLOW, { input: { prompt: "runs" } });
const queued = await fal.queue.submit(SLOW, { input: { prompt: "waits" } });
for (let i = 0; i < 600; i++) {
  const s = await fal.queue.status(SLOW, { requestId: running.request_id });
  if (s.status === "IN_PROGRESS") break;
  await new Promise((r) => setTimeout(r, 50));
}
await fal.queue.cancel(SLOW, { requestId: queued.request_id });
await fal.queue.cancel(SLOW, { requestId: running.request_id });
for (const [job, what] of [[queued, "queued"], [running, "running"]]) {
  let s;
  for (let i = 0; i < 600; i++) {
    s = await fal.queue.status(SLOW, { requestId: job.request_id });
    if (s.status === "COMPLETED") break;
    await new Promise((r) => setTimeout(r, 50));
  }
  check(s.status === "COMPLETED" && s.error_type === "client_cancelled", `cancelled ${what} job: ${JSON.stringify(s)}`);
}

// storage.upload, then the URL as an input
const pixel = Uint8Array.from(
  Buffer.from(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082",
    "hex",
  ),
);
const url = await fal.storage.upload(new Blob([pixel], { type: "image/png" }));
check(url.startsWith(BASE), `storage.upload returns an invokd URL: ${url}`);
const back = await bytes(url);
check(Buffer.compare(Buffer.from(back), Buffer.from(pixel)) === 0, "the uploaded bytes come back");
const edited = await fal.subscribe("fal-ai/omnigen-v2", {
  input: { prompt: "make it blue", input_image_urls: [url], image_size: "square" },
  pollInterval: 50,
});
check(edited.data.images.length === 1, "an input with the uploaded URL completes");

// fal.run through the proxy (target fal.run): the model's output, not a queue receipt
const ran = await fal.run("fal-ai/flux/schnell", {
  input: { prompt: "a run", image_size: { width: 200, height: 120 }, output_format: "png" },
});
check(ran.data.prompt === "a run" && ran.requestId.length === 36, `run gives the output: ${JSON.stringify(ran)}`);
const ranPng = await bytes(ran.data.images[0].url);
check(JSON.stringify(pngSize(ranPng)) === "[200,120]", `the run's image is 200x120: ${pngSize(ranPng)}`);
try {
  await fal.run("fal-ai/flux/schnell", { input: { prompt: "x", num_images: 10 } });
  check(false, "an invalid run is an error");
} catch (e) {
  check(e.status === 422 && e.body.detail[0].loc[1] === "num_images", `an invalid run is fal's 422: ${e.message}`);
}

// The streaming example of seed 004's hidream pages, as written, for both models.
for (const model of ["fal-ai/hidream-i1-full", "fal-ai/hidream-i1-fast"]) {
  const stream = await fal.stream(model, {
    input: {
      prompt: "a cat holding a skateboard which has 'fal' written on it in red spray paint"
    }
  });

  const events = [];
  for await (const event of stream) {
    console.log(event);
    events.push(event);
  }

  const result = await stream.done();
  check(events.length >= 2, `${model} streams previews then the output: ${events.length} events`);
  check(JSON.stringify(result) === JSON.stringify(events.at(-1)), `done() gives the last event of ${model}`);
  for (const e of events.slice(0, -1)) {
    const size = jpegSize(await bytes(e.images[0].url));
    check(JSON.stringify(size) === "[1024,1024]", `each preview of ${model} decodes at 1024x1024: ${size}`);
  }
  const size = jpegSize(await bytes(result.images[0].url));
  check(JSON.stringify(size) === "[1024,1024]", `the final image of ${model} is 1024x1024 (square_hd): ${size}`);
  check(result.prompt.startsWith("a cat holding"), `the result of ${model} is its output: ${result.prompt}`);
}

console.log("@fal-ai/client: all checks passed");
