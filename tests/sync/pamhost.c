/* pamhost.c - one simulated host's login attempts for tests/sync/run.sh:
 * the real pam_authguard.so through real libpam (tools/pamdrive.h, pam_matrix),
 * with the host's own config and store (WORKDIR/authguard.conf, passwords
 * in WORKDIR/passdb). Usage: pamhost WORKDIR USER PASSWORD RHOST [...]:
 * each triple is one attempt, and one line says how it ended: "ok", or
 * "fail" with PAM's code. Exit 0, or 2 when the wrapper cannot be set up.
 * With AG_PAMHOST_AUTHTOK=1 the stack also hands the module the password
 * (PAM_AUTHTOK, as pam_unix does; pam_matrix does not): hot passwords. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include <security/pam_appl.h>

#include "pamdrive.h"

int main(int argc, char **argv)
{
	if (argc < 5 || (argc - 2) % 3 != 0) {
		fprintf(stderr, "usage: pamhost WORKDIR USER PASSWORD RHOST [USER PASSWORD RHOST ...]\n");
		return 2;
	}
	struct pd_paths p = { getenv("AG_TEST_MODULE"), getenv("AG_TEST_MATRIX"),
			      getenv("AG_TEST_WRAPPER"), argv[1] };
	if (p.module == NULL || p.matrix == NULL || p.wrapper == NULL) {
		fprintf(stderr, "pamhost: AG_TEST_MODULE, AG_TEST_MATRIX and AG_TEST_WRAPPER are needed\n");
		return 2;
	}
	if (pd_ensure_wrapper(&p, argv) != 0)
		return 2;
	const char *tok = getenv("AG_PAMHOST_AUTHTOK");
	const char *service = tok != NULL && tok[0] == '1' ? PD_SERVICE_AUTHTOK : PD_SERVICE;
	for (int i = 2; i + 2 < argc; i += 3) {
		int rc = pd_login_service(service, argv[i], argv[i + 1], argv[i + 2], NULL);
		if (rc == PAM_SUCCESS)
			printf("ok\n");
		else
			printf("fail %d\n", rc);
	}
	return 0;
}
