/* testutil.h - small helpers shared by the cmocka tests. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Make a fresh temporary directory; the path is written to @buf. */
static inline void tu_mkdtemp(char *buf, size_t len, const char *tag)
{
	snprintf(buf, len, "/tmp/authguard-%s.XXXXXX", tag);
	if (mkdtemp(buf) == NULL) {
		perror("mkdtemp");
		abort();
	}
}

static inline int tu_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* rm -rf @dir (test directories only), in process: a shell would inherit
 * the pam_wrapper preload and leave its runtime directory behind. */
static inline void tu_rmrf(const char *dir)
{
	if (dir == NULL || strncmp(dir, "/tmp/authguard-", 15) != 0)
		return;
	if (nftw(dir, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
}

/* Count the lines of file @path that contain every one of the NULL
 * terminated needles. */
static inline int tu_count_lines(const char *path, const char *const *needles)
{
	char line[8192];
	int n = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		int ok = 1;
		for (const char *const *p = needles; *p != NULL; p++)
			if (strstr(line, *p) == NULL)
				ok = 0;
		n += ok;
	}
	fclose(f);
	return n;
}

/* Whether file @path has a line containing @needle (how many). */
static inline int tu_has(const char *path, const char *needle)
{
	const char *n[] = { needle, NULL };
	return tu_count_lines(path, n);
}

/* Run @prog -c @conf and the NULL-terminated arguments after @a0 (at
 * most 20), with no LD_PRELOAD or PAM_WRAPPER (a test's pam_wrapper is
 * not the tool's), stdout into @out, stderr into @err (truncated).
 * Returns its exit status, or -1 if it could not run or did not exit. */
static inline int tu_run_tool(const char *prog, const char *conf, const char *out,
			      const char *err, const char *a0, va_list ap)
{
	const char *argv[24];
	int n = 0, st;

	argv[n++] = prog;
	argv[n++] = "-c";
	argv[n++] = conf;
	for (const char *a = a0; a != NULL && n < 23; a = va_arg(ap, const char *))
		argv[n++] = a;
	argv[n] = NULL;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(126);
		unsetenv("LD_PRELOAD");
		unsetenv("PAM_WRAPPER");
		execv(prog, (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

#endif
