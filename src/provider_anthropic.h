/* The Anthropic shape, for every provider whose clients speak it: its
 * routes, where a client's own key comes, its error bodies and types.
 * provider_anthropic.c defines them; Amazon Bedrock reuses them where it
 * differs only in URLs, credentials and framing. */
#ifndef AIB_PROVIDER_ANTHROPIC_H
#define AIB_PROVIDER_ANTHROPIC_H

#include "provider.h"

void aib_anthropic_route(const char *method, const char *path, aib_route_t *out);
const char *aib_anthropic_client_key(const apr_table_t *headers);
const char *aib_anthropic_error_code(aib_error_kind_e kind);
const char *aib_anthropic_error_body(apr_pool_t *p, aib_error_kind_e kind,
                                     const char *message);

#endif
