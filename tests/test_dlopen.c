/* test_dlopen.c - the built module loads with RTLD_NOW (no undefined
 * symbol) and exports the pam_sm_* entry points and nothing of the core. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_module_loads_and_exports_only_pam_sm(void **state)
{
	static const char *wanted[] = { "pam_sm_authenticate", "pam_sm_setcred", "pam_sm_acct_mgmt" };
	static const char *hidden[] = {
		"ag_guard_check", "ag_guard_record", "ag_store_get", "ag_conf_load",
		"ag_addr_parse", "ag_policy_check", "ag_log_format", "ag_siphash",
	};
	const char *path = getenv("AG_TEST_MODULE");

	(void)state;
	assert_non_null(path);
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL)
		fail_msg("dlopen(%s): %s", path, dlerror());
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
		assert_non_null(dlsym(h, wanted[i]));
	for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++)
		assert_null(dlsym(h, hidden[i]));
	dlclose(h);
}

/* The whole dynamic symbol table: every defined function is pam_sm_*. */
static void test_no_other_function_exported(void **state)
{
	const char *path = getenv("AG_TEST_MODULE");
	char cmd[1200], line[512];
	int functions = 0;

	(void)state;
	assert_non_null(path);
	snprintf(cmd, sizeof(cmd), "nm -D --defined-only '%s'", path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p) != NULL) {
		char addr[64], type, name[400];
		if (sscanf(line, "%63s %c %399s", addr, &type, name) != 3 || (type != 'T' && type != 'W'))
			continue;
		if (strcmp(name, "_init") == 0 || strcmp(name, "_fini") == 0)
			continue;
		if (strncmp(name, "pam_sm_", 7) != 0)
			fail_msg("exported function %s", name);
		functions++;
	}
	assert_int_equal(pclose(p), 0);
	assert_int_equal(functions, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_module_loads_and_exports_only_pam_sm),
		cmocka_unit_test(test_no_other_function_exported),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
