/* What every unit test program shares: APR set up around the cmocka group,
 * and one pool that tests allocate from, cleared after each test. */
#ifndef AIB_UNIT_H
#define AIB_UNIT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <apr_pools.h>
#include <apr_tables.h>

extern apr_pool_t *pool;

/* A test teardown that clears `pool`. */
int aib_clear_pool(void **state);

int aib_group_setup(void **state);
int aib_group_teardown(void **state);

/* A copy of `t` whose keys and values are copies too, in `pool`: what a
 * fake transport records outlives the caller's pool. */
apr_table_t *aib_table_copy_deep(const apr_table_t *t);

/* Runs only the cases whose names match AIB_UNIT_CASE (a cmocka pattern:
 * * and ? wildcards) when it is set: `./dev unit <file> <case>`. */
void aib_unit_filter(void);

#define AIB_RUN_TESTS(tests) \
    (aib_unit_filter(), cmocka_run_group_tests(tests, aib_group_setup, aib_group_teardown))

#endif
