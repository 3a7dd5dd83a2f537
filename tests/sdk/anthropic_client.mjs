// Drives mod_aibridge with the official @anthropic-ai/sdk client; prints one
// JSON line so tests/integration/test_sdk.py can check what the SDK saw.
// usage: node anthropic_client.mjs <base-url>
import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({ baseURL: process.argv[2], apiKey: "placeholder", maxRetries: 0 });
const request = { model: "claude-sonnet-4-5", max_tokens: 100,
                  messages: [{ role: "user", content: "Say hello" }] };
const out = {};

const message = await client.messages.create(request);
out.message = message.content[0].text;

let text = "";
const stream = client.messages.stream(request);
stream.on("text", (delta) => { text += delta; });
const final = await stream.finalMessage();
out.stream = text;
out.stream_usage = final.usage.output_tokens;

try {
    for await (const _ of await client.messages.create({ ...request, stream: true })) { /* drain */ }
    out.stream_error = null;
} catch (err) {
    out.stream_error = String(err.message ?? err);
}
console.log(JSON.stringify(out));
