/* testutil.h - small helpers shared by the cmocka tests. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

#endif
