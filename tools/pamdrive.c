/* pamdrive.c - a tiny PAM application for tests and the demonstration. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <security/pam_appl.h>

#include "pamdrive.h"

double pd_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		return -1;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -1;
}

int pd_self_exe(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);

	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

int pd_write_services(const struct pd_paths *p)
{
	char dir[1024], file[1100], stack[16384];

	snprintf(dir, sizeof(dir), "%s/pam.d", p->workdir);
	if (mkdir(p->workdir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "cannot create %s: %s\n", p->workdir, strerror(errno));
		return -1;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
		return -1;
	}
	/* The README's stack; pam_matrix reports an unknown user as
	 * authinfo_unavail, so that counts as a failure here too. The
	 * second service names a config file that does not exist (its store
	 * and log given as arguments): the guard must say so on every line. */
	static const char *const names[2] = { PD_SERVICE, PD_SERVICE_NOCONF };
	char args[2][1200];
	snprintf(args[0], sizeof(args[0]), "conf=%s/authguard.conf", p->workdir);
	snprintf(args[1], sizeof(args[1]),
		 "conf=%1$s/no-such.conf db_dir=%1$s/db-noconf log=file:%1$s/log-noconf", p->workdir);
	for (int i = 0; i < 2; i++) {
		snprintf(stack, sizeof(stack),
			 "auth     requisite      %1$s preauth %4$s\n"
			 "auth     [success=1 auth_err=ignore user_unknown=ignore authinfo_unavail=ignore default=die] %2$s passdb=%3$s/passdb\n"
			 "auth     [default=die]  %1$s authfail %4$s\n"
			 "auth     sufficient     %1$s authsucc %4$s\n"
			 "account  required       %1$s %4$s\n",
			 p->module, p->matrix, p->workdir, args[i]);
		snprintf(file, sizeof(file), "%s/%s", dir, names[i]);
		if (write_file(file, stack) != 0)
			goto fail;
	}
	char items[1024];
	const char *slash = strrchr(p->matrix, '/');
	snprintf(items, sizeof(items), "%.*spam_set_items.so",
		 slash != NULL ? (int)(slash - p->matrix + 1) : 0, p->matrix);
	snprintf(stack, sizeof(stack),
		 "auth     requisite      %1$s preauth %4$s\n"
		 "auth     [success=2 auth_err=ignore user_unknown=ignore authinfo_unavail=ignore default=die] %2$s passdb=%3$s/passdb\n"
		 "auth     optional       %5$s\n"
		 "auth     [default=die]  %1$s authfail %4$s\n"
		 "auth     optional       %5$s\n"
		 "auth     sufficient     %1$s authsucc %4$s\n"
		 "account  required       %1$s %4$s\n",
		 p->module, p->matrix, p->workdir, args[0], items);
	snprintf(file, sizeof(file), "%s/%s", dir, PD_SERVICE_AUTHTOK);
	if (write_file(file, stack) != 0)
		goto fail;
	snprintf(file, sizeof(file), "%s/other", dir);
	if (write_file(file, "auth required pam_deny.so\naccount required pam_deny.so\n") != 0)
		goto fail;
	return 0;
fail:
	fprintf(stderr, "cannot write %s: %s\n", file, strerror(errno));
	return -1;
}

#ifdef HAVE_PAM_START_CONFDIR
/* Without pam_wrapper, libpam run as root sends an audit record of each
 * call to the kernel, and fails the call (PAM_SYSTEM_ERR) when the record
 * cannot be made (a 10 KB PAM_RHOST). pam_wrapper answers audit_open()
 * with "no audit in this kernel"; so does this program (libpam's call
 * finds it here before libaudit's), so that the stack behaves as it did
 * under the wrapper. */
__attribute__((visibility("default"))) int audit_open(void);
int audit_open(void)
{
	errno = EPROTONOSUPPORT;
	return -1;
}
#endif

int pd_ensure_wrapper(const struct pd_paths *p, char **argv)
{
	char dir[1024];
	const char *on = getenv("PAM_WRAPPER");

#ifdef HAVE_PAM_START_CONFDIR
	/* pam_start_confdir() reads the service files from this run's own
	 * directory: no pam_wrapper, so no runtime directory of its in /tmp
	 * (/tmp/pam.X, 62 names for the whole host, picked racily) that
	 * suites running in parallel could share or delete under each other.
	 * Under the wrapper already (a run set up by hand), keep it. */
	if (on == NULL || strcmp(on, "1") != 0) {
		(void)argv;
		if (pd_write_services(p) != 0)
			return -1;
		if (access(p->module, R_OK) != 0 || access(p->matrix, R_OK) != 0) {
			fprintf(stderr, "missing one of %s, %s (build first; install libpam-wrapper)\n",
				p->module, p->matrix);
			return -1;
		}
		snprintf(dir, sizeof(dir), "%s/pam.d", p->workdir);
		setenv(PD_CONFDIR_ENV, dir, 1); /* for the processes it starts too */
		return 0;
	}
#endif

	if (on != NULL && strcmp(on, "1") == 0) {
		/* pam_wrapper has picked its directory: let the next one go */
		const char *lk = getenv("AG_PWRAP_LOCK_FD");
		if (lk != NULL) {
			char *end;
			errno = 0;
			long fd = strtol(lk, &end, 10);
			/* our own parent set it; anything else is not ours to close */
			if (lk[0] >= '0' && lk[0] <= '9' && *end == '\0' && errno == 0 && fd > 2 &&
			    fd < INT_MAX)
				close((int)fd);
			else
				fprintf(stderr, "AG_PWRAP_LOCK_FD=%.32s: not a descriptor, left alone\n", lk);
			unsetenv("AG_PWRAP_LOCK_FD");
		}
		return 0;
	}
	if (pd_write_services(p) != 0)
		return -1;
	if (access(p->module, R_OK) != 0 || access(p->matrix, R_OK) != 0 ||
	    access(p->wrapper, R_OK) != 0) {
		fprintf(stderr, "missing one of %s, %s, %s (build first; install libpam-wrapper)\n",
			p->module, p->matrix, p->wrapper);
		return -1;
	}
	/* pam_wrapper 1.1.4 picks its runtime directory with lstat then
	 * mkdir: processes starting together can share one and delete it
	 * under each other. Hold a host-wide lock across the exec (it stays
	 * with the open file) until the new image is under the wrapper. */
	int lk = open("/tmp/authguard-pam_wrapper.lock", O_RDWR | O_CREAT, 0600);
	if (lk >= 0 && flock(lk, LOCK_EX) == 0) {
		char num[16];
		snprintf(num, sizeof(num), "%d", lk);
		setenv("AG_PWRAP_LOCK_FD", num, 1);
	}
	snprintf(dir, sizeof(dir), "%s/pam.d", p->workdir);
	setenv("PAM_WRAPPER", "1", 1);
	setenv("PAM_WRAPPER_SERVICE_DIR", dir, 1);
	setenv("LD_PRELOAD", p->wrapper, 1);
	char self[1024];
	if (pd_self_exe(self, sizeof(self)) != 0)
		return -1;
	execv(self, argv);
	fprintf(stderr, "cannot re-execute under pam_wrapper: %s\n", strerror(errno));
	return -1;
}

static int conv(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
	struct pam_response *r = calloc((size_t)n, sizeof(*r));

	if (r == NULL)
		return PAM_BUF_ERR;
	for (int i = 0; i < n; i++) {
		if (msg[i]->msg_style == PAM_PROMPT_ECHO_OFF || msg[i]->msg_style == PAM_PROMPT_ECHO_ON)
			r[i].resp = strdup(data != NULL ? data : "");
	}
	*resp = r;
	return PAM_SUCCESS;
}

int pd_login(const char *user, const char *password, const char *rhost, double *ms_r)
{
	return pd_login_service(PD_SERVICE, user, password, rhost, ms_r);
}

int pd_login_service(const char *service, const char *user, const char *password,
		     const char *rhost, double *ms_r)
{
	struct pam_conv c = { conv, (void *)password };
	pam_handle_t *pamh = NULL;
	double t0 = pd_now_ms();
#ifdef HAVE_PAM_START_CONFDIR
	const char *confdir = getenv(PD_CONFDIR_ENV);
	int rc = confdir != NULL && confdir[0] == '/' ?
		pam_start_confdir(service, user, &c, confdir, &pamh) :
		pam_start(service, user, &c, &pamh);
#else
	int rc = pam_start(service, user, &c, &pamh);
#endif

	if (rc == PAM_SUCCESS && rhost != NULL)
		rc = pam_set_item(pamh, PAM_RHOST, rhost);
	if (password != NULL)
		setenv("PAM_AUTHTOK", password, 1); /* PD_SERVICE_AUTHTOK */
	else
		unsetenv("PAM_AUTHTOK");
	if (rc == PAM_SUCCESS)
		rc = pam_authenticate(pamh, 0);
	if (rc == PAM_SUCCESS)
		rc = pam_acct_mgmt(pamh, 0);
	if (pamh != NULL)
		pam_end(pamh, rc);
	if (ms_r != NULL)
		*ms_r = pd_now_ms() - t0;
	return rc;
}
