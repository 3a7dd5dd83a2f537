/* The OpenAI shape, for every provider that speaks it: its routes, error
 * bodies, fault classification, rate-limit reset headers and formats.
 * provider_openai.c defines them; another provider (Azure OpenAI) reuses
 * them where it differs only in URLs and credentials. */
#ifndef AIB_PROVIDER_OPENAI_H
#define AIB_PROVIDER_OPENAI_H

#include "provider.h"

void aib_openai_route(const char *method, const char *path, aib_route_t *out);
const char *aib_openai_error_body(apr_pool_t *p, aib_error_kind_e kind, const char *message);
const char *aib_openai_error_code(aib_error_kind_e kind);
aib_fault_e aib_openai_classify(int status, const char *body, apr_size_t len);
aib_fault_e aib_openai_stream_fault(const char *event, const char *data, apr_size_t len);

/* x-ratelimit-reset-requests / -tokens: durations from now. */
extern const aib_reset_headers_t aib_openai_resets;

/* Chat Completions and Responses, NULL-terminated. */
extern const aib_format_t *const aib_openai_formats[];

#endif
