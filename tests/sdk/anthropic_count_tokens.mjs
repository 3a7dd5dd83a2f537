// The official @anthropic-ai/sdk's messages.countTokens through mod_aibridge;
// prints one JSON line: the count for each model named, or the error the
// SDK raised (its class and status).
// usage: node anthropic_count_tokens.mjs <base-url> <model>...
import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({ baseURL: process.argv[2], apiKey: "placeholder", maxRetries: 0 });
const out = {};

for (const model of process.argv.slice(3)) {
    try {
        const count = await client.messages.countTokens({
            model, messages: [{ role: "user", content: "Say hello" }] });
        out[model] = count.input_tokens;
    } catch (err) {
        out[model] = { error: err.constructor.name, status: err.status ?? null };
    }
}
console.log(JSON.stringify(out));
