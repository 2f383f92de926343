/*
 * pamdrive.h - drive real libpam (service files in a directory of its own,
 * or under cwrap's pam_wrapper) the way a mail server does: pam_start,
 * PAM_RHOST, pam_authenticate, pam_acct_mgmt, pam_end. Shared by the
 * demonstration and the integration tests.
 */
#ifndef PAMDRIVE_H
#define PAMDRIVE_H

#include <stdbool.h>
#include <stddef.h>

#define PD_SERVICE "authguard-demo"
/* the same stack with a config file that does not exist */
#define PD_SERVICE_NOCONF "authguard-noconf"
/* the same stack with PAM_AUTHTOK kept for our module, as pam_unix keeps
 * it (pam_matrix wipes it after its check): pam_wrapper's pam_set_items
 * (beside pam_matrix.so) puts it back from the environment, which
 * pd_login_service() sets to the password */
#define PD_SERVICE_AUTHTOK "authguard-authtok"

struct pd_paths {
	const char *module;   /* absolute path of pam_authguard.so */
	const char *matrix;   /* absolute path of pam_matrix.so */
	const char *wrapper;  /* absolute path of libpam_wrapper.so */
	const char *workdir;  /* a directory of our own for service files */
};

/* Write the PAM service files into @p->workdir/pam.d (see below).
 * Returns 0 or -1 (with a message on stderr). */
int pd_write_services(const struct pd_paths *p);

/*
 * Write the PAM service files into @p->workdir/pam.d (our module around
 * pam_matrix, the five-line stack of the README,
 * conf=@workdir/authguard.conf, passwords from @workdir/passdb) and make
 * the logins below use them. With pam_start_confdir() (Linux-PAM 1.4+):
 * set PD_CONFDIR_ENV to that directory (inherited by the processes this
 * one starts) and return 0; pam_wrapper is not loaded, so nothing goes
 * into its host-wide /tmp/pam.X. Without it: unless this process runs
 * under pam_wrapper already, set LD_PRELOAD, PAM_WRAPPER=1 and
 * PAM_WRAPPER_SERVICE_DIR and re-execute @argv. Returns 0, or -1 (with a
 * message on stderr) on failure.
 */
#define PD_CONFDIR_ENV "AG_PAM_CONFDIR"
int pd_ensure_wrapper(const struct pd_paths *p, char **argv);

/* One login attempt. Returns the PAM code of the stack (PAM_SUCCESS when
 * both auth and account succeed); *ms_r gets the wall time it took. */
int pd_login(const char *user, const char *password, const char *rhost, double *ms_r);
/* The same through PAM service @service. */
int pd_login_service(const char *service, const char *user, const char *password,
		     const char *rhost, double *ms_r);

/* The path of this program (readlink of /proc/self/exe, which under
 * valgrind names the program, not valgrind's tool). Returns 0 or -1. */
int pd_self_exe(char *buf, size_t len);

/* Monotonic milliseconds. */
double pd_now_ms(void);

#endif
