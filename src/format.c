/* The table of wire formats and what they share (see format.h). */
#include <string.h>

#include "format.h"
#include "json_helpers.h"

const aib_format_t *const aib_formats[AIB_FORMAT_COUNT] = {
    &aib_format_chat, &aib_format_responses, &aib_format_messages
};

const aib_format_t *aib_format_find(const char *name)
{
    int i;

    for (i = 0; name && i < AIB_FORMAT_COUNT; i++)
        if (!strcmp(aib_formats[i]->name, name))
            return aib_formats[i];
    return NULL;
}

int64_t aib_usage_count(const aib_usage_t *u, aib_count_e count)
{
    switch (count) {
    case AIB_COUNT_INPUT:       return u->input;
    case AIB_COUNT_OUTPUT:      return u->output;
    case AIB_COUNT_TOTAL:       return aib_count_add(u->input, u->output);
    case AIB_COUNT_CACHE_READ:  return u->cache_read;
    case AIB_COUNT_CACHE_WRITE: return u->cache_write;
    default:                    return u->reasoning;
    }
}

int aib_format_usage_write(const aib_format_t *f, json_object *usage, const aib_usage_t *u,
                           unsigned add)
{
    const aib_usage_field_t *field;
    int changed = 0;

    for (field = f->usage_fields; field->member; field++) {
        int64_t n = aib_usage_count(u, field->count);
        int adds = (add & AIB_COUNT_BIT(field->count)) != 0;
        json_object *to = usage;

        if (field->object) {
            to = aib_json_member(usage, field->object, json_type_object);
            if (!to && adds && n) {
                to = json_object_new_object();
                json_object_object_add(usage, field->object, to);
            }
        }
        changed |= aib_json_set_int(to, field->member, n, adds);
    }
    return changed;
}

int aib_format_spoken_by(const aib_format_t *f, const aib_provider_ops_t *provider)
{
    const aib_format_t *const *spoken;

    for (spoken = provider->formats; *spoken; spoken++)
        if (*spoken == f)
            return 1;
    return 0;
}

int aib_route_stream_complete(const aib_route_t *route, const aib_provider_ops_t *provider,
                              const char *event, const char *data)
{
    const aib_format_t *const *spoken;

    if (route->format)
        return route->format->stream_complete(event, data);
    for (spoken = provider->formats; *spoken; spoken++)
        if ((*spoken)->stream_complete(event, data))
            return 1;
    return 0;
}

const char *aib_route_stream_error(apr_pool_t *p, const aib_route_t *route,
                                   const aib_provider_ops_t *provider, aib_error_kind_e kind,
                                   const char *message, int64_t sequence)
{
    const aib_format_t *f = route->format ? route->format : provider->formats[0];

    return f->stream_error(p, provider, kind, message, sequence);
}
