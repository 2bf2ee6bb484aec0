// Drives the official @azure/web-pubsub-client (the chat page's bundled version, from web/node_modules)
// against a service URL: invokes each event of argv[3] (a JSON list of [event, data, dataType]) in turn
// and prints one JSON line per result, {"ok": {...}} or {"error": {"name", "message", "detail"}}.
// Binary data travels as base64 text both ways.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "..", "web", "package.json"));
const { WebPubSubClient } = require("@azure/web-pubsub-client");

const [url, calls] = [process.argv[2], JSON.parse(process.argv[3])];
const client = new WebPubSubClient(url, { autoReconnect: false });
const connected = new Promise((resolve) => client.on("connected", resolve));
await client.start();
await connected;
const toArrayBuffer = (base64) => {
  const bytes = Buffer.from(base64, "base64");
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
};
for (const [event, data, dataType] of calls) {
  try {
    const content = dataType === "binary" ? toArrayBuffer(data) : data;
    const result = await client.invokeEvent(event, content, dataType);
    const shown = result.data instanceof ArrayBuffer ? Buffer.from(result.data).toString("base64") : result.data;
    console.log(JSON.stringify({ ok: { dataType: result.dataType ?? null, data: shown ?? null } }));
  } catch (error) {
    console.log(JSON.stringify({ error: { name: error.name, message: error.message, detail: error.errorDetail ?? null } }));
  }
}
const stopped = new Promise((resolve) => client.on("stopped", resolve));
client.stop();
await stopped;
// The client leaves a keep-alive timer behind that would hold Node for ~40 s after stopping.
process.exit(0);
