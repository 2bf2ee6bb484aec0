// The peer of `make bench`: the official Node.js event handler for Web PubSub, as its docs show it.
//
//   node server.js PORT     serves /api/eventhandler for hub "chat" on 127.0.0.1:PORT (0 = a free port)
//
// It answers a connect with the same JSON the app sends (user id, the token's roles, the chosen
// subprotocol) and a user event with no reply, as the app's default chat policy does. It does not
// verify ce-signature (the package does not: a forged event is accepted); the app does.
"use strict";

const express = require("express");
const { WebPubSubEventHandler } = require("@azure/web-pubsub-express");

const handler = new WebPubSubEventHandler("chat", {
  path: "/api/eventhandler",
  handleConnect: (req, res) => {
    const subprotocol = (req.subprotocols || []).includes("json.webpubsub.azure.v1")
      ? "json.webpubsub.azure.v1"
      : undefined;
    res.success({ userId: req.context.userId, roles: req.claims?.role ?? [], subprotocol });
  },
  handleUserEvent: (req, res) => {
    res.success();
  },
});

const app = express();
app.use(handler.getMiddleware());
const server = app.listen(Number(process.argv[2] || 0), "127.0.0.1", () => {
  // One line for the benchmark: where the peer listens.
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
server.keepAliveTimeout = 60_000;
process.stdin.on("end", () => server.close(() => process.exit(0)));
process.stdin.resume();
