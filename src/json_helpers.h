/* The JSON helpers every part of the module shares: parsing with a deep
 * tokener, typed member access, serialising, quoting. Named json_helpers,
 * not json, so that it never shadows json-c's own <json.h>.
 * Pure logic: json-c and APR only. */
#ifndef AIB_JSON_HELPERS_H
#define AIB_JSON_HELPERS_H

#include <stdint.h>
#include <apr_pools.h>
#include <json.h>

/* Tool schemas nest deeply; json-c's default of 32 is far too shallow. */
#define AIB_JSON_MAX_DEPTH 512

/* How the module writes JSON: compact, '/' not escaped. */
#define AIB_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Whether s[0, n) is JSON whitespace only. */
int aib_json_only_space(const char *s, apr_size_t n);

/* json-c tokeners of AIB_JSON_MAX_DEPTH levels, one kept per thread for
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

/* The string member `key` of obj, or NULL (obj's own storage). */
const char *aib_json_string(json_object *obj, const char *key);

/* A copy in p of the string member `key` of obj, or NULL. */
const char *aib_json_strdup(apr_pool_t *p, json_object *obj, const char *key);

/* Sets obj's member key to the string value ("" for NULL). */
void aib_json_set_string(json_object *obj, const char *key, const char *value);

/* Whether s is a JSON string equal to value. */
int aib_json_string_is(json_object *s, const char *value);

/* Whether two C strings are equal, a NULL `a` being equal to nothing. */
int aib_str_is(const char *a, const char *b);

/* Whether the JSON object `body` has a string <object>.<member> (or
 * <member> at the top level when object is NULL) equal to `value`. */
int aib_json_member_is(const char *body, apr_size_t len, const char *object,
                       const char *member, const char *value);

/* Sets obj's integer member key to n; 1 if that changed it. A member obj
 * does not have is only added when `add`. NULL obj: nothing. */
int aib_json_set_int(json_object *obj, const char *key, int64_t n, int add);

/* obj as AIB_JSON_FLAGS text, copied into p; NULL when json-c fails. */
const char *aib_json_text(apr_pool_t *p, json_object *obj);

/* `text` as a JSON string literal, quotes included. */
const char *aib_json_quote(apr_pool_t *p, const char *text);

#endif
