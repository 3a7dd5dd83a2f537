/* The client's request body, as much as the bridge needs to know of it.
 * Pure logic: json-c and APR only. */
#ifndef AIB_REQUEST_H
#define AIB_REQUEST_H

#include <apr_pools.h>

#include "json_helpers.h"

#define AIB_REQUEST_MAX_DEPTH AIB_JSON_MAX_DEPTH

/* Checks that body[0, len) is one JSON object (whitespace around it
 * allowed) nesting at most AIB_REQUEST_MAX_DEPTH levels, whose `stream` is
 * absent or a boolean. Returns NULL when it is, with *stream set to that
 * boolean (0 when absent) and *model to a copy in p of the `model` string
 * (left as it was when there is none); else the message that says why not
 * (*stream is then 0). body needs no NUL terminator and may be NULL when
 * len is 0. */
const char *aib_inspect_request(apr_pool_t *p, const char *body, apr_size_t len,
                                int *stream, const char **model);

#endif
