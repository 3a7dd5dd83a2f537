/* Pools for the fuzz targets, and the exact-size apr_palloc the core
 * sources are compiled against (see fuzz.h). Built without the
 * -Dapr_palloc redirection. */
#include <apr_general.h>

#include "fuzz.h"

void *aib_fuzz_palloc(apr_pool_t *pool, apr_size_t size);

static apr_status_t free_block(void *block)
{
    free(block);
    return APR_SUCCESS;
}

void *aib_fuzz_palloc(apr_pool_t *pool, apr_size_t size)
{
    void *block = malloc(size); /* 0 bytes stay 0: any access is caught */

    if (!block && size)
        abort();
    apr_pool_cleanup_register(pool, block, free_block, apr_pool_cleanup_null);
    return block;
}

apr_pool_t *fuzz_pool(void)
{
    static apr_pool_t *root;
    apr_pool_t *p;

    if (!root) {
        if (apr_initialize() != APR_SUCCESS || apr_pool_create(&root, NULL) != APR_SUCCESS)
            abort();
    }
    if (apr_pool_create(&p, root) != APR_SUCCESS)
        abort();
    return p;
}
