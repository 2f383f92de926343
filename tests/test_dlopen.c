/* test_dlopen.c - the built module loads with RTLD_NOW (no undefined
 * symbol) and exports the pam_sm_* entry points and nothing of the core. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <stdbool.h>
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

/* Count the defined functions in @path's dynamic symbol table; fail on
 * any not starting with one of @allowed. */
static int exported_functions(const char *path, const char *const *allowed)
{
	char cmd[1200], line[512];
	int functions = 0;

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
		bool ok = false;
		for (const char *const *a = allowed; *a != NULL; a++)
			ok = ok || strncmp(name, *a, strlen(*a)) == 0;
		if (!ok)
			fail_msg("%s exports %s", path, name);
		functions++;
	}
	assert_int_equal(pclose(p), 0);
	return functions;
}

/* The whole dynamic symbol table: every defined function is pam_sm_*. */
static void test_no_other_function_exported(void **state)
{
	static const char *const pam[] = { "pam_sm_", NULL };
	(void)state;
	assert_int_equal(exported_functions(getenv("AG_TEST_MODULE"), pam), 3);
}

/* The SASL plugin loads and exports its three entry points only (the
 * client one offers the stock client mechanisms, for SASL_PATH). */
static void test_sasl_plugin_exports(void **state)
{
	static const char *const sasl[] = { "sasl_server_plug_init", "sasl_canonuser_init",
					    "sasl_client_plug_init", NULL };
	const char *path = getenv("AG_TEST_SASL_PLUGIN");

	(void)state;
	assert_non_null(path);
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL)
		fail_msg("dlopen(%s): %s", path, dlerror());
	assert_non_null(dlsym(h, "sasl_server_plug_init"));
	assert_non_null(dlsym(h, "sasl_canonuser_init"));
	assert_non_null(dlsym(h, "sasl_client_plug_init"));
	assert_null(dlsym(h, "ag_guard_check"));
	dlclose(h);
	assert_int_equal(exported_functions(path, sasl), 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_module_loads_and_exports_only_pam_sm),
		cmocka_unit_test(test_no_other_function_exported),
		cmocka_unit_test(test_sasl_plugin_exports),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
