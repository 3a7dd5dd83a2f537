/* libFuzzer target: the client's request body, as the handler treats it
 * (src/request.c, then src/format_chat.c's usage ask, through aib_usage_request).
 *
 * The input is a request body, in a buffer of exactly its length (no NUL
 * after it). aib_inspect_request must accept or refuse it without reading
 * past it; a refusal leaves *stream 0 and *model alone. An accepted body
 * then goes through aib_usage_request as a chat stream's would: the result
 * must itself be accepted with the same stream and model, carry
 * stream_options.include_usage true, and be the body itself exactly when
 * nothing was injected. */
#include <json.h>

#include "fuzz.h"
#include "request.h"
#include "format.h"
#include "usage.h"

#define UNSET "(unset)"

/* Whether body[0, len) is an object whose stream_options.include_usage
 * is true. */
static int includes_usage(const char *body, size_t len)
{
    json_tokener *tok = json_tokener_new_ex(AIB_REQUEST_MAX_DEPTH);
    json_object *root, *so, *iu;
    int yes;

    FUZZ_CHECK(tok != NULL);
    root = json_tokener_parse_ex(tok, body, (int)len);
    yes = root && json_object_object_get_ex(root, "stream_options", &so)
          && json_object_is_type(so, json_type_object)
          && json_object_object_get_ex(so, "include_usage", &iu)
          && json_object_is_type(iu, json_type_boolean) && json_object_get_boolean(iu);
    json_object_put(root);
    json_tokener_free(tok);
    return yes;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool = fuzz_pool();
    char *body = fuzz_dup(data, size), *copy;
    const char *model = UNSET, *model2 = UNSET, *err, *out;
    int stream = -1, stream2 = -1, injected = -1;
    apr_size_t out_len;

    err = aib_inspect_request(pool, size ? body : NULL, size, &stream, &model);
    if (err) {
        FUZZ_CHECK(*err);
        FUZZ_CHECK(stream == 0);
        FUZZ_CHECK(!strcmp(model, UNSET));
        goto done;
    }
    FUZZ_CHECK(size > 0);
    FUZZ_CHECK(stream == 0 || stream == 1);

    out = aib_usage_request(pool, &aib_format_chat, body, size, &out_len, &injected);
    FUZZ_CHECK(injected == 0 || injected == 1);
    if (!injected) {
        FUZZ_CHECK(out == body && out_len == size);
        FUZZ_CHECK(includes_usage(body, size));
        goto done;
    }
    /* The injected body, again in a buffer of exactly its length. */
    copy = fuzz_dup((const uint8_t *)out, out_len);
    err = aib_inspect_request(pool, copy, out_len, &stream2, &model2);
    if (err)
        fprintf(stderr, "injected body refused: %s\n%.*s\n", err, (int)out_len, out);
    FUZZ_CHECK(err == NULL);
    FUZZ_CHECK(stream2 == stream);
    FUZZ_CHECK(!strcmp(model2, model));
    FUZZ_CHECK(includes_usage(copy, out_len));
    free(copy);
done:
    free(body);
    apr_pool_destroy(pool);
    return 0;
}
