/* ag.c - error names and the clock. */
#include "config.h"

#include <time.h>

#include "ag.h"

const char *ag_strerror(int err)
{
	switch (err) {
	case AG_OK: return "success";
	case AG_ENOMEM: return "out of memory";
	case AG_EINVAL: return "invalid argument";
	case AG_ERANGE: return "value out of range";
	case AG_EIO: return "input/output error";
	case AG_ENOTFOUND: return "not found";
	case AG_ESTORE: return "store error";
	case AG_ECORRUPT: return "store is corrupt or unreadable";
	case AG_ENEWER: return "store was written by a newer version of authguard";
	case AG_EFULL: return "store is full";
	case AG_EPERM: return "permission denied";
	case AG_ECONF: return "configuration error";
	case AG_EUNSAFE: return "refused: unsafe path or ownership";
	case AG_EBUSY: return "other processes have the store open";
	}
	return "unknown error";
}

int64_t ag_now_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
