// docs/clients.md's mqtt.js example, with the app's base URL and the user given on the command line:
// negotiate with protocol=mqtt, connect with a fresh URL, subscribe to `chat`, publish, receive.
// Prints one JSON line per received message, then exits.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

// mqtt.js from the web client's pinned dependencies (web/package-lock.json).
const here = path.dirname(fileURLToPath(import.meta.url));
const mqtt = createRequire(path.join(here, "..", "..", "..", "web", "package.json"))("mqtt");

const [app, userId] = process.argv.slice(2);

async function connect() {
  const response = await fetch(`${app}/api/negotiate?protocol=mqtt&userId=${encodeURIComponent(userId)}`);
  const { url } = await response.json();
  return mqtt.connect(url, { clientId: "device1", protocolVersion: 5, clean: true, reconnectPeriod: 0 });
}

const client = await connect();
const timer = setTimeout(() => {
  console.error("no message within 15 s");
  process.exit(2);
}, 15000);
client.on("error", (error) => {
  console.error(`mqtt error: ${error.message}`);
  process.exit(3);
});
client.on("connect", () =>
  client.subscribe("chat", (error) => {
    if (error) {
      console.error(`subscribe failed: ${error.message}`);
      process.exit(4);
    }
    client.publish("chat", "hello from mqtt.js");
  }),
);
client.on("message", (topic, payload) => {
  console.log(JSON.stringify({ topic, payload: payload.toString() }));
  clearTimeout(timer);
  client.end(false, () => process.exit(0));
});
