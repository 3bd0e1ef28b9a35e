// Publish stdin's bytes as one message on a NATS subject, with the official Node.js
// client: the conformance suite's non-Python publisher for core NATS and JetStream.
//   node nats_publish.mjs <url> <subject> [--jetstream]
// With --jetstream the publish waits for the stream's acknowledgement.
import { connect } from "nats";

const [url, subject, mode] = process.argv.slice(2);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const body = new Uint8Array(Buffer.concat(chunks));

const nc = await connect({ servers: url });
try {
  if (mode === "--jetstream") {
    await nc.jetstream().publish(subject, body);
  } else {
    nc.publish(subject, body);
    await nc.flush();
  }
} finally {
  await nc.close();
}
