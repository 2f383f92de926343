/*
 * pagecount.so - which pages the store's commits write (issue 15), by
 * LD_PRELOAD: wraps pwrite(2) and writev(2) (what LMDB 0.9 writes its
 * dirty pages and meta page with) on files named data.mdb, reads the
 * header of each page written and files it by what it holds:
 *
 *   src    the sources' database (keys of 18 bytes; pairs: 18 + 'p' + user)
 *   net    the part of it that holds IPv4 /24 records (a leaf whose first
 *          key, a branch whose second key is one: in layout 1 they sort
 *          before the hosts, key byte 1 being the prefix length; in
 *          layout 2, address first, byte 17 is, and a /24 sits with its
 *          hosts, so few pages start with one)
 *   user   the users' records (printable keys beginning "user": the
 *          benchmarks' user names; in layout 2 in the sources' database
 *          under the tag 0x01)
 *   pw     hot passwords (4-byte keys)
 *   main   LMDB's unnamed database (the named databases' records, the
 *          wave state under "\0wave", the fleet's outbox under "\0sync.",
 *          layout 2's count of users "\0users")
 *   free   LMDB's free list (FREE_DBI: 8-byte binary keys, transaction ids)
 *   other  any other database (meta, slot, list, the old pair database)
 *   ovf    overflow pages (a value of over ~2 KB: in the store only a long
 *          free-list record)
 *
 * each as branch or leaf pages, and counts the meta page writes (one per
 * commit; LMDB writes only its changed tail, ~100 bytes, no whole page).
 * It judges by content, not by walking the trees: good for the stores the
 * benchmarks make, not a general tool.
 *
 * The program asks for the figures itself (no symbol is needed at link
 * time; without the preload nothing happens):
 *   void (*reset)(void) = dlsym(RTLD_DEFAULT, "pagecount_reset");
 *   void (*report)(FILE *, unsigned long) = dlsym(RTLD_DEFAULT, "pagecount_report");
 * bench_guard does (-f prints per recorded failure). PAGECOUNT_TRACE=N
 * prints the pages of the first N commits after a reset to stderr.
 *
 *   LD_PRELOAD=$PWD/bench/pagecount.so bench/bench_guard -n 100000 -f
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* what the preload exports (the build hides symbols by default) */
#define EXPORT __attribute__((visibility("default")))
EXPORT void pagecount_reset(void);
EXPORT void pagecount_report(FILE *f, unsigned long per);
EXPORT ssize_t pwrite(int fd, const void *buf, size_t len, off_t at);
EXPORT ssize_t pwrite64(int fd, const void *buf, size_t len, off_t at);
EXPORT ssize_t writev(int fd, const struct iovec *iov, int n);

#define PG 4096
/* LMDB 0.9's page header: pgno (8), pad (2), flags (2), lower, upper (2 + 2) */
#define HDR 16
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_META 0x08
#define P_LEAF2 0x20
#define F_SUBDATA 0x02

enum cls { C_SRC, C_NET, C_USER, C_PW, C_MAIN, C_FREE, C_OTHER, C_N };
static const char *const cls_name[C_N] = { "src", "net", "user", "pw", "main", "free", "other" };

static struct {
	unsigned long long branch[C_N], leaf[C_N], ovf, metas, bytes, pages;
} cnt;
static long trace_left;
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int data_fds[64]; /* 1: data.mdb, 2: another file, 0: not looked at */

static int is_data(int fd)
{
	if (fd < 0 || fd >= 64)
		return 0;
	if (data_fds[fd] == 0) {
		char p[64], t[4096];
		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(p, t, sizeof(t) - 1);
		t[n > 0 ? n : 0] = 0;
		data_fds[fd] = n > 9 && strcmp(t + n - 9, "/data.mdb") == 0 ? 1 : 2;
	}
	return data_fds[fd] == 1;
}

static uint16_t u16(const unsigned char *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

static enum cls classify(const unsigned char *pg, uint16_t flags)
{
	uint16_t lower = u16(pg + 12);
	if (lower < HDR + 2 || lower > PG || (flags & P_LEAF2))
		return C_OTHER;
	unsigned n = (lower - HDR) / 2;
	/* a branch's first key is empty: its second, a leaf's first */
	uint16_t off = u16(pg + HDR + 2 * ((flags & P_BRANCH) && n > 1 ? 1 : 0));
	if (off + 8 > PG)
		return C_OTHER;
	const unsigned char *node = pg + off;
	uint16_t nflags = u16(node + 4), ksize = u16(node + 6);
	const unsigned char *k = node + 8;
	if (off + 8 + ksize > PG)
		return C_OTHER;
	if ((flags & P_LEAF) && (nflags & F_SUBDATA))
		return C_MAIN;
	if (ksize >= 5 && k[0] == 0 && k[1] >= 'a') /* "\0wave", "\0users", "\0sync." */
		return C_MAIN;
	if (ksize == 18 && k[0] == 4 && ((k[1] == 24 && k[17] == 0) || k[17] == 24))
		return C_NET; /* layout 1 (its byte 17 is an IPv6 one), layout 2 */
	if (ksize > 5 && k[0] == 0x01 && memcmp(k + 1, "user", 4) == 0)
		return C_USER; /* layout 2 */
	if (ksize == 18 || (ksize > 19 && k[18] == 'p' && (k[0] == 4 || k[0] == 6 || k[0] == 0)))
		return C_SRC;
	if (ksize == 4)
		return C_PW;
	int printable = ksize > 0;
	for (unsigned i = 0; i < ksize; i++)
		printable = printable && k[i] >= 0x20 && k[i] < 0x7f;
	if (ksize == 8 && !printable)
		return C_FREE;
	if (printable && ksize >= 4 && memcmp(k, "user", 4) == 0)
		return C_USER;
	return C_OTHER;
}

static void note_page(const unsigned char *pg, size_t len, off_t at)
{
	uint16_t flags = u16(pg + 10);
	if (len < PG || (flags & P_META)) {
		if (at < 2 * PG) {
			cnt.metas++;
			if (trace_left > 0 && trace_left-- > 0)
				fprintf(stderr, " commit\n");
		}
		return;
	}
	cnt.pages += len / PG;
	if (flags & P_OVERFLOW) {
		cnt.ovf += len / PG;
		if (trace_left > 0)
			fprintf(stderr, "  pg %lld ovf x%zu\n", (long long)(at / PG), len / PG);
		return;
	}
	enum cls c = classify(pg, flags);
	if (flags & P_BRANCH)
		cnt.branch[c]++;
	else
		cnt.leaf[c]++;
	if (trace_left > 0)
		fprintf(stderr, "  pg %lld %s %s\n", (long long)(at / PG), cls_name[c],
			flags & P_BRANCH ? "branch" : "leaf");
}

static void note(const void *buf, size_t len, off_t at)
{
	cnt.bytes += len;
	/* one buffer is one page or an overflow run (LMDB's iovecs are per
	 * page), or the meta page's tail */
	note_page(buf, len, at);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t at)
{
	if (real_pwrite == NULL)
		real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
	if (is_data(fd))
		note(buf, len, at);
	return real_pwrite(fd, buf, len, at);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t at)
{
	return pwrite(fd, buf, len, at);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
	if (real_writev == NULL)
		real_writev = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
	if (is_data(fd)) {
		off_t at = lseek(fd, 0, SEEK_CUR);
		for (int i = 0; i < n; i++) {
			note(iov[i].iov_base, iov[i].iov_len, at);
			at += (off_t)iov[i].iov_len;
		}
	}
	return real_writev(fd, iov, n);
}

void pagecount_reset(void)
{
	memset(&cnt, 0, sizeof(cnt));
	const char *t = getenv("PAGECOUNT_TRACE");
	trace_left = t != NULL ? atol(t) : 0;
	memset(data_fds, 0, sizeof(data_fds));
}

/* Pages per @per (attempts) by kind; "commits" counts the meta writes. */
void pagecount_report(FILE *f, unsigned long per)
{
	double d = per > 0 ? (double)per : 1.0;
	fprintf(f, "  pages per attempt by database (pagecount.so):");
	for (int c = 0; c < C_N; c++)
		if (cnt.branch[c] + cnt.leaf[c] > 0)
			fprintf(f, " %s %.2f (%.2f branch)", cls_name[c],
				(double)(cnt.branch[c] + cnt.leaf[c]) / d, (double)cnt.branch[c] / d);
	if (cnt.ovf > 0)
		fprintf(f, " overflow %.2f", (double)cnt.ovf / d);
	fprintf(f, "; all %.2f pages, %.2f commits, %.1f bytes\n", (double)cnt.pages / d,
		(double)cnt.metas / d, (double)cnt.bytes / d);
}
