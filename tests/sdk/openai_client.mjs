// Drives mod_aibridge with the official openai client; prints one JSON line
// per call so tests/integration/test_sdk.py can check what the SDK saw.
// usage: node openai_client.mjs <base-url>
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "placeholder", maxRetries: 0 });
const model = "gpt-4o-mini";
const messages = [{ role: "user", content: "Say hello" }];
const out = {};

const chat = await client.chat.completions.create({ model, messages });
out.chat = chat.choices[0].message.content;

let text = "";
for await (const chunk of await client.chat.completions.create({ model, messages, stream: true })) {
    text += chunk.choices[0]?.delta?.content ?? "";
}
out.chat_stream = text;

const response = await client.responses.create({ model, input: "Say hello" });
out.responses = response.output_text;

text = "";
let completed = false;
for await (const event of await client.responses.create({ model, input: "Say hello", stream: true })) {
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.type === "response.completed") completed = true;
}
out.responses_stream = completed ? text : null;

try {
    await client.chat.completions.create({ model, messages, stream: true, stream_options: { include_usage: true } })
        .then(async (stream) => { for await (const _ of stream) { /* drain */ } });
    out.stream_error = null;
} catch (err) {
    out.stream_error = String(err.message ?? err);
}
console.log(JSON.stringify(out));
