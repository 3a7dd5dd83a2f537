#include <apr_general.h>

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
