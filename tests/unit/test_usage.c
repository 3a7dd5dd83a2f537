/* Unit tests for token usage and tool names (src/usage.c).
 *
 * Every usage field gets a distinct value in each body, so a field read
 * from the wrong member, or stored in the wrong place, fails. Blocking
 * bodies are fed whole, byte by byte and in odd-sized pieces. The garbage
 * tests only require that nothing crashes or leaks (valgrind, ASan). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "format.h"
#include "usage.h"


/* ------------------------------------------------------------------ */
/* Helpers                                                             */

#define NO_TOOLS ((const char *)NULL)

static void check_counts(const aib_usage_t *u, int seen, int64_t input, int64_t output,
                         int64_t cache_read, int64_t cache_write, int64_t reasoning)
{
    assert_int_equal(u->seen, seen);
    assert_int_equal(u->input, input);
    assert_int_equal(u->output, output);
    assert_int_equal(u->cache_read, cache_read);
    assert_int_equal(u->cache_write, cache_write);
    assert_int_equal(u->reasoning, reasoning);
}

/* The tool names, NULL-terminated. */
static void check_tools(const aib_usage_t *u, ...)
{
    va_list ap;
    const char *name;
    int i = 0;

    assert_non_null(u->tools);
    va_start(ap, u);
    while ((name = va_arg(ap, const char *)) != NULL) {
        assert_true(i < u->tools->nelts);
        assert_string_equal(APR_ARRAY_IDX(u->tools, i, const char *), name);
        i++;
    }
    va_end(ap);
    assert_int_equal(u->tools->nelts, i);
}

/* Feeds body to a new reader in pieces of `piece` bytes (0: whole). */
static void read_body(aib_usage_t *u, apr_pool_t *pool, const aib_format_t *kind,
                      const char *body, size_t len, size_t max_bytes, size_t piece)
{
    aib_usage_reader_t *r;
    size_t off = 0;

    aib_usage_init(u, pool);
    r = aib_usage_reader_create(pool, kind, u, max_bytes);
    assert_non_null(r);
    if (!piece)
        piece = len ? len : 1;
    while (off < len) {
        size_t n = len - off < piece ? len - off : piece;

        aib_usage_reader_feed(r, body + off, n);
        off += n;
    }
    aib_usage_reader_finish(r);
}

typedef struct {
    const char *event;
    const char *data;
} ev_t;

static void run_events(aib_usage_t *u, apr_pool_t *pool, const aib_format_t *kind,
                       const ev_t *evs, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        aib_usage_from_event(u, pool, kind, evs[i].event, evs[i].data,
                             strlen(evs[i].data));
}

static void one_event(aib_usage_t *u, apr_pool_t *pool, const aib_format_t *kind,
                      const char *event, const char *data)
{
    aib_usage_from_event(u, pool, kind, event, data, strlen(data));
}

static apr_pool_t *new_pool(void)
{
    apr_pool_t *child;

    assert_int_equal(apr_pool_create(&child, pool), APR_SUCCESS);
    return child;
}

/* Deterministic generator for the garbage tests. */
static uint32_t rng_state = 0x12345678u;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* ------------------------------------------------------------------ */
/* Realistic bodies                                                    */

static const char CHAT_BODY[] =
    "{\n"
    "  \"id\": \"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG\",\n"
    "  \"object\": \"chat.completion\",\n"
    "  \"created\": 1741570283,\n"
    "  \"model\": \"gpt-4o-2024-08-06\",\n"
    "  \"choices\": [\n"
    "    {\n"
    "      \"index\": 0,\n"
    "      \"message\": {\n"
    "        \"role\": \"assistant\",\n"
    "        \"content\": null,\n"
    "        \"tool_calls\": [\n"
    "          {\"id\": \"call_abc\", \"type\": \"function\", \"function\": "
    "{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\":\\\"Paris\\\"}\"}},\n"
    "          {\"id\": \"call_def\", \"type\": \"function\", \"function\": "
    "{\"name\": \"get_time\", \"arguments\": \"{}\"}}\n"
    "        ],\n"
    "        \"refusal\": null\n"
    "      },\n"
    "      \"logprobs\": null,\n"
    "      \"finish_reason\": \"tool_calls\"\n"
    "    },\n"
    "    {\n"
    "      \"index\": 1,\n"
    "      \"message\": {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [\n"
    "          {\"id\": \"call_ghi\", \"type\": \"function\", \"function\": "
    "{\"name\": \"lookup\", \"arguments\": \"{}\"}}]},\n"
    "      \"finish_reason\": \"tool_calls\"\n"
    "    }\n"
    "  ],\n"
    "  \"usage\": {\n"
    "    \"prompt_tokens\": 1117,\n"
    "    \"completion_tokens\": 46,\n"
    "    \"total_tokens\": 1163,\n"
    "    \"prompt_tokens_details\": {\"cached_tokens\": 1024, \"audio_tokens\": 3},\n"
    "    \"completion_tokens_details\": {\"reasoning_tokens\": 12, \"audio_tokens\": 5,\n"
    "      \"accepted_prediction_tokens\": 7, \"rejected_prediction_tokens\": 8}\n"
    "  },\n"
    "  \"service_tier\": \"default\",\n"
    "  \"system_fingerprint\": \"fp_fc9f1d7035\"\n"
    "}\n";

static const char RESPONSES_BODY[] =
    "{\"id\":\"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b\","
    "\"object\":\"response\",\"created_at\":1741476542,\"status\":\"completed\","
    "\"error\":null,\"incomplete_details\":null,\"instructions\":null,"
    "\"max_output_tokens\":null,\"model\":\"gpt-4.1-2025-04-14\","
    "\"output\":["
    "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[]},"
    "{\"type\":\"message\",\"id\":\"msg_1\",\"status\":\"completed\",\"role\":\"assistant\","
    "\"content\":[{\"type\":\"output_text\",\"text\":\"Let me check. "
    "{\\\"type\\\":\\\"function_call\\\",\\\"name\\\":\\\"fake\\\"}\",\"annotations\":[]}]},"
    "{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\","
    "\"name\":\"get_weather\",\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\","
    "\"status\":\"completed\"},"
    "{\"type\":\"web_search_call\",\"id\":\"ws_1\",\"status\":\"completed\"},"
    "{\"type\":\"function_call\",\"id\":\"fc_2\",\"call_id\":\"call_2\","
    "\"name\":\"send_email\",\"arguments\":\"{}\",\"status\":\"completed\"}"
    "],"
    "\"parallel_tool_calls\":true,\"previous_response_id\":null,"
    "\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":true,"
    "\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}},"
    "\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"truncation\":\"disabled\","
    "\"usage\":{\"input_tokens\":328,\"input_tokens_details\":{\"cached_tokens\":256},"
    "\"output_tokens\":52,\"output_tokens_details\":{\"reasoning_tokens\":17},"
    "\"total_tokens\":380},"
    "\"user\":null,\"metadata\":{}}";

static const char MESSAGES_BODY[] =
    "{\"id\":\"msg_01Aq9w938a90dw8q\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-sonnet-4-20250514\","
    "\"content\":["
    "{\"type\":\"thinking\",\"thinking\":\"The user wants weather.\",\"signature\":\"abc\"},"
    "{\"type\":\"text\",\"text\":\"I'll check the weather.\"},"
    "{\"type\":\"tool_use\",\"id\":\"toolu_01A09q90qw90lq917835lq9\","
    "\"name\":\"get_weather\",\"input\":{\"location\":\"San Francisco, CA\","
    "\"name\":\"not a tool\"}},"
    "{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":{}}"
    "],"
    "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":2048,"
    "\"cache_read_input_tokens\":1536,\"output_tokens\":89,"
    "\"service_tier\":\"standard\"}}";

static const size_t PIECES[] = { 0, 1, 2, 3, 7, 64, 1000 };

/* ------------------------------------------------------------------ */
/* Kinds and init                                                      */

static void test_kind(void **state)
{
    (void)state;
    assert_ptr_equal(aib_format_find("chat"), &aib_format_chat);
    assert_ptr_equal(aib_format_find("responses"), &aib_format_responses);
    assert_ptr_equal(aib_format_find("messages"), &aib_format_messages);
    assert_null(aib_format_find("passthrough"));
    assert_null(aib_format_find("Chat"));
    assert_null(aib_format_find(""));
    assert_null(aib_format_find(NULL));
}

/* Every format of the table describes everything: a format added with a
 * member left out fails here, not in a request. */
static void test_formats_complete(void **state)
{
    int i;

    (void)state;
    for (i = 0; i < AIB_FORMAT_COUNT; i++) {
        const aib_format_t *f = aib_formats[i];

        assert_non_null(f->name);
        assert_ptr_equal(aib_format_find(f->name), f);
        assert_non_null(f->usage_fields);
        assert_non_null(f->usage_fields[0].member);
        assert_non_null(f->usage_event_wanted);
        assert_non_null(f->usage_from_event);
        assert_non_null(f->tools_from_body);
        /* Asking for usage and taking it back go together. */
        assert_int_equal(!f->stream_usage_ask, !f->stream_usage_strip);
        assert_non_null(f->stream_complete);
        assert_non_null(f->stream_error);
        assert_non_null(f->keepalive);
        assert_non_null(f->tool_choice_none);
        assert_non_null(f->tool_entry);
        assert_non_null(f->client_tool_name);
        assert_non_null(f->serial_tool_calls);
        assert_non_null(f->call_array);
        assert_non_null(f->read_call);
        assert_non_null(f->history);
        assert_non_null(f->append_turn);
        assert_non_null(f->append_result);
        assert_non_null(f->no_calls_left);
        assert_non_null(f->turn_as_response);
        assert_non_null(f->filter_event);
        assert_non_null(f->filter_assistant);
    }
}

static void test_init(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;

    (void)state;
    memset(&u, 0x5a, sizeof(u));
    aib_usage_init(&u, pool);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */
/* Blocking bodies                                                     */

static void test_chat_blocking(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(PIECES) / sizeof(PIECES[0]); i++) {
        apr_pool_t *pool = new_pool();
        aib_usage_t u;

        read_body(&u, pool, &aib_format_chat, CHAT_BODY, strlen(CHAT_BODY), 1 << 20,
                  PIECES[i]);
        check_counts(&u, 1, 1117, 46, 1024, 0, 12);
        check_tools(&u, "get_weather", "get_time", "lookup", NO_TOOLS);
        apr_pool_destroy(pool);
    }
}

static void test_responses_blocking(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(PIECES) / sizeof(PIECES[0]); i++) {
        apr_pool_t *pool = new_pool();
        aib_usage_t u;

        read_body(&u, pool, &aib_format_responses, RESPONSES_BODY,
                  strlen(RESPONSES_BODY), 1 << 20, PIECES[i]);
        check_counts(&u, 1, 328, 52, 256, 0, 17);
        check_tools(&u, "get_weather", "send_email", NO_TOOLS);
        apr_pool_destroy(pool);
    }
}

static void test_messages_blocking(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(PIECES) / sizeof(PIECES[0]); i++) {
        apr_pool_t *pool = new_pool();
        aib_usage_t u;

        read_body(&u, pool, &aib_format_messages, MESSAGES_BODY,
                  strlen(MESSAGES_BODY), 1 << 20, PIECES[i]);
        check_counts(&u, 1, 472, 89, 1536, 2048, 0);
        check_tools(&u, "get_weather", "get_time", NO_TOOLS);
        apr_pool_destroy(pool);
    }
}

/* The same body read with another route's mapping finds only the members
 * both share: a route must not read another route's names. */
static void test_blocking_wrong_kind(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;

    (void)state;
    read_body(&u, pool, &aib_format_responses, CHAT_BODY, strlen(CHAT_BODY), 1 << 20, 0);
    check_counts(&u, 1, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);

    read_body(&u, pool, &aib_format_chat, MESSAGES_BODY, strlen(MESSAGES_BODY), 1 << 20, 0);
    check_counts(&u, 1, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);

    /* Responses and Messages share input_tokens/output_tokens. */
    read_body(&u, pool, &aib_format_messages, RESPONSES_BODY, strlen(RESPONSES_BODY),
              1 << 20, 0);
    check_counts(&u, 1, 328, 52, 0, 0, 0);
    check_tools(&u, NO_TOOLS);

    read_body(&u, pool, NULL, CHAT_BODY, strlen(CHAT_BODY), 1 << 20, 0);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);
    apr_pool_destroy(pool);
}

static void test_blocking_missing_fields(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;
    const char *b;

    (void)state;
    /* No usage at all: unseen. */
    b = "{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"message\":"
        "{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);

    /* usage null: unseen. */
    b = "{\"choices\":[],\"usage\":null}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_counts(&u, 0, 0, 0, 0, 0, 0);

    /* An empty usage object is still usage. */
    b = "{\"usage\":{}}";
    read_body(&u, pool, &aib_format_messages, b, strlen(b), 4096, 0);
    check_counts(&u, 1, 0, 0, 0, 0, 0);

    /* Only some fields (older models: no details). */
    b = "{\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_counts(&u, 1, 9, 12, 0, 0, 0);

    b = "{\"usage\":{\"input_tokens\":5,\"output_tokens\":6}}";
    read_body(&u, pool, &aib_format_messages, b, strlen(b), 4096, 0);
    check_counts(&u, 1, 5, 6, 0, 0, 0);

    b = "{\"usage\":{\"output_tokens_details\":{\"reasoning_tokens\":4}}}";
    read_body(&u, pool, &aib_format_responses, b, strlen(b), 4096, 0);
    check_counts(&u, 1, 0, 0, 0, 0, 4);

    /* usage nested elsewhere only: not the top-level usage. */
    b = "{\"data\":{\"usage\":{\"prompt_tokens\":3}}}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    apr_pool_destroy(pool);
}

/* Values that are not counts are ignored, others in the body still read. */
static void test_blocking_bad_values(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;
    const char *b;

    (void)state;
    b = "{\"usage\":{\"prompt_tokens\":\"12\",\"completion_tokens\":3.5,"
        "\"prompt_tokens_details\":{\"cached_tokens\":-4},"
        "\"completion_tokens_details\":{\"reasoning_tokens\":true}}}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_counts(&u, 1, 0, 0, 0, 0, 0);

    b = "{\"usage\":{\"prompt_tokens\":null,\"completion_tokens\":[1],"
        "\"prompt_tokens_details\":[{\"cached_tokens\":4}],"
        "\"completion_tokens_details\":\"x\",\"total_tokens\":7}}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_counts(&u, 1, 0, 0, 0, 0, 0);

    /* Beyond int64 (and beyond uint64): ignored; INT64_MAX itself is read. */
    b = "{\"usage\":{\"input_tokens\":99999999999999999999,"
        "\"output_tokens\":18446744073709551615,"
        "\"cache_read_input_tokens\":9223372036854775808,"
        "\"cache_creation_input_tokens\":9223372036854775807}}";
    read_body(&u, pool, &aib_format_messages, b, strlen(b), 4096, 0);
    check_counts(&u, 1, 0, 0, 0, INT64_MAX, 0);

    b = "{\"usage\":{\"input_tokens\":1e400,\"output_tokens\":-9223372036854775808,"
        "\"cache_read_input_tokens\":0,\"cache_creation_input_tokens\":1E3}}";
    read_body(&u, pool, &aib_format_messages, b, strlen(b), 4096, 0);
    assert_int_equal(u.input, 0);
    assert_int_equal(u.output, 0);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.cache_write, 0);

    /* usage of the wrong type. */
    b = "{\"usage\":[{\"prompt_tokens\":1}]}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    b = "{\"usage\":\"lots\"}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    apr_pool_destroy(pool);
}

static void test_blocking_bad_tools(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;
    const char *b;

    (void)state;
    b = "{\"choices\":[1,null,{\"message\":null},{\"message\":{\"tool_calls\":{}}},"
        "{\"message\":{\"tool_calls\":[null,{\"function\":\"f\"},{\"function\":{\"name\":3}},"
        "{\"function\":{\"name\":\"\"}},{\"function\":{}},"
        "{\"function\":{\"name\":\"ok\"}}]}}]}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, "ok", NO_TOOLS);

    b = "{\"choices\":{\"message\":{\"tool_calls\":[{\"function\":{\"name\":\"x\"}}]}}}";
    read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 0);
    check_tools(&u, NO_TOOLS);

    b = "{\"output\":[{\"type\":\"function_call\"},{\"type\":\"function_call\",\"name\":null},"
        "{\"type\":7,\"name\":\"x\"},{\"name\":\"y\"},\"function_call\","
        "{\"type\":\"FUNCTION_CALL\",\"name\":\"z\"},"
        "{\"type\":\"function_call\",\"name\":\"good\"}]}";
    read_body(&u, pool, &aib_format_responses, b, strlen(b), 4096, 0);
    check_tools(&u, "good", NO_TOOLS);

    b = "{\"output\":{\"type\":\"function_call\",\"name\":\"x\"}}";
    read_body(&u, pool, &aib_format_responses, b, strlen(b), 4096, 0);
    check_tools(&u, NO_TOOLS);

    b = "{\"content\":[{\"type\":\"tool_use\"},{\"type\":\"tool_use\",\"name\":[\"x\"]},"
        "{\"type\":\"text\",\"name\":\"t\"},{\"type\":\"tool_use\",\"name\":\"good\"}]}";
    read_body(&u, pool, &aib_format_messages, b, strlen(b), 4096, 0);
    check_tools(&u, "good", NO_TOOLS);

    b = "{\"content\":\"tool_use\"}";
    read_body(&u, pool, &aib_format_messages, b, strlen(b), 4096, 0);
    check_tools(&u, NO_TOOLS);
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */
/* The reader itself                                                   */

static void test_reader_max_bytes(void **state)
{
    apr_pool_t *pool = new_pool();
    size_t len = strlen(MESSAGES_BODY);
    aib_usage_t u;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(PIECES) / sizeof(PIECES[0]); i++) {
        /* Exactly max_bytes is read. */
        read_body(&u, pool, &aib_format_messages, MESSAGES_BODY, len, len, PIECES[i]);
        check_counts(&u, 1, 472, 89, 1536, 2048, 0);
        check_tools(&u, "get_weather", "get_time", NO_TOOLS);
        /* One byte more is not (even the complete part before it). */
        read_body(&u, pool, &aib_format_messages, MESSAGES_BODY, len, len - 1, PIECES[i]);
        check_counts(&u, 0, 0, 0, 0, 0, 0);
        check_tools(&u, NO_TOOLS);
    }
    /* Trailing whitespace counts toward the limit too. */
    {
        char *b = apr_pstrcat(pool, MESSAGES_BODY, "\n\n", NULL);

        read_body(&u, pool, &aib_format_messages, b, len + 2, len + 1, 0);
        check_counts(&u, 0, 0, 0, 0, 0, 0);
        read_body(&u, pool, &aib_format_messages, b, len + 2, len + 2, 1);
        check_counts(&u, 1, 472, 89, 1536, 2048, 0);
    }
    /* max_bytes 0: nothing is read. */
    read_body(&u, pool, &aib_format_messages, MESSAGES_BODY, len, 0, 0);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    apr_pool_destroy(pool);
}

/* Every strict prefix of a body is incomplete: nothing read. */
static void test_reader_truncated(void **state)
{
    apr_pool_t *pool = new_pool();
    size_t len = strlen(CHAT_BODY) - 1; /* without the final newline */
    aib_usage_t u;
    size_t cut;

    (void)state;
    for (cut = 0; cut < len; cut++) {
        apr_pool_t *sub;

        assert_int_equal(apr_pool_create(&sub, pool), APR_SUCCESS);
        read_body(&u, sub, &aib_format_chat, CHAT_BODY, cut, 1 << 20, cut % 5);
        assert_int_equal(u.seen, 0);
        assert_int_equal(u.input, 0);
        assert_int_equal(u.tools->nelts, 0);
        apr_pool_destroy(sub);
    }
    read_body(&u, pool, &aib_format_chat, CHAT_BODY, len, 1 << 20, 0);
    assert_int_equal(u.seen, 1);
    apr_pool_destroy(pool);
}

/* json-c takes a NUL byte for the end of its input; inside a comment it
 * then returns the last value it completed as a success. None of these is
 * JSON, so none may give usage (found by tests/fuzz, fuzz_request). */
static void test_nul_byte(void **state)
{
    static const char body[] = "[{\"usage\":{\"prompt_tokens\":777}}//";
    static const char chunk[] = "[{\"choices\":[],\"usage\":{\"prompt_tokens\":555}}//";
    static const char req[] = "{\"\":{}//";
    apr_pool_t *pool = new_pool();
    aib_usage_t u;
    apr_size_t out_len;
    int injected;
    size_t p;

    (void)state;
    for (p = 0; p < 3; p++) {
        /* sizeof: the NUL is part of the body. */
        read_body(&u, pool, &aib_format_chat, body, sizeof(body), 4096, p);
        check_counts(&u, 0, 0, 0, 0, 0, 0);
    }
    aib_usage_init(&u, pool);
    aib_usage_from_event(&u, pool, &aib_format_chat, NULL, chunk, sizeof(chunk));
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    /* Nor is it a request body to edit. */
    assert_ptr_equal(aib_usage_request(pool, &aib_format_chat, req, sizeof(req), &out_len, &injected), req);
    assert_int_equal(injected, 0);
    assert_int_equal(out_len, sizeof(req));
    apr_pool_destroy(pool);
}

/* What follows the object must not depend on where the body was cut: a
 * comment after it was taken for whitespace when it came in the same piece
 * as the '}', and refused when it came later (found by tests/fuzz,
 * fuzz_usage_reader). The reader is strict JSON, so never. */
static void test_reader_cut_anywhere(void **state)
{
    static const char *const bodies[] = {
        "{\"usage\":{\"prompt_tokens\":3}}//\n//\n",
        "{\"usage\":{\"prompt_tokens\":3}} /* c */ ",
        "{\"usage\":{\"prompt_tokens\":3}}\n// c",
        "{\"usage\":{\"prompt_tokens\":3}} x",
    };
    apr_pool_t *pool = new_pool();
    aib_usage_t u;
    size_t i, p;

    (void)state;
    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        for (p = 0; p <= strlen(bodies[i]); p++) {
            read_body(&u, pool, &aib_format_chat, bodies[i], strlen(bodies[i]), 4096, p);
            if (u.seen)
                fail_msg("read usage from %s in pieces of %zu", bodies[i], p);
        }
    }
    /* Whitespace after it is fine however it is cut. */
    for (p = 0; p <= 40; p++) {
        read_body(&u, pool, &aib_format_chat, "{\"usage\":{\"prompt_tokens\":3}} \r\n\t ", 34,
                  4096, p);
        check_counts(&u, 1, 3, 0, 0, 0, 0);
    }
    apr_pool_destroy(pool);
}

static void test_reader_not_json(void **state)
{
    static const char *const bodies[] = {
        "", "   ", "not json", "<html><body>502 Bad Gateway</body></html>",
        "[{\"usage\":{\"prompt_tokens\":1}}]", "\"usage\"", "42", "null", "true",
        "{\"usage\":{\"prompt_tokens\":1}} trailing",
        "{\"usage\":{\"prompt_tokens\":1}}{\"usage\":{\"prompt_tokens\":2}}",
        "{\"usage\":{\"prompt_tokens\":1}},",
        "{\"usage\":{\"prompt_tokens\":1}",
        "{\"usage\":{\"prompt_tokens\":1},}x",
        "{\"usage\" {\"prompt_tokens\":1}}",
        "{\"usage\":{\"prompt_tokens\":1]}",
        "\xef\xbb\xbf{\"usage\":{\"prompt_tokens\":1}}x",
    };
    apr_pool_t *pool = new_pool();
    aib_usage_t u;
    size_t i, p;

    (void)state;
    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        for (p = 0; p < 3; p++) {
            read_body(&u, pool, &aib_format_chat, bodies[i], strlen(bodies[i]), 4096, p);
            if (u.seen)
                fail_msg("read usage from %s", bodies[i]);
            assert_int_equal(u.input, 0);
        }
    }
    /* Whitespace around the object is fine. */
    {
        const char *b = " \r\n\t{\"usage\":{\"prompt_tokens\":1}} \r\n\t";

        read_body(&u, pool, &aib_format_chat, b, strlen(b), 4096, 1);
    }
    check_counts(&u, 1, 1, 0, 0, 0, 0);
    apr_pool_destroy(pool);
}

/* Nesting beyond the depth limit is an error, not a crash; 500 is fine. */
static void test_reader_depth(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;
    char *b;
    static const size_t depths[] = { 500, 600, 100000 };
    size_t d, depth, i, len;

    (void)state;
    for (d = 0; d < sizeof(depths) / sizeof(depths[0]); d++) {
        depth = depths[d];
        const char *head = "{\"usage\":{\"prompt_tokens\":3},\"x\":";
        const char *tail = "}";

        len = strlen(head) + 2 * depth + strlen(tail);
        b = malloc(len + 1);
        assert_non_null(b);
        strcpy(b, head);
        for (i = 0; i < depth; i++)
            b[strlen(head) + i] = '[';
        for (i = 0; i < depth; i++)
            b[strlen(head) + depth + i] = ']';
        strcpy(b + strlen(head) + 2 * depth, tail);
        read_body(&u, pool, &aib_format_chat, b, len, len, depth == 100000 ? 0 : 1);
        assert_int_equal(u.seen, depth == 500);
        assert_int_equal(u.input, depth == 500 ? 3 : 0);
        free(b);
    }
    apr_pool_destroy(pool);
}

static void test_reader_lifecycle(void **state)
{
    apr_pool_t *pool = new_pool(), *sub;
    aib_usage_reader_t *r;
    aib_usage_t u;

    (void)state;
    /* Pool destroyed mid-body, without finish: the cleanup frees the
     * parser (valgrind reports a leak otherwise). */
    assert_int_equal(apr_pool_create(&sub, pool), APR_SUCCESS);
    aib_usage_init(&u, pool);
    r = aib_usage_reader_create(sub, &aib_format_chat, &u, 1 << 20);
    aib_usage_reader_feed(r, CHAT_BODY, 200);
    apr_pool_destroy(sub);
    assert_int_equal(u.seen, 0);

    /* Pool destroyed after the whole body, without finish. */
    assert_int_equal(apr_pool_create(&sub, pool), APR_SUCCESS);
    r = aib_usage_reader_create(sub, &aib_format_messages, &u, 1 << 20);
    aib_usage_reader_feed(r, MESSAGES_BODY, strlen(MESSAGES_BODY));
    apr_pool_destroy(sub);
    assert_int_equal(u.seen, 0);

    /* Finish, then more feeds and finishes: nothing changes. The tool
     * names live in the usage's pool, not the reader's. */
    assert_int_equal(apr_pool_create(&sub, pool), APR_SUCCESS);
    aib_usage_init(&u, pool);
    r = aib_usage_reader_create(sub, &aib_format_messages, &u, 1 << 20);
    aib_usage_reader_feed(r, MESSAGES_BODY, strlen(MESSAGES_BODY));
    aib_usage_reader_finish(r);
    aib_usage_reader_feed(r, MESSAGES_BODY, strlen(MESSAGES_BODY));
    aib_usage_reader_finish(r);
    aib_usage_reader_feed(r, "x", 1);
    apr_pool_destroy(sub);
    check_counts(&u, 1, 472, 89, 1536, 2048, 0);
    check_tools(&u, "get_weather", "get_time", NO_TOOLS);

    /* Empty feeds change nothing; a finish without a feed reads nothing. */
    aib_usage_init(&u, pool);
    r = aib_usage_reader_create(pool, &aib_format_chat, &u, 10);
    aib_usage_reader_feed(r, "", 0);
    aib_usage_reader_feed(r, NULL, 0);
    aib_usage_reader_finish(r);
    check_counts(&u, 0, 0, 0, 0, 0, 0);

    /* Failed early (too large), then the pool goes. */
    assert_int_equal(apr_pool_create(&sub, pool), APR_SUCCESS);
    r = aib_usage_reader_create(sub, &aib_format_chat, &u, 10);
    aib_usage_reader_feed(r, CHAT_BODY, 5);
    aib_usage_reader_feed(r, CHAT_BODY + 5, 50);
    apr_pool_destroy(sub);

    /* Many readers in one pool, finished in turn. */
    {
        int i;

        for (i = 0; i < 50; i++) {
            aib_usage_init(&u, pool);
            r = aib_usage_reader_create(pool, &aib_format_responses, &u, 1 << 20);
            aib_usage_reader_feed(r, RESPONSES_BODY, strlen(RESPONSES_BODY));
            if (i % 2)
                aib_usage_reader_finish(r);
        }
    }
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */
/* Streams: Chat Completions                                           */

static const ev_t CHAT_STREAM[] = {
    { NULL, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"
            "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\","
            "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,"
            "\"tool_calls\":[{\"index\":0,\"id\":\"call_DdmO9pD3xa9XTPNJ32zg2hcA\","
            "\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},"
            "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}" },
    { NULL, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"
            "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
            "[{\"index\":0,\"function\":{\"arguments\":\"{\\\"location\\\":\"}}]},"
            "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}" },
    { NULL, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"
            "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
            "[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},"
            "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}" },
    { NULL, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"
            "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
            "[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":"
            "{\"name\":\"get_time\",\"arguments\":\"\"}}]},"
            "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}" },
    { NULL, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"
            "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
            "[{\"index\":1,\"function\":{\"arguments\":\"{}\"}}]},"
            "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}" },
    { NULL, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"
            "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},"
            "\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}" },
    { NULL, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"
            "\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":81,"
            "\"completion_tokens\":33,\"total_tokens\":114,\"prompt_tokens_details\":"
            "{\"cached_tokens\":64,\"audio_tokens\":1},\"completion_tokens_details\":"
            "{\"reasoning_tokens\":21,\"audio_tokens\":2,\"accepted_prediction_tokens\":3,"
            "\"rejected_prediction_tokens\":4}}}" },
    { NULL, "[DONE]" },
};

static void test_chat_stream(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;
    size_t i;

    (void)state;
    aib_usage_init(&u, pool);
    run_events(&u, pool, &aib_format_chat, CHAT_STREAM, 6);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, "get_weather", "get_time", NO_TOOLS);
    run_events(&u, pool, &aib_format_chat, CHAT_STREAM + 6, 2);
    check_counts(&u, 1, 81, 33, 64, 0, 21);
    check_tools(&u, "get_weather", "get_time", NO_TOOLS);

    /* The same stream through another route's reading: nothing. */
    aib_usage_init(&u, pool);
    run_events(&u, pool, &aib_format_messages, CHAT_STREAM, 8);
    run_events(&u, pool, NULL, CHAT_STREAM, 8);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);

    /* A text stream, each chunk alone, and an event name does not matter. */
    aib_usage_init(&u, pool);
    for (i = 0; i < 3; i++)
        one_event(&u, pool, &aib_format_chat, NULL,
                  "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":"
                  "[{\"index\":0,\"delta\":{\"content\":\"The usage is fine\"},"
                  "\"finish_reason\":null}]}");
    one_event(&u, pool, &aib_format_chat, "message",
              "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6}}");
    check_counts(&u, 1, 5, 6, 0, 0, 0);
    check_tools(&u, NO_TOOLS);
    apr_pool_destroy(pool);
}

/* What a cheap look may skip and may not. */
static void test_chat_stream_variants(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;

    (void)state;
    aib_usage_init(&u, pool);
    /* Whitespace around the colon, pretty-printed. */
    one_event(&u, pool, &aib_format_chat, NULL,
              "{\n  \"choices\" : [ ],\n  \"usage\" :\n {\"prompt_tokens\" : 7 }\n}");
    check_counts(&u, 1, 7, 0, 0, 0, 0);
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_chat, NULL, "{\"choices\":[],\"usage\":{}}");
    check_counts(&u, 1, 0, 0, 0, 0, 0);
    one_event(&u, pool, &aib_format_chat, NULL,
              "{\"choices\":[],\"usage\":{ \"prompt_tokens\":3,\"completion_tokens\":4}}");
    check_counts(&u, 1, 3, 4, 0, 0, 0);

    /* Content that mentions "usage": null does not hide the real one. */
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_chat, NULL,
              "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"usage\\\": null\"}}],"
              "\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2}}");
    check_counts(&u, 1, 8, 2, 0, 0, 0);

    /* Usage on a chunk that still has choices (some compatible servers). */
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_chat, NULL,
              "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
              "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":9,"
              "\"prompt_tokens_details\":{\"cached_tokens\":2},"
              "\"completion_tokens_details\":{\"reasoning_tokens\":1}}}");
    check_counts(&u, 1, 4, 9, 2, 0, 1);

    /* A later usage overwrites. */
    one_event(&u, pool, &aib_format_chat, NULL,
              "{\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":90}}");
    check_counts(&u, 1, 40, 90, 2, 0, 1);

    /* Several calls in one chunk, several choices. */
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_chat, NULL,
              "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":["
              "{\"index\":0,\"function\":{\"name\":\"a\",\"arguments\":\"\"}},"
              "{\"index\":1,\"function\":{\"name\":\"b\"}}]}},"
              "{\"index\":1,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
              "{\"name\":\"c\"}}]}}]}");
    check_tools(&u, "a", "b", "c", NO_TOOLS);
    check_counts(&u, 0, 0, 0, 0, 0, 0);

    /* A blocking-style message in a stream is not a delta. */
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_chat, NULL,
              "{\"choices\":[{\"message\":{\"tool_calls\":[{\"function\":{\"name\":\"x\"}}]}}]}");
    check_tools(&u, NO_TOOLS);

    /* An error chunk, a usage null chunk, non-JSON: nothing. */
    one_event(&u, pool, &aib_format_chat, NULL,
              "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":null}}");
    one_event(&u, pool, &aib_format_chat, NULL, "{\"choices\":[],\"usage\":null}");
    one_event(&u, pool, &aib_format_chat, NULL, "{\"choices\":[],\"usage\":");
    one_event(&u, pool, &aib_format_chat, NULL, "{\"usage\":{\"prompt_tokens\":1}} x");
    one_event(&u, pool, &aib_format_chat, NULL, "");
    aib_usage_from_event(&u, pool, &aib_format_chat, NULL, NULL, 0);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);

    /* len is honoured: the data need not end where the string does. */
    {
        const char *d = "{\"usage\":{\"prompt_tokens\":6}}{\"usage\":{\"prompt_tokens\":7}}";

        aib_usage_from_event(&u, pool, &aib_format_chat, NULL, d, 29);
        check_counts(&u, 1, 6, 0, 0, 0, 0);
    }
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */
/* Streams: Responses                                                  */

static const ev_t RESPONSES_STREAM[] = {
    { "response.created",
      "{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\","
      "\"object\":\"response\",\"created_at\":1741290958,\"status\":\"in_progress\","
      "\"error\":null,\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":null}}" },
    { "response.in_progress",
      "{\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"id\":\"resp_1\","
      "\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}" },
    { "response.output_item.added",
      "{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,"
      "\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\","
      "\"role\":\"assistant\",\"content\":[]}}" },
    { "response.output_text.delta",
      "{\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\","
      "\"output_index\":0,\"content_index\":0,\"delta\":\"Checking\"}" },
    { "response.output_item.added",
      "{\"type\":\"response.output_item.added\",\"sequence_number\":4,\"output_index\":1,"
      "\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\","
      "\"name\":\"get_weather\",\"arguments\":\"\",\"status\":\"in_progress\"}}" },
    { "response.function_call_arguments.delta",
      "{\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":5,"
      "\"item_id\":\"fc_1\",\"output_index\":1,\"delta\":\"{\\\"location\\\":\\\"Paris\\\"}\"}" },
    { "response.output_item.done",
      "{\"type\":\"response.output_item.done\",\"sequence_number\":6,\"output_index\":1,"
      "\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\","
      "\"name\":\"get_weather\",\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\","
      "\"status\":\"completed\"}}" },
    { "response.output_item.added",
      "{\"type\":\"response.output_item.added\",\"sequence_number\":7,\"output_index\":2,"
      "\"item\":{\"type\":\"function_call\",\"id\":\"fc_2\",\"call_id\":\"call_2\","
      "\"name\":\"send_email\",\"arguments\":\"\",\"status\":\"in_progress\"}}" },
    { "response.output_item.added",
      "{\"type\":\"response.output_item.added\",\"sequence_number\":8,\"output_index\":3,"
      "\"item\":{\"type\":\"web_search_call\",\"id\":\"ws_1\",\"name\":\"not_a_function\","
      "\"status\":\"in_progress\"}}" },
    { "response.completed",
      "{\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_1\","
      "\"object\":\"response\",\"status\":\"completed\",\"output\":["
      "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":"
      "[{\"type\":\"output_text\",\"text\":\"Checking\",\"annotations\":[]}]},"
      "{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\","
      "\"name\":\"get_weather\",\"arguments\":\"{}\",\"status\":\"completed\"},"
      "{\"type\":\"function_call\",\"id\":\"fc_2\",\"call_id\":\"call_2\","
      "\"name\":\"send_email\",\"arguments\":\"{}\",\"status\":\"completed\"}],"
      "\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":11},"
      "\"output_tokens\":19,\"output_tokens_details\":{\"reasoning_tokens\":5},"
      "\"total_tokens\":56}}}" },
};

static void test_responses_stream(void **state)
{
    apr_pool_t *pool = new_pool();
    size_t n = sizeof(RESPONSES_STREAM) / sizeof(RESPONSES_STREAM[0]);
    ev_t unnamed[sizeof(RESPONSES_STREAM) / sizeof(RESPONSES_STREAM[0])];
    aib_usage_t u;
    size_t i;

    (void)state;
    aib_usage_init(&u, pool);
    run_events(&u, pool, &aib_format_responses, RESPONSES_STREAM, n - 1);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, "get_weather", "send_email", NO_TOOLS);
    run_events(&u, pool, &aib_format_responses, RESPONSES_STREAM + n - 1, 1);
    check_counts(&u, 1, 37, 19, 11, 0, 5);
    /* Names from output_item.added only: not counted again. */
    check_tools(&u, "get_weather", "send_email", NO_TOOLS);

    /* Without event names the data's type decides. */
    for (i = 0; i < n; i++) {
        unnamed[i].event = i % 2 ? "" : NULL;
        unnamed[i].data = RESPONSES_STREAM[i].data;
    }
    aib_usage_init(&u, pool);
    run_events(&u, pool, &aib_format_responses, unnamed, n);
    check_counts(&u, 1, 37, 19, 11, 0, 5);
    check_tools(&u, "get_weather", "send_email", NO_TOOLS);

    /* The event name decides over the data's type. */
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_responses, "response.output_text.delta",
              RESPONSES_STREAM[n - 1].data);
    one_event(&u, pool, &aib_format_responses, "response.output_item.done",
              RESPONSES_STREAM[4].data);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);

    /* Through the chat reading: nothing. */
    run_events(&u, pool, &aib_format_chat, RESPONSES_STREAM, n);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);
    apr_pool_destroy(pool);
}

static void test_responses_stream_failed(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;

    (void)state;
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_responses, "response.incomplete",
              "{\"type\":\"response.incomplete\",\"sequence_number\":30,\"response\":"
              "{\"id\":\"resp_2\",\"status\":\"incomplete\",\"incomplete_details\":"
              "{\"reason\":\"max_output_tokens\"},\"output\":[],\"usage\":{\"input_tokens\":100,"
              "\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":256,"
              "\"output_tokens_details\":{\"reasoning_tokens\":200},\"total_tokens\":356}}}");
    check_counts(&u, 1, 100, 256, 0, 0, 200);

    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_responses, "response.failed",
              "{\"type\":\"response.failed\",\"sequence_number\":3,\"response\":"
              "{\"id\":\"resp_3\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\","
              "\"message\":\"boom\"},\"output\":[],\"usage\":{\"input_tokens\":12,"
              "\"input_tokens_details\":{\"cached_tokens\":3},\"output_tokens\":1,"
              "\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":13}}}");
    check_counts(&u, 1, 12, 1, 3, 0, 0);

    /* Failed without usage, an error event, usage at the wrong level. */
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_responses, "response.failed",
              "{\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"usage\":null}}");
    one_event(&u, pool, &aib_format_responses, "error",
              "{\"type\":\"error\",\"code\":\"server_error\",\"message\":\"x\",\"param\":null,"
              "\"sequence_number\":1}");
    one_event(&u, pool, &aib_format_responses, "response.completed",
              "{\"type\":\"response.completed\",\"usage\":{\"input_tokens\":5},"
              "\"response\":\"nope\"}");
    one_event(&u, pool, &aib_format_responses, "response.output_item.added",
              "{\"type\":\"response.output_item.added\",\"item\":[{\"type\":\"function_call\","
              "\"name\":\"x\"}]}");
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */
/* Streams: Anthropic Messages                                         */

static const ev_t MESSAGES_STREAM[] = {
    { "message_start",
      "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\","
      "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],"
      "\"model\":\"claude-sonnet-4-20250514\",\"stop_reason\":null,\"stop_sequence\":null,"
      "\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":2048,"
      "\"cache_read_input_tokens\":1536,\"output_tokens\":2,\"service_tier\":\"standard\"}}}" },
    { "content_block_start",
      "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
      "\"text\":\"\"}}" },
    { "ping", "{\"type\": \"ping\"}" },
    { "content_block_delta",
      "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
      "\"text\":\"Okay, let me check.\"}}" },
    { "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}" },
    { "content_block_start",
      "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
      "\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}" },
    { "content_block_delta",
      "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
      "\"partial_json\":\"{\\\"location\\\": \\\"San Francisco, CA\\\"}\"}}" },
    { "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}" },
    { "content_block_start",
      "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\","
      "\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":{}}}" },
    { "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2}" },
    { "message_delta",
      "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
      "\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}" },
    { "message_stop", "{\"type\":\"message_stop\"}" },
};

static void test_messages_stream(void **state)
{
    apr_pool_t *pool = new_pool();
    size_t n = sizeof(MESSAGES_STREAM) / sizeof(MESSAGES_STREAM[0]);
    ev_t unnamed[sizeof(MESSAGES_STREAM) / sizeof(MESSAGES_STREAM[0])];
    aib_usage_t u;
    size_t i;

    (void)state;
    aib_usage_init(&u, pool);
    run_events(&u, pool, &aib_format_messages, MESSAGES_STREAM, 1);
    check_counts(&u, 1, 472, 2, 1536, 2048, 0);
    run_events(&u, pool, &aib_format_messages, MESSAGES_STREAM + 1, n - 1);
    check_counts(&u, 1, 472, 89, 1536, 2048, 0);
    check_tools(&u, "get_weather", "get_time", NO_TOOLS);

    for (i = 0; i < n; i++) {
        unnamed[i].event = NULL;
        unnamed[i].data = MESSAGES_STREAM[i].data;
    }
    aib_usage_init(&u, pool);
    run_events(&u, pool, &aib_format_messages, unnamed, n);
    check_counts(&u, 1, 472, 89, 1536, 2048, 0);
    check_tools(&u, "get_weather", "get_time", NO_TOOLS);

    /* Through the other readings: no counts, no names (message_delta's
     * top-level usage object is one for chat, with none of its fields). */
    aib_usage_init(&u, pool);
    run_events(&u, pool, &aib_format_responses, MESSAGES_STREAM, n);
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    run_events(&u, pool, &aib_format_chat, MESSAGES_STREAM, n);
    check_counts(&u, 1, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);
    apr_pool_destroy(pool);
}

static void test_messages_stream_delta(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;

    (void)state;
    /* message_delta with all counts overwrites all of them; null counts
     * leave message_start's. */
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_messages, "message_start", MESSAGES_STREAM[0].data);
    one_event(&u, pool, &aib_format_messages, "message_delta",
              "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
              "\"usage\":{\"input_tokens\":500,\"cache_creation_input_tokens\":null,"
              "\"cache_read_input_tokens\":1600,\"output_tokens\":10}}");
    check_counts(&u, 1, 500, 10, 1600, 2048, 0);
    one_event(&u, pool, &aib_format_messages, "message_delta",
              "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15,"
              "\"cache_creation_input_tokens\":7}}");
    check_counts(&u, 1, 500, 15, 1600, 7, 0);

    /* A stream that only has message_delta usage. */
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_messages, "message_delta",
              "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}");
    check_counts(&u, 1, 0, 3, 0, 0, 0);

    /* usage in the wrong place for each event. */
    aib_usage_init(&u, pool);
    one_event(&u, pool, &aib_format_messages, "message_start",
              "{\"type\":\"message_start\",\"usage\":{\"input_tokens\":1}}");
    one_event(&u, pool, &aib_format_messages, "message_delta",
              "{\"type\":\"message_delta\",\"message\":{\"usage\":{\"input_tokens\":1}}}");
    one_event(&u, pool, &aib_format_messages, "content_block_delta",
              "{\"type\":\"message_delta\",\"usage\":{\"input_tokens\":1}}");
    one_event(&u, pool, &aib_format_messages, "content_block_start",
              "{\"type\":\"content_block_start\",\"content_block\":{\"type\":\"text\","
              "\"name\":\"x\"}}");
    one_event(&u, pool, &aib_format_messages, "content_block_start",
              "{\"type\":\"content_block_start\",\"content_block\":[{\"type\":\"tool_use\","
              "\"name\":\"x\"}]}");
    one_event(&u, pool, &aib_format_messages, "error",
              "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
              "\"message\":\"Overloaded\"}}");
    check_counts(&u, 0, 0, 0, 0, 0, 0);
    check_tools(&u, NO_TOOLS);
    apr_pool_destroy(pool);
}

/* Tool names outlive the pool given with the event. */
static void test_event_pool_lifetime(void **state)
{
    apr_pool_t *pool = new_pool(), *sub;
    aib_usage_t u;

    (void)state;
    aib_usage_init(&u, pool);
    assert_int_equal(apr_pool_create(&sub, pool), APR_SUCCESS);
    one_event(&u, sub, &aib_format_messages, "content_block_start", MESSAGES_STREAM[5].data);
    apr_pool_destroy(sub);
    assert_int_equal(apr_pool_create(&sub, pool), APR_SUCCESS);
    /* Reuse the memory the first subpool had. */
    assert_non_null(memset(apr_palloc(sub, 4096), 'X', 4096));
    check_tools(&u, "get_weather", NO_TOOLS);
    apr_pool_destroy(sub);
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */
/* Garbage: nothing may crash or leak                                  */

static void garbage_everywhere(apr_pool_t *pool, const char *data, size_t len)
{
    static const aib_format_t *const kinds[] = {
        &aib_format_chat, &aib_format_responses, &aib_format_messages, NULL
    };
    static const char *const events[] = {
        NULL, "message_start", "message_delta", "content_block_start",
        "response.completed", "response.output_item.added", "response.failed"
    };
    aib_usage_t u;
    apr_size_t out_len;
    int injected;
    size_t k, e;

    for (k = 0; k < 4; k++) {
        read_body(&u, pool, kinds[k], data, len, len + 1, 0);
        read_body(&u, pool, kinds[k], data, len, len + 1, 1 + len % 7);
        for (e = 0; e < sizeof(events) / sizeof(events[0]); e++)
            aib_usage_from_event(&u, pool, kinds[k], events[e], data, len);
    }
    {
        char *out = malloc(len ? len : 1);

        assert_non_null(out);
        if (aib_format_chat.stream_usage_strip(data, len, out, &out_len))
            assert_true(out_len <= len);
        free(out);
    }
    aib_usage_request(pool, &aib_format_chat, data, len, &out_len, &injected);
}

static void test_garbage(void **state)
{
    static const char *const fixed[] = {
        "{", "}", "[", "\"", "{\"", "{\"usage\"", "{\"usage\":", "{\"usage\":{",
        "{\"usage\":{\"prompt_tokens\":", "{\"usage\":{\"prompt_tokens\":1",
        "{\"usage\":nul", "{\"choices\":[", "{\"choices\":[],\"usage\":null",
        "{\"usage\":null,}", "{,\"usage\":null}", "{\"usage\":null,,\"a\":1}",
        "{\"a\":\"\\", "{\"a\":\"\\\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\\ud800\"}",
        "{\"usage\"::null}", "{\"usage\" null}", "{\"usage\":null \"a\":1}",
        "{\"stream_options\":", "{\"stream_options\":null}", "{\"stream_options\":[]}",
        "{}", "{ }", "[]", "\"\"", "0", "-", "1e999999", "-0", "nan", "NaN", "Infinity",
        "{\"usage\":{\"prompt_tokens\":1e}}", "{\"usage\":{\"prompt_tokens\":--1}}",
        "{'usage':{'prompt_tokens':1}}", "{usage:{prompt_tokens:1}}",
        "/* c */ {\"usage\":{}}", "{\"usage\":{}} // c",
        "\xff\xfe\xfd", "{\"\xc3\x28\":1}", "data: {\"usage\":null}", "[DONE]",
    };
    apr_pool_t *pool = new_pool();
    static const char *const bodies[] = { CHAT_BODY, RESPONSES_BODY, MESSAGES_BODY };
    char buf[2048];
    size_t i, j, len;

    (void)state;
    for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        garbage_everywhere(pool, fixed[i], strlen(fixed[i]));

    /* Embedded NULs. */
    garbage_everywhere(pool, "{\"usage\":\0{\"prompt_tokens\":1}}", 30);
    garbage_everywhere(pool, "{\"a\":\"x\0y\",\"usage\":null}", 24);

    /* Random bytes, and random bytes from a JSON-ish alphabet. */
    for (i = 0; i < 2000; i++) {
        static const char alpha[] = "{}[]\":,\\ nul0123456789-.eEtrufas_gpkdio";
        apr_pool_t *sub;

        assert_int_equal(apr_pool_create(&sub, pool), APR_SUCCESS);
        len = rng() % 200;
        for (j = 0; j < len; j++)
            buf[j] = i % 2 ? (char)(rng() & 0xff) : alpha[rng() % (sizeof(alpha) - 1)];
        garbage_everywhere(sub, buf, len);
        apr_pool_destroy(sub);
    }

    /* Realistic bodies and events, mutated and cut. */
    for (i = 0; i < 3000; i++) {
        const char *src;
        apr_pool_t *sub;
        size_t flips;

        if (i % 3 == 0)
            src = bodies[rng() % 3];
        else if (i % 3 == 1)
            src = CHAT_STREAM[rng() % 8].data;
        else
            src = i % 2 ? MESSAGES_STREAM[rng() % 12].data : RESPONSES_STREAM[rng() % 10].data;
        len = strlen(src);
        assert_true(len < sizeof(buf));
        memcpy(buf, src, len);
        for (flips = 1 + rng() % 4; flips; flips--) {
            size_t at = rng() % len;

            switch (rng() % 4) {
            case 0: buf[at] = (char)(rng() & 0xff); break;
            case 1: buf[at] = "{}[]\",:"[rng() % 7]; break;
            case 2: buf[at] = '0' + rng() % 10; break;
            default: len = at + 1; break;
            }
        }
        assert_int_equal(apr_pool_create(&sub, pool), APR_SUCCESS);
        garbage_everywhere(sub, buf, len);
        apr_pool_destroy(sub);
    }
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */
/* inject                                                              */

static const char *do_inject(apr_pool_t *pool, const char *body, int *injected)
{
    apr_size_t out_len = 12345;
    const char *out;

    *injected = -1;
    out = aib_usage_request(pool, &aib_format_chat, body, strlen(body), &out_len, injected);
    assert_non_null(out);
    assert_int_equal(out_len, strlen(out));
    return out;
}

static void test_inject_absent(void **state)
{
    apr_pool_t *pool = new_pool();
    const char *body, *out;
    int injected;

    (void)state;
    body = "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":[{\"role\":\"user\","
           "\"content\":\"Say \\\"hi\\\" \\u00e9 / {\\\"stream_options\\\":1}\"}],"
           "\"temperature\":0.70000}";
    out = do_inject(pool, body, &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, apr_pstrcat(pool, "{\"stream_options\":{\"include_usage\":true},",
                                         body + 1, NULL));

    /* Empty objects: no trailing comma. */
    out = do_inject(pool, "{}", &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"stream_options\":{\"include_usage\":true}}");
    out = do_inject(pool, "{ \n }", &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"stream_options\":{\"include_usage\":true} \n }");

    /* Leading and trailing whitespace kept. */
    out = do_inject(pool, " \r\n\t{ \"stream\" : true }\n", &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out,
                        " \r\n\t{\"stream_options\":{\"include_usage\":true}, \"stream\" : true }\n");

    /* stream_options only nested elsewhere: still absent at the top. */
    out = do_inject(pool, "{\"metadata\":{\"stream_options\":{\"include_usage\":true}}}",
                    &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"stream_options\":{\"include_usage\":true},"
                             "\"metadata\":{\"stream_options\":{\"include_usage\":true}}}");

    /* The length is honoured, and the output NUL-terminated. */
    {
        apr_size_t out_len;
        const char *b = "{\"a\":1}garbage";

        out = aib_usage_request(pool, &aib_format_chat, b, 7, &out_len, &injected);
        assert_int_equal(injected, 1);
        assert_int_equal(out_len, strlen("{\"stream_options\":{\"include_usage\":true},\"a\":1}"));
        assert_string_equal(out, "{\"stream_options\":{\"include_usage\":true},\"a\":1}");
    }
    apr_pool_destroy(pool);
}

static void test_inject_present(void **state)
{
    apr_pool_t *pool = new_pool();
    const char *body, *out;
    int injected;

    (void)state;
    /* Already asked: the very same bytes. */
    body = "{\"model\":\"gpt-4o\",\"stream\":true,"
           "\"stream_options\": {\"include_usage\" : true},\"messages\":[]}";
    out = do_inject(pool, body, &injected);
    assert_int_equal(injected, 0);
    assert_ptr_equal(out, body);

    body = "{\"stream_options\":{\"include_obfuscation\":false,\"include_usage\":true}}";
    out = do_inject(pool, body, &injected);
    assert_int_equal(injected, 0);
    assert_ptr_equal(out, body);

    /* include_usage false: set true, other members kept. */
    out = do_inject(pool, "{\"model\":\"m\",\"stream_options\":{\"include_usage\":false,"
                          "\"include_obfuscation\":false},\"n\":1}", &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"model\":\"m\",\"stream_options\":{\"include_usage\":true,"
                             "\"include_obfuscation\":false},\"n\":1}");

    /* Without include_usage. */
    out = do_inject(pool, "{\"stream_options\":{\"include_obfuscation\":true},\"stream\":true}",
                    &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"stream_options\":{\"include_obfuscation\":true,"
                             "\"include_usage\":true},\"stream\":true}");

    out = do_inject(pool, "{\"stream_options\":{}}", &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"stream_options\":{\"include_usage\":true}}");

    /* include_usage not a boolean true, stream_options not an object. */
    out = do_inject(pool, "{\"stream_options\":{\"include_usage\":\"true\"}}", &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"stream_options\":{\"include_usage\":true}}");
    out = do_inject(pool, "{\"stream_options\":{\"include_usage\":1}}", &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"stream_options\":{\"include_usage\":true}}");
    out = do_inject(pool, "{\"a\":[1,2],\"stream_options\":null}", &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"a\":[1,2],\"stream_options\":{\"include_usage\":true}}");
    out = do_inject(pool, "{\"stream_options\":\"x\"}", &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"stream_options\":{\"include_usage\":true}}");

    /* Re-serialising keeps slashes and numbers as written. */
    out = do_inject(pool, " {\"url\":\"http://x/y\",\"t\":0.70000,\"stream_options\":{}} ",
                    &injected);
    assert_int_equal(injected, 1);
    assert_string_equal(out, "{\"url\":\"http://x/y\",\"t\":0.70000,"
                             "\"stream_options\":{\"include_usage\":true}}");
    apr_pool_destroy(pool);
}

/* Not an object: left alone (the caller validates, but never crash). */
static void test_inject_not_object(void **state)
{
    static const char *const bodies[] = {
        "", "  ", "[]", "[{}]", "\"{}\"", "1", "null", "{", "{\"a\":1", "{\"a\":1}x",
        "{\"a\":1}{}", "not json",
    };
    apr_pool_t *pool = new_pool();
    apr_size_t out_len;
    const char *out;
    int injected;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        injected = -1;
        out = aib_usage_request(pool, &aib_format_chat, bodies[i], strlen(bodies[i]), &out_len, &injected);
        assert_ptr_equal(out, bodies[i]);
        assert_int_equal(out_len, strlen(bodies[i]));
        assert_int_equal(injected, 0);
    }
    out = aib_usage_request(pool, &aib_format_chat, NULL, 0, &out_len, &injected);
    assert_null(out);
    assert_int_equal(out_len, 0);
    assert_int_equal(injected, 0);
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */
/* strip                                                               */

/* Strips data (a C string) into a fresh buffer of exactly strlen bytes
 * (so ASan or valgrind see a write past it), and again in place; both
 * must agree. Returns 0 (drop) or 1 with *out (malloc'd, NUL added here). */
static int do_strip(const char *data, char **out, apr_size_t *out_len)
{
    size_t len = strlen(data);
    char *buf = malloc(len ? len : 1), *inplace = malloc(len + 1);
    apr_size_t len2 = 777;
    int rc, rc2;

    assert_non_null(buf);
    assert_non_null(inplace);
    memcpy(inplace, data, len + 1);
    *out_len = 12345;
    rc = aib_format_chat.stream_usage_strip(data, len, buf, out_len);
    rc2 = aib_format_chat.stream_usage_strip(inplace, len, inplace, &len2);
    assert_int_equal(rc, rc2);
    if (rc) {
        assert_true(*out_len <= len);
        assert_int_equal(*out_len, len2);
        assert_memory_equal(buf, inplace, len2);
        *out = malloc(*out_len + 1);
        assert_non_null(*out);
        memcpy(*out, buf, *out_len);
        (*out)[*out_len] = '\0';
    }
    else {
        *out = NULL;
    }
    free(buf);
    free(inplace);
    return rc;
}

static void check_strip(const char *data, const char *want)
{
    apr_size_t out_len;
    char *out;

    assert_int_equal(do_strip(data, &out, &out_len), 1);
    assert_int_equal(out_len, strlen(want));
    assert_string_equal(out, want);
    free(out);
}

static void check_unchanged(const char *data)
{
    check_strip(data, data);
}

static void check_dropped(const char *data)
{
    apr_size_t out_len;
    char *out;

    assert_int_equal(do_strip(data, &out, &out_len), 0);
}

static void test_strip_usage_null(void **state)
{
    (void)state;
    /* As OpenAI sends it: last member. */
    check_strip("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},"
                "\"finish_reason\":null}],\"usage\":null}",
                "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},"
                "\"finish_reason\":null}]}");
    /* First, middle, alone. */
    check_strip("{\"usage\":null,\"choices\":[]}", "{\"choices\":[]}");
    check_strip("{\"a\":1,\"usage\":null,\"b\":2}", "{\"a\":1,\"b\":2}");
    check_strip("{\"usage\":null}", "{}");
    /* Whitespace variants. */
    check_strip("{\"a\": 1, \"usage\": null}", "{\"a\": 1}");
    check_strip("{ \"usage\" : null , \"a\": 1 }", "{  \"a\": 1 }");
    check_strip("{\n  \"a\": 1,\n  \"usage\": null\n}", "{\n  \"a\": 1\n}");
    check_strip(" { \"usage\":null } \n", " {  } \n");
    /* The word in values and nested objects does not count. */
    check_strip("{\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":null,\","
                "\"usage\":null}}],\"x\":{\"usage\":null},\"usage\":null}",
                "{\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":null,\","
                "\"usage\":null}}],\"x\":{\"usage\":null}}");
    /* Strings with escapes and brackets before it. */
    check_strip("{\"a\":\"}]\\\\\",\"b\":[\"{\",{\"c\":\"]\"}],\"usage\":null}",
                "{\"a\":\"}]\\\\\",\"b\":[\"{\",{\"c\":\"]\"}]}");
}

static void test_strip_drop(void **state)
{
    (void)state;
    check_dropped("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
                  "\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],"
                  "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,"
                  "\"total_tokens\":11}}");
    check_dropped("{\"usage\":{},\"choices\":[ \n ]}");
    check_dropped(" {\"choices\" : [] , \"usage\" : {\"a\":[1]} } ");
}

static void test_strip_unchanged(void **state)
{
    static const char *const same[] = {
        "[DONE]", " [DONE] ", "",
        /* No usage member at all. */
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}",
        "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\","
        "\"param\":null,\"code\":null}}",
        "{}", "{ }",
        /* Usage with choices: not the usage-only chunk. */
        "{\"choices\":[{\"index\":0,\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}",
        "{\"usage\":{\"prompt_tokens\":1}}",
        "{\"choices\":null,\"usage\":{\"prompt_tokens\":1}}",
        "{\"choices\":\"[]\",\"usage\":{\"prompt_tokens\":1}}",
        "{\"choices\":[null],\"usage\":{\"prompt_tokens\":1}}",
        /* usage not null (but not an object) with choices. */
        "{\"choices\":[{}],\"usage\":nullx}",
        "{\"choices\":[{}],\"usage\":\"null\"}",
        /* Only nested. */
        "{\"x\":{\"usage\":null}}",
        /* Broken or not an object. */
        "{\"usage\":null", "{\"usage\":null,}", "{\"usage\":null}x", "{\"usage\":null}}",
        "[{\"usage\":null}]", "{\"usage\":null \"a\":1}", "{\"usage\" null}",
        "{\"usage\":}", "{\"a\":\"\\\"}", "{\"a\":1,,\"usage\":null}",
        "{\"usage\":null,\"usage\":null}", "{\"usage\":null,\"choices\":[],\"usage\":{}}",
        /* Escaped key: not found textually, left alone. */
        "{\"us\\u0061ge\":null}",
        "{usage:null}", "null",
    };
    apr_size_t out_len = 9;
    char out[32];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(same) / sizeof(same[0]); i++)
        check_unchanged(same[i]);
    assert_int_equal(aib_format_chat.stream_usage_strip(NULL, 0, out, &out_len), 1);
    assert_int_equal(out_len, 0);

    /* The length is honoured: nothing past it is read or written. */
    {
        const char *d = "{\"a\":1,\"usage\":null}, more";

        memset(out, '#', sizeof(out));
        assert_int_equal(aib_format_chat.stream_usage_strip(d, 20, out, &out_len), 1);
        assert_int_equal(out_len, 7);
        assert_memory_equal(out, "{\"a\":1}", 7);
        for (i = 20; i < sizeof(out); i++)
            assert_int_equal(out[i], '#');
        memset(out, '#', sizeof(out));
        assert_int_equal(aib_format_chat.stream_usage_strip(d, 14, out, &out_len), 1);
        assert_int_equal(out_len, 14);
        assert_memory_equal(out, d, 14);
        assert_int_equal(out[14], '#');
    }
}

/* Injected, then streamed and stripped: the client sees the chunks it
 * would have without include_usage, and the usage is still read. */
static void test_inject_strip_roundtrip(void **state)
{
    apr_pool_t *pool = new_pool();
    aib_usage_t u;
    apr_size_t out_len;
    char *out;
    int injected, dropped = 0;
    size_t i;

    (void)state;
    assert_non_null(do_inject(pool, "{\"model\":\"gpt-4o-mini\",\"stream\":true,"
                                    "\"messages\":[]}", &injected));
    assert_int_equal(injected, 1);
    aib_usage_init(&u, pool);
    for (i = 0; i < 8; i++) {
        const char *d = CHAT_STREAM[i].data;

        aib_usage_from_event(&u, pool, &aib_format_chat, NULL, d, strlen(d));
        if (!do_strip(d, &out, &out_len)) {
            dropped++;
            assert_int_equal(i, 6);
            continue;
        }
        assert_null(strstr(out, "usage"));
        if (i < 7) {
            assert_int_equal(out_len, strlen(d) - strlen(",\"usage\":null"));
            assert_memory_equal(out, d, out_len - 1);
            assert_int_equal(out[out_len - 1], '}');
        }
        else {
            assert_string_equal(out, "[DONE]");
        }
        free(out);
    }
    assert_int_equal(dropped, 1);
    check_counts(&u, 1, 81, 33, 64, 0, 21);
    check_tools(&u, "get_weather", "get_time", NO_TOOLS);
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind),
        cmocka_unit_test(test_formats_complete),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_chat_blocking),
        cmocka_unit_test(test_responses_blocking),
        cmocka_unit_test(test_messages_blocking),
        cmocka_unit_test(test_blocking_wrong_kind),
        cmocka_unit_test(test_blocking_missing_fields),
        cmocka_unit_test(test_blocking_bad_values),
        cmocka_unit_test(test_blocking_bad_tools),
        cmocka_unit_test(test_reader_max_bytes),
        cmocka_unit_test(test_reader_truncated),
        cmocka_unit_test(test_reader_not_json),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_reader_cut_anywhere),
        cmocka_unit_test(test_reader_depth),
        cmocka_unit_test(test_reader_lifecycle),
        cmocka_unit_test(test_chat_stream),
        cmocka_unit_test(test_chat_stream_variants),
        cmocka_unit_test(test_responses_stream),
        cmocka_unit_test(test_responses_stream_failed),
        cmocka_unit_test(test_messages_stream),
        cmocka_unit_test(test_messages_stream_delta),
        cmocka_unit_test(test_event_pool_lifetime),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_inject_absent),
        cmocka_unit_test(test_inject_present),
        cmocka_unit_test(test_inject_not_object),
        cmocka_unit_test(test_strip_usage_null),
        cmocka_unit_test(test_strip_drop),
        cmocka_unit_test(test_strip_unchanged),
        cmocka_unit_test(test_inject_strip_roundtrip),
    };

    return AIB_RUN_TESTS(tests);
}
