/*
 * authguard-policyd - Dovecot's auth policy server on the authguard store.
 *
 * Dovecot (auth_policy_server_url) asks it before every password check
 * (command=allow) and tells it the result after (command=report); the
 * answers come from the same store and policy as the PAM module's and the
 * SASL plugin's, so a host's PAM services, SASL services and Dovecot share
 * every ban, lock and familiar place, whatever Dovecot's passdb is. See
 * authguard-policyd(8); the request mapping is in map.c.
 *
 * HTTP is libmicrohttpd's (a pool of worker threads per listening
 * address), JSON jansson's. Nothing here sleeps: a tarpit is a delay
 * Dovecot applies itself.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "ag.h"
#include "agd.h"
#include "policyd.h"

#define NAME "authguard-policyd"

static const char usage[] =
	"usage: " NAME " [-c CONF] [-t]\n"
	"  Dovecot's auth policy server (auth_policy_server_url) on the authguard store.\n"
	"  -c CONF  config file (default " AG_DEFAULT_CONF ")\n"
	"  -t       check the config, the API key file and the store, then exit\n"
	"  -h       this help; -V the version\n"
	"Runs in the foreground until SIGTERM; SIGHUP reads the config again.\n";

/* An idle keep-alive connection is kept this long: more than Dovecot's
 * own 10 s (auth-policy.c max_idle_time_msecs), so Dovecot is the one
 * that closes it and never sends a request on a connection being closed. */
#define IDLE_TIMEOUT_S 15

#define MAX_LISTEN 16
#define CONN_MEMORY (8 * 1024)

struct server {
	struct agd d;
	pthread_rwlock_t conf_lock; /* readers: requests; writer: SIGHUP */
	struct pd_key key;
	bool have_key;
	struct pd_sessions *sessions;
	struct pd_listen listen[MAX_LISTEN];
	size_t nlisten;
	struct MHD_Daemon *mhd[MAX_LISTEN];
	/* read at start (a reload does not move sockets or threads) */
	size_t max_request;
	int64_t timeout_ms;
};

/* ---- rate-limited complaints ------------------------------------------------- */

/* A flood of bad requests must not become a flood of log lines: at most
 * LOG_BURST a second, and how many were not said. */
#define LOG_BURST 10
static pthread_mutex_t complain_mu = PTHREAD_MUTEX_INITIALIZER;

static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void complain(const char *fmt, ...)
{
	static int64_t window;
	static unsigned said, hushed;
	char msg[512];
	va_list ap;
	int64_t now = ag_now_ms() / 1000;
	unsigned before = 0;
	bool say;

	pthread_mutex_lock(&complain_mu);
	if (now != window) {
		before = hushed;
		window = now;
		said = hushed = 0;
	}
	say = said < LOG_BURST;
	if (say)
		said++;
	else
		hushed++;
	pthread_mutex_unlock(&complain_mu);
	if (before > 0)
		agd_log(AG_LVL_WARN, "%u more bad requests were not logged", before);
	if (!say)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	agd_log(AG_LVL_WARN, "%s", msg);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	complain("http: %s", msg); /* a peer can make the library talk too */
}

/* ---- one request ------------------------------------------------------------------ */

static const char *peer_of(struct MHD_Connection *c, char *buf, size_t len);

/* ---- connection deadlines ------------------------------------------------------
 *
 * libmicrohttpd's connection timeout counts silence: a peer that sends one
 * byte of its headers every few seconds is never cut, and with a few
 * hundred such connections policyd_max_connections is full and Dovecot
 * cannot reach the daemon (before any API key is checked). So every
 * connection has a deadline of its own: its first request must be
 * complete within policyd_timeout of the connect; after an answer, the
 * next one within IDLE_TIMEOUT_S + policyd_timeout (Dovecot closes an idle
 * connection after 10 s, or sends at once). A sweeper thread shuts down
 * the socket of a connection past its deadline; libmicrohttpd then closes
 * it as it closes any broken one. */
struct conn {
	struct conn *prev, *next;
	int fd;
	int64_t deadline; /* ms; 0: a request is being answered */
	bool cut;
};

static pthread_mutex_t conns_mu = PTHREAD_MUTEX_INITIALIZER;
static struct conn conns = { &conns, &conns, -1, 0, false };
static int64_t conn_timeout_ms = 1000;
static pthread_t sweeper;
static int sweeper_stop[2] = { -1, -1 };

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	(void)cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		struct conn *k = calloc(1, sizeof(*k));
		if (k == NULL || ci == NULL) {
			free(k);
			*socket_context = NULL;
			return;
		}
		k->fd = ci->connect_fd;
		pthread_mutex_lock(&conns_mu);
		k->deadline = ag_now_ms() + conn_timeout_ms;
		k->next = conns.next;
		k->prev = &conns;
		conns.next->prev = k;
		conns.next = k;
		pthread_mutex_unlock(&conns_mu);
		*socket_context = k;
		return;
	}
	struct conn *k = *socket_context;
	if (k == NULL)
		return;
	pthread_mutex_lock(&conns_mu);
	k->prev->next = k->next;
	k->next->prev = k->prev;
	pthread_mutex_unlock(&conns_mu);
	free(k);
	*socket_context = NULL;
}

/* A request of @c is being answered (@busy), or was: the next one's time
 * starts now. */
static void conn_mark(struct MHD_Connection *c, bool busy)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	if (ci == NULL || ci->socket_context == NULL)
		return;
	struct conn *k = ci->socket_context;
	pthread_mutex_lock(&conns_mu);
	k->deadline = busy ? 0 : ag_now_ms() + IDLE_TIMEOUT_S * 1000LL + conn_timeout_ms;
	pthread_mutex_unlock(&conns_mu);
}

static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void *sweep(void *arg)
{
	struct pollfd p = { .fd = sweeper_stop[0], .events = POLLIN };

	(void)arg;
	while (poll(&p, 1, 200) == 0) {
		int64_t now = ag_now_ms();
		unsigned cut = 0;
		pthread_mutex_lock(&conns_mu);
		for (struct conn *k = conns.next; k != &conns; k = k->next) {
			if (k->cut || k->deadline == 0 || k->deadline > now)
				continue;
			(void)shutdown(k->fd, SHUT_RDWR);
			k->cut = true;
			cut++;
		}
		pthread_mutex_unlock(&conns_mu);
		if (cut > 0)
			complain("%u connection(s) closed: no complete request within policyd_timeout (a peer sending too slowly)",
				 cut);
	}
	return NULL;
}

static int start_sweeper(int64_t timeout_ms)
{
	conn_timeout_ms = timeout_ms;
	if (pipe2(sweeper_stop, O_CLOEXEC) != 0)
		return -1;
	if (pthread_create(&sweeper, NULL, sweep, NULL) != 0) {
		close(sweeper_stop[0]);
		close(sweeper_stop[1]);
		sweeper_stop[0] = sweeper_stop[1] = -1;
		return -1;
	}
	return 0;
}

static void stop_sweeper(void)
{
	if (sweeper_stop[1] < 0)
		return;
	(void)write(sweeper_stop[1], "x", 1);
	pthread_join(sweeper, NULL);
	close(sweeper_stop[0]);
	close(sweeper_stop[1]);
	sweeper_stop[0] = sweeper_stop[1] = -1;
}

struct req {
	int64_t start;
	bool started; /* the headers were seen */
	bool answered;
	char *body;
	size_t len, cap;
};

static void *req_begin(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct server *srv = cls;
	struct req *r = calloc(1, sizeof(*r));

	(void)uri;
	if (r == NULL)
		return NULL;
	r->start = ag_now_ms();
	/* from here the request must arrive at once: Dovecot gives the
	 * whole exchange 2 s (auth_policy_server_timeout_msecs) */
	unsigned secs = (unsigned)((srv->timeout_ms + 999) / 1000);
	MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, secs);
	return r;
}

static void req_end(void *cls, struct MHD_Connection *c, void **req_cls,
		    enum MHD_RequestTerminationCode toe)
{
	struct req *r = *req_cls;

	(void)cls;
	if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED && r != NULL && !r->answered) {
		char peer[64];
		complain("%s: request not complete in time (policyd_timeout): connection closed",
			 c != NULL ? peer_of(c, peer, sizeof(peer)) : "?");
	}
	if (c != NULL) {
		MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S);
		conn_mark(c, false);
	}
	if (r == NULL)
		return;
	free(r->body);
	free(r);
	*req_cls = NULL;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body,
			     size_t len)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result rc;

	if (resp == NULL)
		return MHD_NO;
	(void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	rc = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return rc;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, struct req *r, unsigned status,
				   const char *what)
{
	char body[256];
	int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", what);

	r->answered = true;
	return reply(c, status, body, n > 0 ? (size_t)n : 0);
}

static const char *peer_of(struct MHD_Connection *c, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

	snprintf(buf, len, "?");
	if (ci == NULL || ci->client_addr == NULL)
		return buf;
	if (ci->client_addr->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, buf, len);
	else if (ci->client_addr->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, buf, len);
	return buf;
}

/* The headers are in: refuse early what will not be answered. Returns
 * true when a reply was queued. */
static bool screen(struct server *srv, struct MHD_Connection *c, struct req *r, const char *method,
		   enum MHD_Result *rc)
{
	char peer[64];
	const char *cl;

	if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
		complain("%s: %s request refused (405): Dovecot POSTs", peer_of(c, peer, sizeof(peer)),
			 method);
		*rc = reply_error(c, r, MHD_HTTP_METHOD_NOT_ALLOWED, "POST only");
		return true;
	}
	/* the key may change under SIGHUP: read it under the config's lock */
	pthread_rwlock_rdlock(&srv->conf_lock);
	bool need = srv->have_key, good = true;
	const char *got = NULL;
	size_t got_len = 0;
	char header[sizeof(srv->key.header)];
	memcpy(header, srv->key.header, sizeof(header));
	if (need) {
		if (MHD_lookup_connection_value_n(c, MHD_HEADER_KIND, srv->key.header,
						  strlen(srv->key.header), &got, &got_len) != MHD_YES)
			got = NULL;
		good = pd_key_matches(&srv->key, got, got_len);
	}
	pthread_rwlock_unlock(&srv->conf_lock);
	if (need && !good) {
		complain("%s: request refused (401): %s header %s (auth_policy_server_api_header must be the key file's text)",
			 peer_of(c, peer, sizeof(peer)), header, got == NULL ? "missing" : "wrong");
		*rc = reply_error(c, r, MHD_HTTP_UNAUTHORIZED, "API key missing or wrong");
		return true;
	}
	cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl != NULL && strtoull(cl, NULL, 10) > srv->max_request) {
		complain("%s: request refused (413): %s bytes, policyd_max_request is %zu",
			 peer_of(c, peer, sizeof(peer)), cl, srv->max_request);
		*rc = reply_error(c, r, 413 /* content too large */, "request too large");
		return true;
	}
	return false;
}

static bool take_body(struct server *srv, struct req *r, const char *data, size_t n)
{
	if (n > srv->max_request - r->len)
		return false;
	if (r->len + n > r->cap) {
		size_t cap = r->cap > 0 ? r->cap : 1024;
		while (cap < r->len + n)
			cap *= 2;
		if (cap > srv->max_request)
			cap = srv->max_request;
		char *b = realloc(r->body, cap);
		if (b == NULL)
			return false;
		r->body = b;
		r->cap = cap;
	}
	memcpy(r->body + r->len, data, n);
	r->len += n;
	return true;
}

static enum MHD_Result answer(struct server *srv, struct MHD_Connection *c, struct req *r)
{
	const char *cmd_arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "command");
	enum pd_command cmd = pd_command_of(cmd_arg);
	char out[512], why[256], peer[64];
	size_t out_len = 0;
	int status;

	conn_mark(c, true); /* the request is here: the sweeper leaves it be */
	pthread_rwlock_rdlock(&srv->conf_lock);
	struct pd_ctx ctx = { .conf = &srv->d.conf, .sink = &srv->d.sink, .sessions = srv->sessions };
	status = pd_handle(&ctx, cmd, r->body != NULL ? r->body : "", r->len, out, sizeof(out),
			   &out_len, why, sizeof(why));
	pthread_rwlock_unlock(&srv->conf_lock);
	if (status != 200)
		complain("%s: command=%.32s: request refused (%d): %s", peer_of(c, peer, sizeof(peer)),
			 cmd_arg != NULL ? cmd_arg : "(none)", status, why);
	r->answered = true;
	return reply(c, (unsigned)status, out, out_len);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *data,
				  size_t *data_size, void **req_cls)
{
	struct server *srv = cls;
	struct req *r = *req_cls;
	char peer[64];
	enum MHD_Result rc = MHD_YES;

	(void)url;
	(void)version;
	if (r == NULL)
		return MHD_NO; /* no memory for it: close */
	if (r->answered) {
		*data_size = 0; /* the rest of a refused body */
		return MHD_YES;
	}
	if (!r->started) {
		r->started = true;
		if (screen(srv, c, r, method, &rc))
			return rc;
		return MHD_YES;
	}
	if (ag_now_ms() - r->start > srv->timeout_ms) {
		complain("%s: request not complete after %lld ms (policyd_timeout): connection closed",
			 peer_of(c, peer, sizeof(peer)), (long long)srv->timeout_ms);
		return MHD_NO;
	}
	if (*data_size > 0) {
		if (!take_body(srv, r, data, *data_size)) {
			complain("%s: request body over policyd_max_request (%zu bytes): connection closed",
				 peer_of(c, peer, sizeof(peer)), srv->max_request);
			return MHD_NO;
		}
		*data_size = 0;
		return MHD_YES;
	}
	return answer(srv, c, r);
}

/* ---- start ------------------------------------------------------------------------- */

static int load_key(struct server *srv, const struct ag_conf *c, struct pd_key *k, bool *have)
{
	char text[PD_KEY_MAX + 256], err[160];
	const char *path = c->policyd_api_key_file;
	struct stat st;
	ssize_t n;
	int fd;

	(void)srv;
	*have = false;
	if (path[0] == '\0')
		return 0;
	if (path[0] != '/') {
		agd_log(AG_LVL_ERR, "policyd_api_key_file %s: must be an absolute path", path);
		return -1;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		agd_log(AG_LVL_ERR, "policyd_api_key_file %s: %s", path,
			fd < 0 ? strerror(errno) : "not a regular file");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	n = read(fd, text, sizeof(text));
	close(fd);
	if (n < 0 || (size_t)n >= sizeof(text)) {
		agd_log(AG_LVL_ERR, "policyd_api_key_file %s: %s", path,
			n < 0 ? strerror(errno) : "too long for one key");
		return -1;
	}
	if (pd_key_parse(text, (size_t)n, k, err, sizeof(err)) != 0) {
		agd_log(AG_LVL_ERR, "policyd_api_key_file %s: %s", path, err);
		return -1;
	}
	if (st.st_mode & S_IROTH)
		agd_log(AG_LVL_WARN, "policyd_api_key_file %s can be read by every user (chmod o-r)", path);
	*have = true;
	return 0;
}

/* The listening addresses, and whether they may be used as configured. */
static int check_listen(struct server *srv)
{
	const struct ag_conf *c = &srv->d.conf;
	char err[160];

	if (c->policyd_listen.n == 0) {
		agd_log(AG_LVL_ERR, "policyd_listen: no address to listen on");
		return -1;
	}
	if (c->policyd_listen.n > MAX_LISTEN) {
		agd_log(AG_LVL_ERR, "policyd_listen: at most %d addresses", MAX_LISTEN);
		return -1;
	}
	for (size_t i = 0; i < c->policyd_listen.n; i++) {
		struct pd_listen *l = &srv->listen[i];
		if (pd_listen_parse(c->policyd_listen.v[i], l, err, sizeof(err)) != 0) {
			agd_log(AG_LVL_ERR, "policyd_listen: %s", err);
			return -1;
		}
		/* a policy server others can reach is one they can ban and
		 * befriend addresses through: never by accident */
		if (!l->loopback && !c->policyd_allow_remote) {
			agd_log(AG_LVL_ERR, "policyd_listen %s is not a loopback address: set policyd_allow_remote = yes (and an API key) to listen there",
				l->text);
			return -1;
		}
		if (!l->loopback && !srv->have_key) {
			agd_log(AG_LVL_ERR, "policyd_listen %s is not a loopback address: it needs policyd_api_key_file",
				l->text);
			return -1;
		}
	}
	srv->nlisten = c->policyd_listen.n;
	return 0;
}

static int start_http(struct server *srv)
{
	const struct ag_conf *c = &srv->d.conf;

	if (start_sweeper(srv->timeout_ms) != 0) {
		agd_log(AG_LVL_ERR, "cannot start the connection deadline thread: %s", strerror(errno));
		return -1;
	}

	for (size_t i = 0; i < srv->nlisten; i++) {
		struct pd_listen *l = &srv->listen[i];
		unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
		if (l->addr.ss_family == AF_INET6)
			flags |= MHD_USE_IPv6;
		srv->mhd[i] = MHD_start_daemon(
			flags, 0, NULL, NULL, on_request, srv,
			/* first, or MHD says some things on its own */
			MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
			MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&l->addr,
			MHD_OPTION_THREAD_POOL_SIZE, (unsigned)c->policyd_threads,
			MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->policyd_max_connections,
			MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
			/* a connection's buffer, cleared for every request:
			 * Dovecot's headers are a few hundred bytes, and the
			 * body is copied out as it comes (not the default 32K) */
			MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
			MHD_OPTION_URI_LOG_CALLBACK, req_begin, srv,
			MHD_OPTION_NOTIFY_COMPLETED, req_end, srv,
			MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
			MHD_OPTION_END);
		if (srv->mhd[i] == NULL) {
			agd_log(AG_LVL_ERR, "cannot listen on %s (see above: in use, or not an address of this host?)",
				l->text);
			return -1;
		}
	}
	return 0;
}

static void stop_http(struct server *srv)
{
	/* each returns once its threads are done with the requests they
	 * hold: every attempt answered is recorded; LMDB commits are whole,
	 * so nothing is left half-written either way */
	for (size_t i = 0; i < srv->nlisten; i++)
		if (srv->mhd[i] != NULL)
			MHD_stop_daemon(srv->mhd[i]);
	stop_sweeper();
}

static void reload(struct server *srv)
{
	struct pd_key k;
	bool have;

	pthread_rwlock_wrlock(&srv->conf_lock);
	if (agd_reload(&srv->d) == 0) {
		if (load_key(srv, &srv->d.conf, &k, &have) == 0) {
			if (have || !srv->have_key) {
				srv->key = k;
				srv->have_key = have;
			} else {
				/* dropping the key would open the door */
				agd_log(AG_LVL_WARN, "policyd_api_key_file is no longer set: the key read before stays in force until a restart");
			}
		} else {
			agd_log(AG_LVL_WARN, "the API key read before stays in force");
		}
		agd_log(AG_LVL_INFO, "policyd_listen, policyd_threads, policyd_max_connections, policyd_max_request and policyd_timeout take effect at a restart");
	}
	pthread_rwlock_unlock(&srv->conf_lock);
}

static int serve(struct server *srv, int sigfd)
{
	char status[256] = "listening on";

	for (size_t i = 0; i < srv->nlisten; i++) {
		size_t n = strlen(status);
		snprintf(status + n, sizeof(status) - n, " %s", srv->listen[i].text);
	}
	agd_log(AG_LVL_INFO, "%s (store %s, %u threads each%s)", status, srv->d.conf.db_dir,
		srv->d.conf.policyd_threads, srv->have_key ? ", API key required" : "");
	agd_ready(status);
	for (;;) {
		struct pollfd p = { .fd = sigfd, .events = POLLIN };
		if (poll(&p, 1, -1) < 0 && errno != EINTR) {
			agd_log(AG_LVL_ERR, "poll: %s", strerror(errno));
			return 1;
		}
		int sig;
		while ((sig = agd_signal_take(sigfd)) != 0) {
			if (sig == SIGHUP) {
				reload(srv);
				continue;
			}
			agd_log(AG_LVL_INFO, "signal %d: stopping", sig);
			return 0;
		}
	}
}

int main(int argc, char **argv)
{
	static struct server srv;
	int rc = agd_start(&srv.d, NAME, usage, NULL, NULL, argc, argv);

	if (rc == 1 && !srv.d.check_only)
		return 0;
	if (rc == 2)
		return 2;
	srv.max_request = (size_t)srv.d.conf.policyd_max_request;
	srv.timeout_ms = srv.d.conf.policyd_timeout;
	if (load_key(&srv, &srv.d.conf, &srv.key, &srv.have_key) != 0 || check_listen(&srv) != 0) {
		agd_finish(&srv.d);
		return 2;
	}
	if (srv.d.check_only) {
		printf("%s: listening addresses%s are usable\n", NAME,
		       srv.have_key ? " and the API key file" : "");
		agd_finish(&srv.d);
		return 0;
	}
	srv.sessions = malloc(sizeof(*srv.sessions));
	if (srv.sessions == NULL || pd_sessions_init(srv.sessions) != 0 ||
	    pthread_rwlock_init(&srv.conf_lock, NULL) != 0) {
		agd_log(AG_LVL_ERR, "cannot set up: %s", strerror(errno != 0 ? errno : ENOMEM));
		free(srv.sessions);
		agd_finish(&srv.d);
		return 1;
	}
	/* before any thread: jansson's hash seed, and the signal mask every
	 * thread inherits (SIGTERM must reach the signalfd, not a worker) */
	json_object_seed(0);
	int sigfd = agd_signals();
	if (sigfd < 0) {
		agd_log(AG_LVL_ERR, "signals: %s", strerror(errno));
		rc = 1;
	} else if (start_http(&srv) != 0) {
		rc = 1;
	} else {
		rc = serve(&srv, sigfd);
	}
	agd_stopping();
	stop_http(&srv);
	if (sigfd >= 0)
		close(sigfd);
	pd_sessions_destroy(srv.sessions);
	free(srv.sessions);
	pthread_rwlock_destroy(&srv.conf_lock);
	agd_finish(&srv.d);
	if (rc == 0)
		agd_log(AG_LVL_INFO, "stopped");
	return rc;
}
