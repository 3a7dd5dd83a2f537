#include <stdlib.h>
#include <apr_general.h>
#include <apr_tables.h>

#include "unit.h"

apr_pool_t *pool;

int aib_clear_pool(void **state)
{
    (void)state;
    apr_pool_clear(pool);
    return 0;
}

int aib_group_setup(void **state)
{
    (void)state;
    if (apr_initialize() != APR_SUCCESS)
        return -1;
    return apr_pool_create(&pool, NULL) == APR_SUCCESS ? 0 : -1;
}

int aib_group_teardown(void **state)
{
    (void)state;
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}

apr_table_t *aib_table_copy_deep(const apr_table_t *t)
{
    const apr_array_header_t *arr = apr_table_elts(t);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    apr_table_t *out = apr_table_make(pool, arr->nelts + 1);
    int i;

    for (i = 0; i < arr->nelts; i++)
        apr_table_add(out, e[i].key, e[i].val);
    return out;
}

void aib_unit_filter(void)
{
    const char *pattern = getenv("AIB_UNIT_CASE");

    if (pattern && *pattern)
        cmocka_set_test_filter(pattern);
}
