/* The client's request body, as much as the bridge needs to know of it.
 * Pure logic: json-c and APR only. */
#ifndef AIB_REQUEST_H
#define AIB_REQUEST_H

#include <apr_pools.h>
#include <json.h>

/* Tool schemas nest deeply; json-c's default of 32 is far too shallow. */
#define AIB_REQUEST_MAX_DEPTH 512

/* Checks that body[0, len) is one JSON object (whitespace around it
 * allowed) nesting at most AIB_REQUEST_MAX_DEPTH levels, whose `stream` is
 * absent or a boolean. Returns NULL when it is, with *stream set to that
 * boolean (0 when absent) and *model to a copy in p of the `model` string
 * (left as it was when there is none); else the message that says why not
 * (*stream is then 0). body needs no NUL terminator and may be NULL when
 * len is 0. */
const char *aib_inspect_request(apr_pool_t *p, const char *body, apr_size_t len,
                                int *stream, const char **model);

/* json-c tokeners of AIB_REQUEST_MAX_DEPTH levels, one kept per thread for
 * the next parse: json_tokener_new_ex allocates and zeroes a record for
 * every level (16 KB), which showed in every request's profile. take()
 * gives one with no flags set; give() takes it back (NULL is fine) with the
 * number of bytes it was fed: one fed more than a little (its buffer may
 * have grown as large), or whose last parse did not succeed, is freed, not
 * kept. */
struct json_tokener *aib_json_tokener_take(void);
void aib_json_tokener_give(struct json_tokener *tok, apr_size_t fed);

/* The JSON object in data[0, len) (whitespace around it allowed), parsed
 * with the tokeners above, or NULL. The caller puts the result. */
json_object *aib_json_parse_object(const char *data, apr_size_t len);

/* The member `key` of obj if obj is an object and the member has `type`,
 * else NULL. */
json_object *aib_json_member(json_object *obj, const char *key, json_type type);

#endif
