/* The proxy's native fast lane: an epoll engine for plain HTTP/1.1 keep-alive relaying.
 *
 * See docs/design/proxy-fast-lane.md. The engine runs on the worker's event loop thread
 * (uvloop watches the epoll fd and calls Engine.poll), so it holds the GIL throughout and
 * calls back into Python for every policy decision: admission, backend choice, connecting,
 * slot release, passive health, error pages, logging, and handing a connection over to the
 * Python relay ("escape") whenever a request is not one the fast lane relays itself.
 *
 * Memory: a client costs one struct; buffers are allocated only for bytes that must wait
 * (a pipelined request, output the peer has not taken yet) and are bounded by the
 * configured limits. Structs closed during a poll are freed at its end (epoll may still
 * report events for them in the same batch).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <stddef.h>

#ifdef FL_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#endif

#include "heads_py.h"
#include "http_heads.h"

#define READ_SIZE 65536
#define MAX_EVENTS 256
#define RESPONSE_MAX_HEAD 65536
#define MAX_TRAILER 8192
#define LATENCY_RING 1024

enum { K_LISTEN = 1, K_CLIENT = 2, K_UP = 3, K_PAIR = 4 };
/* client states (C_TUNNEL: a TLS client handed to the Python relay through a socket pair;
   the engine only encrypts and decrypts for it from then on) */
enum { C_IDLE = 0, C_WAIT_PY = 1, C_SENT = 2, C_TUNNEL = 3 };
/* TLS state of a client */
enum { T_PLAIN = 0, T_HANDSHAKE = 1, T_OPEN = 2, T_CLOSED = 3 /* close_notify sent */ };
/* ciphertext read per recv: with what OpenSSL may hold of a partial record (at most one
   record, < 17 KiB), the plaintext always fits the READ_SIZE scratch */
#define TLS_READ (READ_SIZE - 20480)

typedef struct {
    char *p;
    size_t len, cap;
} fl_buf;

typedef struct upstream upstream;
typedef struct client client;

struct upstream {
    int kind; /* K_UP; first field, as in every struct epoll points at */
    int fd;
    int backend;
    int dead;
    int in_pool;
    uint32_t events;
    client *client;     /* NULL while idle in the pool */
    upstream *next_idle; /* pool list */
    double idle_since;
    fl_buf in;  /* a response head still arriving */
    fl_buf out; /* request bytes the socket has not taken yet */
    upstream *next_dead;
};

struct client {
    int kind; /* K_CLIENT */
    int fd;
    int dead;
    uint32_t events;
    uint32_t slot, gen;
    int state;
    int closing; /* close once `out` is flushed */
    int eof;     /* the client shut down its sending side: answer what came, then close */
    int read_paused;
    char ip[INET6_ADDRSTRLEN];
    size_t ip_len;
    fl_buf in;  /* bytes of requests not started yet */
    fl_buf out; /* output the client has not taken yet */
    fl_buf req; /* the current request's upstream head (kept for a retry) */
    upstream *up;
    int backend; /* slot the engine holds, -1 when none (or Python holds it) */
    int method;
    int keep_alive;
    int attempt;
    int reused;
    double sent_at, last_activity, up_activity;
    double out_progress; /* when the client last took output (or output started waiting) */
    /* response state */
    int resp_started;
    int framing;
    int up_reuse;  /* the upstream connection may serve another request */
    int status;    /* of the final response */
    uint64_t body_left;
    fl_chunks chunks;
    client *next_dead;
    /* TLS (tls != T_PLAIN): OpenSSL over the engine's BIO; the engine does the socket I/O */
    int tls;
    int counted;  /* counted in nclients (plain: from accept; TLS: once admitted) */
    double born;  /* accepted at (the handshake must end within client_timeout_s) */
#ifdef FL_TLS
    SSL *ssl;
#endif
    /* C_TUNNEL: `in` holds plaintext for the pair, `out` ciphertext for the client */
    int pair_kind; /* K_PAIR: what epoll points at for the pair */
    int pfd;       /* the engine's end of the socket pair, -1 when none */
    uint32_t pevents;
    int pair_shut; /* the client's end of stream was passed on (shutdown SHUT_WR) */
};

typedef struct {
    upstream *idle;
    int nidle;
    int busy;           /* connections serving a request now */
    int peak, peak_prev; /* the most busy at once, this sweep period and the one before */
    uint64_t requests, bytes_in, bytes_out, response_errors, retries;
    double lat[LATENCY_RING];
    size_t nlat, lat_head;
} fl_backend;

typedef struct {
    PyObject_HEAD int epfd;
    int listen_fd;
    int listen_kind; /* K_LISTEN: what epoll points at for the listener */
    int accept_paused; /* out of fds: the listener left the epoll set until the next sweep */
    PyObject *handler;
    PyObject *cb_admit, *cb_select, *cb_connect, *cb_release, *cb_failure, *cb_escape, *cb_page,
        *cb_log;
    PyObject *cb_pick; /* handler.tls_pick(server_name) -> certificate index (SNI) */
#ifdef FL_TLS
    SSL_CTX **tls_ctx; /* the current certificates: [0] default, then by tls_pick's index */
    int ntls;
#endif
    char *tscratch; /* ciphertext read from TLS clients */
    /* what the clients' BIOs read from and write to: the ciphertext of the read being
       handled, and the records OpenSSL wrote for the client being handled (sent to it
       right after each OpenSSL call) */
    const char *tin;
    size_t tin_len;
    fl_buf tout;
    client **slots;
    uint32_t nslots, slots_cap;
    uint32_t *free_slots;
    uint32_t nfree;
    uint32_t next_gen;
    long nclients;
    fl_backend *backends;
    int nbackends;
    /* settings */
    size_t max_head, buffer_size;
    int max_idle;
    double idle_timeout, server_timeout, client_timeout;
    int hash_mode; /* 0 none, 1 client ip, 2 uri, 3 header */
    char hash_header[128];
    size_t hash_header_len;
    int stopping;
    int retry_limit;
    int hide_server; /* leave the backends' Server field out of responses */
    /* totals since the last harvest */
    uint64_t requests, errors;
    char *scratch;
    fl_buf obuf;
    client *dead_clients;
    upstream *dead_ups;
    int depth; /* engine methods running (a handler callback may call another one) */
} Engine;

/* seconds added to the monotonic clock: tests move time forward (`_skew_clock`) instead
   of sleeping until a timeout runs out */
static double clock_skew = 0.0;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + clock_skew;
}

/* ------------------------------------------------------------------ buffers */

static int buf_reserve(fl_buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_append(fl_buf *b, const char *data, size_t n) {
    if (n == 0) return 0;
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static void buf_consume(fl_buf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->p, b->p + n, b->len - n);
        b->len -= n;
    }
}

/* drop a large buffer once empty, so idle connections stay small */
static void buf_trim(fl_buf *b) {
    if (b->len == 0 && b->cap > 16384) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

static void buf_free(fl_buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* send as much of p[0:n] as the socket takes now: the count sent (maybe 0: it would
   block), or -1 when the connection failed */
static ssize_t send_some(int fd, const char *p, size_t n) {
    size_t sent = 0;
    while (sent < n) {
        ssize_t w = send(fd, p + sent, n - sent, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    return (ssize_t)sent;
}

/* ------------------------------------------------------------------ python calls */

static void report_error(Engine *e, const char *where) {
    /* an exception in a handler callback: print it, the connection gets an error */
    (void)e;
    PyObject *ctx = PyUnicode_FromString(where);
    PyErr_WriteUnraisable(ctx);
    Py_XDECREF(ctx);
}

static void py_log(Engine *e, int level, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    PyObject *r = PyObject_CallFunction(e->cb_log, "is", level, msg);
    if (r == NULL)
        report_error(e, "fast lane log");
    else
        Py_DECREF(r);
}

/* an error page from Python; NULL on failure (the caller just closes) */
static PyObject *py_page(Engine *e, int status, const char *detail) {
    PyObject *r = PyObject_CallFunction(e->cb_page, "is", status, detail);
    if (r == NULL) {
        report_error(e, "fast lane page");
        return NULL;
    }
    if (!PyBytes_Check(r)) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

/* release the slot on `backend`; returns whether the upstream connection may be parked */
static int py_release(Engine *e, int backend, int ok) {
    PyObject *args[2];
    args[0] = PyLong_FromLong(backend);
    if (args[0] == NULL) {
        report_error(e, "fast lane release");
        return 0;
    }
    args[1] = ok ? Py_True : Py_False;
    PyObject *r = PyObject_Vectorcall(e->cb_release, args, 2, NULL);
    Py_DECREF(args[0]);
    if (r == NULL) {
        report_error(e, "fast lane release");
        return 0;
    }
    int park = PyObject_IsTrue(r) == 1;
    Py_DECREF(r);
    return park;
}

static void py_failure(Engine *e, int backend, const char *reason) {
    PyObject *r = PyObject_CallFunction(e->cb_failure, "is", backend, reason);
    if (r == NULL)
        report_error(e, "fast lane failure");
    else
        Py_DECREF(r);
}

static fl_backend *backend_at(Engine *e, int i) {
    if (i < 0) return NULL;
    if (i >= e->nbackends) {
        int n = e->nbackends ? e->nbackends : 8;
        while (n <= i) n *= 2;
        fl_backend *b = realloc(e->backends, (size_t)n * sizeof *b);
        if (b == NULL) return NULL;
        memset(b + e->nbackends, 0, (size_t)(n - e->nbackends) * sizeof *b);
        e->backends = b;
        e->nbackends = n;
    }
    return &e->backends[i];
}

/* ------------------------------------------------------------------ epoll helpers */

static void set_events(Engine *e, int fd, void *obj, uint32_t *cur, uint32_t want) {
    if (*cur == want) return;
    struct epoll_event ev = {.events = want, .data.ptr = obj};
    epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev);
    *cur = want;
}

static uint32_t client_wanted(Engine *e, client *c) {
    (void)e;
    uint32_t ev = c->read_paused ? 0 : EPOLLIN;
    if (c->out.len) ev |= EPOLLOUT;
    return ev;
}

static uint32_t up_wanted(Engine *e, upstream *u) {
    uint32_t ev = EPOLLIN;
    client *c = u->client;
    if (c != NULL && c->out.len > e->buffer_size) ev = 0; /* the client is not reading */
    if (u->out.len) ev |= EPOLLOUT;
    return ev;
}

static void client_update(Engine *e, client *c) {
    if (c->dead) return;
    set_events(e, c->fd, c, &c->events, client_wanted(e, c));
    if (c->pfd >= 0) {
        /* a tunnel: read the pair unless the client lags; write it while input waits */
        uint32_t want = c->out.len > e->buffer_size ? 0 : EPOLLIN;
        if (c->in.len) want |= EPOLLOUT;
        set_events(e, c->pfd, &c->pair_kind, &c->pevents, want);
    }
}

static void up_update(Engine *e, upstream *u) {
    if (!u->dead) set_events(e, u->fd, u, &u->events, up_wanted(e, u));
}

/* ------------------------------------------------------------------ upstreams */

static void pool_remove(Engine *e, upstream *u) {
    fl_backend *b = backend_at(e, u->backend);
    if (b == NULL || !u->in_pool) return;
    for (upstream **pp = &b->idle; *pp; pp = &(*pp)->next_idle) {
        if (*pp == u) {
            *pp = u->next_idle;
            u->next_idle = NULL;
            u->in_pool = 0;
            b->nidle--;
            return;
        }
    }
}

/* the connection no longer serves a request */
static void unbind(Engine *e, upstream *u) {
    if (u->client == NULL) return;
    u->client = NULL;
    fl_backend *b = backend_at(e, u->backend);
    if (b) b->busy--;
}

static void up_close(Engine *e, upstream *u) {
    if (u->dead) return;
    pool_remove(e, u);
    unbind(e, u);
    u->dead = 1;
    close(u->fd); /* also leaves the epoll set */
    u->fd = -1;
    u->next_dead = e->dead_ups;
    e->dead_ups = u;
}

static upstream *up_new(Engine *e, int fd, int backend) {
    upstream *u = calloc(1, sizeof *u);
    if (u == NULL) return NULL;
    u->kind = K_UP;
    u->fd = fd;
    u->backend = backend;
    u->events = EPOLLIN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = u};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        free(u);
        return NULL;
    }
    return u;
}

/* keep a finished connection for the next request to its backend. The pool holds
   max_idle_upstream connections, or as many as were busy at once in the last second or
   two if that is more: requests come and go in bursts, and under a high concurrency a
   smaller pool would close connections that the next burst has to connect again (the
   extra ones age out after idle_timeout_s once the load drops) */
static void park(Engine *e, upstream *u) {
    fl_backend *b = backend_at(e, u->backend);
    unbind(e, u);
    int cap = e->max_idle;
    if (b != NULL && b->peak > cap) cap = b->peak;
    if (b != NULL && b->peak_prev > cap) cap = b->peak_prev;
    if (b == NULL || b->nidle >= cap || u->out.len || u->in.len) {
        up_close(e, u);
        return;
    }
    buf_trim(&u->in);
    buf_trim(&u->out);
    u->idle_since = now_s();
    u->next_idle = b->idle;
    u->in_pool = 1;
    b->idle = u;
    b->nidle++;
    up_update(e, u);
}

static upstream *pool_take(Engine *e, int backend) {
    fl_backend *b = backend_at(e, backend);
    if (b == NULL) return NULL;
    while (b->idle) {
        upstream *u = b->idle;
        b->idle = u->next_idle;
        u->next_idle = NULL;
        u->in_pool = 0;
        b->nidle--;
        if (!u->dead) return u;
    }
    return NULL;
}

/* ------------------------------------------------------------------ clients */

static PyObject *token_of(client *c) {
    return PyLong_FromUnsignedLongLong(((unsigned long long)c->gen << 32) | c->slot);
}

static client *client_by_token(Engine *e, unsigned long long token) {
    uint32_t slot = (uint32_t)(token & 0xffffffffu);
    uint32_t gen = (uint32_t)(token >> 32);
    if (slot >= e->nslots) return NULL;
    client *c = e->slots[slot];
    if (c == NULL || c->gen != gen || c->dead) return NULL;
    return c;
}

static void client_forget(Engine *e, client *c) {
    /* the slot is free again; the struct is freed at the end of the poll */
    e->slots[c->slot] = NULL;
    e->free_slots[e->nfree++] = c->slot;
    if (c->counted) e->nclients--;
    c->counted = 0;
    c->dead = 1;
    c->next_dead = e->dead_clients;
    e->dead_clients = c;
}

/* the engine's slot on the current backend, if it holds one */
static void drop_slot(Engine *e, client *c, int ok) {
    if (c->backend >= 0) {
        int b = c->backend;
        c->backend = -1;
        py_release(e, b, ok);
    }
}

/* give up the request in progress, if any: its upstream connection and its slot */
static void abandon_request(Engine *e, client *c) {
    if (c->up != NULL) {
        upstream *u = c->up;
        c->up = NULL;
        up_close(e, u);
    }
    drop_slot(e, c, 0);
}

static void client_close(Engine *e, client *c) {
    if (c->dead) return;
    abandon_request(e, c);
    if (c->pfd >= 0) {
        close(c->pfd); /* the Python relay sees the end of its connection */
        c->pfd = -1;
    }
    close(c->fd);
    c->fd = -1;
    client_forget(e, c); /* (the SSL object is freed with the struct) */
}

static int client_send_raw(Engine *e, client *c, const char *data, size_t n);

#ifdef FL_TLS
/* The clients' BIO: no system calls and no buffer of its own. Reads take the ciphertext
   the engine just received (OpenSSL keeps a partial record in its own buffer); writes
   append to the engine's output buffer, which goes to the client after the call. */
static BIO_METHOD *fl_bio_method;

static int fbio_write(BIO *b, const char *data, int n) {
    Engine *e = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (n <= 0) return 0;
    if (buf_append(&e->tout, data, (size_t)n) < 0) return -1;
    return n;
}

static int fbio_read(BIO *b, char *out, int n) {
    Engine *e = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (n <= 0) return 0;
    if (e->tin_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t k = e->tin_len < (size_t)n ? e->tin_len : (size_t)n;
    memcpy(out, e->tin, k);
    e->tin += k;
    e->tin_len -= k;
    return (int)k;
}

static long fbio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int fbio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static int fbio_destroy(BIO *b) {
    (void)b;
    return 1;
}

static int fl_bio_init(void) {
    fl_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "parlour fast lane");
    if (fl_bio_method == NULL || !BIO_meth_set_write(fl_bio_method, fbio_write) ||
        !BIO_meth_set_read(fl_bio_method, fbio_read) || !BIO_meth_set_ctrl(fl_bio_method, fbio_ctrl) ||
        !BIO_meth_set_create(fl_bio_method, fbio_create) || !BIO_meth_set_destroy(fl_bio_method, fbio_destroy))
        return -1;
    return 0;
}
#endif

#ifdef FL_TLS
/* send what OpenSSL wrote for the client (records, alerts); -1: closed */
static int tls_push(Engine *e, client *c) {
    if (e->tout.len == 0) return 0;
    int r = client_send_raw(e, c, e->tout.p, e->tout.len);
    e->tout.len = 0; /* (one buffer for the engine: kept, at most a read's worth) */
    return r;
}

/* send close_notify once; returns 1 if it left output to flush first */
static int tls_notify(Engine *e, client *c) {
    if (c->tls != T_OPEN || c->dead) return 0;
    c->tls = T_CLOSED;
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
    if (tls_push(e, c) < 0) return 0;
    return c->out.len > 0;
}
#endif

/* send what is pending; returns -1 if the client is gone (closed here) */
static int client_flush(Engine *e, client *c) {
    if (c->out.len) {
        ssize_t n = send_some(c->fd, c->out.p, c->out.len);
        if (n < 0) {
            client_close(e, c);
            return -1;
        }
        if (n > 0) {
            int was_paused = c->out.len > e->buffer_size;
            buf_consume(&c->out, (size_t)n);
            c->out_progress = now_s();
            /* the engine reads the backend again: from now on the wait is on it (the
               pause was the client's; as the relay's resume_writing) */
            if (was_paused && c->out.len <= e->buffer_size) c->up_activity = c->out_progress;
        }
    }
    buf_trim(&c->out);
    if (c->out.len == 0 && (c->closing || (c->eof && c->state == C_IDLE && !c->in.len))) {
#ifdef FL_TLS
        if (c->tls == T_OPEN && tls_notify(e, c)) { /* close_notify first, then close */
            client_update(e, c);
            return 0;
        }
        if (c->dead) return -1;
#endif
        client_close(e, c);
        return -1;
    }
    client_update(e, c);
    if (c->up) up_update(e, c->up);
    return 0;
}

/* queue bytes (ciphertext for a TLS client) for the client and try to send them now */
static int client_send_raw(Engine *e, client *c, const char *data, size_t n) {
    if (c->dead) return -1;
    if (c->out.len == 0) {
        ssize_t w = send_some(c->fd, data, n);
        if (w < 0) {
            client_close(e, c);
            return -1;
        }
        data += w;
        n -= (size_t)w;
        if (n == 0) return 0;
    }
    if (c->out.len == 0) c->out_progress = now_s();
    if (buf_append(&c->out, data, n) < 0) {
        client_close(e, c);
        return -1;
    }
    client_update(e, c);
    if (c->up) up_update(e, c->up);
    return 0;
}

/* queue response bytes for the client (encrypted first on a TLS connection) */
static int client_write(Engine *e, client *c, const char *data, size_t n) {
    if (c->dead) return -1;
#ifdef FL_TLS
    if (c->tls != T_PLAIN) {
        if (c->tls != T_OPEN) return 0; /* (closing: close_notify went out) */
        while (n > 0) {
            int chunk = n > (1u << 30) ? 1 << 30 : (int)n;
            ERR_clear_error();
            int w = SSL_write(c->ssl, data, chunk); /* (the BIO takes it all) */
            if (w <= 0) {
                ERR_clear_error();
                e->tout.len = 0;
                client_close(e, c);
                return -1;
            }
            data += w;
            n -= (size_t)w;
        }
        return tls_push(e, c);
    }
#endif
    return client_send_raw(e, c, data, n);
}

/* write an error page (if the response has not started) and close */
static void client_fail(Engine *e, client *c, int status, const char *detail) {
    if (c->dead) return;
    abandon_request(e, c);
    e->errors++;
    if (status == 503) py_log(e, 30, "client %s: 503 %s", c->ip, detail);
    if (!c->resp_started) {
        PyObject *page = py_page(e, status, detail);
        if (page != NULL) {
            client_write(e, c, PyBytes_AS_STRING(page), (size_t)PyBytes_GET_SIZE(page));
            Py_DECREF(page);
        }
    }
    if (c->dead) return;
    c->closing = 1;
    c->read_paused = 1;
    client_flush(e, c);
}

/* answer with a page Python made (select / fail) and close */
static void client_page(Engine *e, client *c, PyObject *page) {
    drop_slot(e, c, 0);
    e->errors++;
    client_write(e, c, PyBytes_AS_STRING(page), (size_t)PyBytes_GET_SIZE(page));
    if (c->dead) return;
    c->closing = 1;
    c->read_paused = 1;
    client_flush(e, c);
}

#ifdef FL_TLS
/* a TLS client leaves the fast lane: the Python relay gets one end of a socket pair and
   relays plain HTTP on it; the engine pumps between the pair and the TLS connection */
static void tunnel_start(Engine *e, client *c, const char *data, size_t n) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        py_log(e, 30, "client %s: cannot hand over to the relay: %s", c->ip, strerror(errno));
        client_close(e, c);
        return;
    }
    PyObject *bytes = PyBytes_FromStringAndSize(data, (Py_ssize_t)n);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c->pair_kind};
    if (bytes == NULL || epoll_ctl(e->epfd, EPOLL_CTL_ADD, sv[0], &ev) < 0) {
        if (bytes == NULL) report_error(e, "fast lane escape");
        Py_XDECREF(bytes);
        close(sv[0]);
        close(sv[1]);
        client_close(e, c);
        return;
    }
    c->pfd = sv[0];
    c->pair_kind = K_PAIR;
    c->pevents = EPOLLIN;
    c->state = C_TUNNEL;
    c->in.len = 0;
    if (c->counted) { /* the relay counts the connection from now on */
        c->counted = 0;
        e->nclients--;
    }
    if (c->eof) { /* the client already ended its stream: so does the pair */
        shutdown(c->pfd, SHUT_WR);
        c->pair_shut = 1;
    }
    c->read_paused = c->eof;
    client_update(e, c);
    PyObject *r = PyObject_CallFunction(e->cb_escape, "iOs", sv[1], bytes, c->ip);
    Py_DECREF(bytes);
    if (r == NULL) {
        report_error(e, "fast lane escape");
        close(sv[1]);
        client_close(e, c);
        return;
    }
    Py_DECREF(r);
}
#endif

/* hand the connection to the Python relay, with the bytes read so far */
static void client_escape(Engine *e, client *c, const char *data, size_t n) {
#ifdef FL_TLS
    if (c->tls != T_PLAIN) {
        tunnel_start(e, c, data, n);
        return;
    }
#endif
    PyObject *bytes = PyBytes_FromStringAndSize(data, (Py_ssize_t)n);
    int fd = c->fd;
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
    c->fd = -1;
    client_forget(e, c);
    if (bytes == NULL) {
        report_error(e, "fast lane escape");
        close(fd);
        return;
    }
    PyObject *r = PyObject_CallFunction(e->cb_escape, "iO", fd, bytes);
    Py_DECREF(bytes);
    if (r == NULL) {
        report_error(e, "fast lane escape");
        close(fd);
        return;
    }
    Py_DECREF(r);
}

static void response_reset(client *c) {
    c->resp_started = 0;
    c->framing = FL_FRAME_LENGTH;
    c->up_reuse = 1;
    c->status = 0;
    c->body_left = 0;
}

static void client_process(Engine *e, client *c);

/* write the current request's head upstream */
static void send_request(Engine *e, client *c, upstream *u, int reused) {
    fl_backend *b = backend_at(e, u->backend);
    c->up = u;
    u->client = c;
    if (b != NULL && ++b->busy > b->peak) b->peak = b->busy;
    c->backend = u->backend;
    c->state = C_SENT;
    c->attempt++;
    c->reused = reused;
    response_reset(c);
    double now = now_s();
    c->sent_at = now;
    c->up_activity = now;
    if (b != NULL) {
        b->requests++;
        b->bytes_out += c->req.len;
    }
    /* a failed send leaves nothing pending: the read side reports the failure (EOF or an
       error) and the retry rules apply */
    ssize_t w = send_some(u->fd, c->req.p, c->req.len);
    const char *p = c->req.p + (w > 0 ? w : 0);
    size_t n = w < 0 ? 0 : c->req.len - (size_t)w;
    if (n) {
        if (buf_append(&u->out, p, n) < 0) {
            client_fail(e, c, 502, "The proxy ran out of memory.");
            return;
        }
    }
    up_update(e, u);
}

/* ask Python to connect to `backend` for c's request; the slot passes to its task */
static void ask_connect(Engine *e, client *c, int backend) {
    c->backend = -1;
    c->state = C_WAIT_PY;
    PyObject *tok = token_of(c);
    PyObject *r = tok ? PyObject_CallFunction(e->cb_connect, "Oi", tok, backend) : NULL;
    Py_XDECREF(tok);
    if (r == NULL) {
        report_error(e, "fast lane connect");
        py_release(e, backend, 0);
        client_fail(e, c, 502, "Could not connect to a backend server.");
        return;
    }
    Py_DECREF(r);
}

/* the engine holds a slot on `backend`: use an idle connection or ask Python to connect */
static void use_backend(Engine *e, client *c, int backend) {
    c->backend = backend;
    upstream *u = pool_take(e, backend);
    if (u != NULL) {
        send_request(e, c, u, 1);
        return;
    }
    ask_connect(e, c, backend);
}

/* start the request whose head fl_parse_request recognised at buf */
static void start_request(Engine *e, client *c, const char *buf, const fl_request *rq) {
    size_t cap = rq->head_len + rq->host_len + c->ip_len + FL_MAX_FIELDS + 256;
    c->req.len = 0;
    if (buf_reserve(&c->req, cap) < 0) {
        client_fail(e, c, 502, "The proxy ran out of memory.");
        return;
    }
    ssize_t n = fl_build_request(c->req.p, c->req.cap, buf, rq, c->ip, c->ip_len, c->tls != T_PLAIN);
    if (n < 0) {
        client_fail(e, c, 502, "The proxy could not build the request.");
        return;
    }
    c->req.len = (size_t)n;
    c->method = rq->method;
    c->keep_alive = rq->keep_alive;
    c->attempt = 0;
    response_reset(c);
    e->requests++;
    PyObject *key;
    switch (e->hash_mode) {
    case 1:
        key = PyBytes_FromStringAndSize(c->ip, (Py_ssize_t)c->ip_len);
        break;
    case 2:
        key = PyBytes_FromStringAndSize(buf + rq->url_off, rq->url_len);
        break;
    case 3:
        if (rq->key_off >= 0) {
            key = PyBytes_FromStringAndSize(buf + rq->key_off, rq->key_len);
        } else {
            key = Py_None;
            Py_INCREF(key);
        }
        break;
    default:
        key = Py_None;
        Py_INCREF(key);
    }
    PyObject *args[2] = {token_of(c), key};
    if (args[0] == NULL || key == NULL) {
        Py_XDECREF(args[0]);
        Py_XDECREF(key);
        report_error(e, "fast lane select");
        client_fail(e, c, 503, "No backend server is available right now.");
        return;
    }
    c->state = C_WAIT_PY;
    PyObject *r = PyObject_Vectorcall(e->cb_select, args, 2, NULL);
    Py_DECREF(args[0]);
    Py_DECREF(key);
    if (r == NULL) {
        report_error(e, "fast lane select");
        client_fail(e, c, 503, "No backend server is available right now.");
        return;
    }
    if (PyLong_Check(r)) {
        long idx = PyLong_AsLong(r);
        Py_DECREF(r);
        if (idx < 0 || idx > 1000000 || backend_at(e, (int)idx) == NULL) {
            PyErr_Clear();
            client_fail(e, c, 503, "No backend server is available right now.");
            return;
        }
        use_backend(e, c, (int)idx);
    } else if (PyBytes_Check(r)) {
        client_page(e, c, r);
        Py_DECREF(r);
    } else {
        Py_DECREF(r); /* None: Python took the request over (attach / fail follow) */
    }
}

/* start requests from buf while the client is idle; keep what is left in c->in */
static void client_consume(Engine *e, client *c, const char *buf, size_t len, int from_in) {
    size_t used = 0;
    while (!c->dead && c->state == C_IDLE && !c->closing && c->out.len == 0 && used < len) {
        fl_request rq;
        int r = fl_parse_request(buf + used, len - used, e->max_head, e->hash_header_len ? e->hash_header : NULL,
                                 e->hash_header_len, &rq);
        if (r == FL_INCOMPLETE && c->eof) { /* a partial head and no more to come */
            client_close(e, c);
            return;
        }
        if (r != FL_OK) {
            /* incomplete, or not for the fast lane: the Python relay takes it from here
               (any earlier response has been flushed: c->out is empty) */
            if (from_in) {
                /* copy first: escape frees nothing but the buffer belongs to c */
                fl_buf rest = {0};
                if (buf_append(&rest, buf + used, len - used) < 0) {
                    client_close(e, c);
                    return;
                }
                c->in.len = 0;
                client_escape(e, c, rest.p, rest.len);
                buf_free(&rest);
            } else {
                client_escape(e, c, buf + used, len - used);
            }
            return;
        }
        /* start_request may need the head bytes (hash key) only during the call */
        size_t head = rq.head_len;
        start_request(e, c, buf + used, &rq);
        used += head;
    }
    if (c->dead) return;
    if (from_in) {
        buf_consume(&c->in, used);
        buf_trim(&c->in);
    } else if (used < len) {
        if (buf_append(&c->in, buf + used, len - used) < 0) {
            client_close(e, c);
            return;
        }
    }
    /* bound what waits: one head's worth plus one read */
    int pause = c->eof || c->closing || c->in.len > e->max_head + READ_SIZE;
    if (pause != c->read_paused) {
        c->read_paused = pause;
        client_update(e, c);
    }
}

/* a request finished: release, park or close the upstream, go on with the client */
static void finish(Engine *e, client *c, upstream *u, int reusable) {
    int backend = c->backend;
    c->backend = -1;
    c->up = NULL;
    unbind(e, u);
    /* a complete answer is a passive success, unless a 5xx (it proves nothing) */
    int park_ok = backend >= 0 ? py_release(e, backend, c->status < 500) : 0;
    if (reusable && park_ok && !u->dead)
        park(e, u);
    else
        up_close(e, u);
    c->state = C_IDLE;
    c->last_activity = now_s(); /* idle_timeout_s runs from the end of the answer */
    response_reset(c);
    if (c->dead) return;
    if (!c->keep_alive) {
        c->closing = 1;
        c->read_paused = 1;
        client_flush(e, c);
        return;
    }
    if (c->out.len == 0 && c->in.len) client_process(e, c);
    if (!c->dead && c->eof && c->state == C_IDLE && !c->in.len) {
        c->closing = 1; /* every request that came has its answer */
        client_flush(e, c);
    }
}

/* the upstream failed before a response byte: retry on a fresh connection or 502 */
static void upstream_lost_early(Engine *e, client *c, upstream *u, const char *why) {
    int backend = c->backend;
    fl_backend *b = backend_at(e, backend);
    c->up = NULL;
    up_close(e, u);
    if (c->reused && c->attempt <= e->retry_limit && backend >= 0) {
        /* a stale pooled connection, idempotent bodiless request: once more, fresh */
        if (b) b->retries++;
        ask_connect(e, c, backend);
        return;
    }
    if (b) b->response_errors++;
    if (backend >= 0) {
        py_failure(e, backend, "connection lost mid-request");
        py_log(e, 30, "client %s: backend closed before answering (%s)", c->ip, why);
    }
    client_fail(e, c, 502, "The backend server closed the connection before answering.");
}

/* the backend sent something that is not a valid response */
static void upstream_broken(Engine *e, client *c, upstream *u, const char *reason) {
    fl_backend *b = backend_at(e, c->backend);
    if (b) b->response_errors++;
    c->up = NULL;
    up_close(e, u);
    py_log(e, 30, "client %s: %s", c->ip, reason);
    if (!c->resp_started) {
        client_fail(e, c, 502, "The backend server sent an invalid response.");
    } else {
        client_close(e, c);
    }
}

static int obuf_add(Engine *e, const char *p, size_t n) { return buf_append(&e->obuf, p, n); }

/* relay response bytes from the upstream; data is this read (plus a buffered head) */
static void response_data(Engine *e, client *c, upstream *u, const char *data, size_t len) {
    e->obuf.len = 0;
    size_t pos = 0;
    int complete = 0;
    while (pos < len && !complete) {
        if (!c->resp_started) {
            fl_response rs;
            int r = fl_parse_response(data + pos, len - pos, RESPONSE_MAX_HEAD, &rs);
            if (r == FL_INCOMPLETE) {
                /* keep the partial head (bounded by RESPONSE_MAX_HEAD in the parser) */
                if (data == u->in.p) {
                    buf_consume(&u->in, pos);
                } else if (buf_append(&u->in, data + pos, len - pos) < 0) {
                    upstream_broken(e, c, u, "out of memory");
                    return;
                }
                if (e->obuf.len) client_write(e, c, e->obuf.p, e->obuf.len); /* 1xx */
                return;
            }
            if (r != FL_OK) {
                upstream_broken(e, c, u, "bad response from backend");
                return;
            }
            const char *head = data + pos;
            pos += rs.head_len;
            if (rs.status >= 100 && rs.status < 200) {
                if (rs.status == 101) {
                    upstream_broken(e, c, u, "backend switched protocols unasked");
                    return;
                }
                char line[64 + 1024];
                size_t rl = rs.reason_len < 1024 ? rs.reason_len : 1024;
                int n = snprintf(line, 64, "HTTP/1.1 %d ", rs.status);
                memcpy(line + n, head + rs.reason_off, rl);
                memcpy(line + n + rl, "\r\n\r\n", 4);
                if (obuf_add(e, line, (size_t)n + rl + 4) < 0) goto oom;
                continue;
            }
            fl_backend *b = backend_at(e, c->backend);
            if (b) {
                b->lat[b->lat_head] = (now_s() - c->sent_at) * 1000.0;
                b->lat_head = (b->lat_head + 1) % LATENCY_RING;
                if (b->nlat < LATENCY_RING) b->nlat++;
            }
            c->status = rs.status;
            int framing;
            if (c->method == FL_HEAD || rs.status == 204 || rs.status == 304)
                framing = FL_FRAME_NONE;
            else if (rs.chunked)
                framing = FL_FRAME_CHUNKED;
            else if (rs.has_length)
                framing = FL_FRAME_LENGTH;
            else
                framing = FL_FRAME_CLOSE;
            c->framing = framing;
            if (framing == FL_FRAME_CLOSE || e->stopping) c->keep_alive = 0;
            c->up_reuse = rs.keep_alive && framing != FL_FRAME_CLOSE;
            /* a HEAD response without Content-Length or chunked framing: the backend may
               think its (absent) body runs to the close; as in the Python relay, do not
               reuse the connection */
            if (c->method == FL_HEAD && !rs.has_length && !rs.chunked) c->up_reuse = 0;
            c->body_left = rs.content_length;
            if (framing == FL_FRAME_CHUNKED) fl_chunks_init(&c->chunks);
            size_t need = rs.head_len + FL_MAX_FIELDS + 512;
            if (buf_reserve(&e->obuf, need) < 0) goto oom;
            ssize_t n = fl_build_response(e->obuf.p + e->obuf.len, e->obuf.cap - e->obuf.len, head, &rs,
                                          framing, c->keep_alive, e->hide_server);
            if (n < 0) {
                upstream_broken(e, c, u, "response head too large");
                return;
            }
            e->obuf.len += (size_t)n;
            c->resp_started = 1;
            if (framing == FL_FRAME_NONE || (framing == FL_FRAME_LENGTH && c->body_left == 0))
                complete = 1;
            continue;
        }
        /* body */
        size_t avail = len - pos;
        if (c->framing == FL_FRAME_LENGTH) {
            size_t take = avail < c->body_left ? avail : (size_t)c->body_left;
            if (obuf_add(e, data + pos, take) < 0) goto oom;
            pos += take;
            c->body_left -= take;
            if (c->body_left == 0) complete = 1;
        } else if (c->framing == FL_FRAME_CLOSE) {
            if (obuf_add(e, data + pos, avail) < 0) goto oom;
            pos = len;
        } else if (c->framing == FL_FRAME_CHUNKED) {
            size_t used;
            const char *piece;
            size_t piece_len;
            int r = fl_chunks_feed(&c->chunks, data + pos, avail, MAX_TRAILER, &used, &piece, &piece_len);
            pos += used;
            if (r == FL_CHUNK_BAD) {
                if (e->obuf.len) client_write(e, c, e->obuf.p, e->obuf.len);
                if (!c->dead) upstream_broken(e, c, u, "bad chunked body from backend");
                return;
            }
            if (r == FL_CHUNK_DATA && piece_len) {
                char size[24];
                int n = snprintf(size, sizeof size, "%zx\r\n", piece_len);
                if (obuf_add(e, size, (size_t)n) < 0 || obuf_add(e, piece, piece_len) < 0 ||
                    obuf_add(e, "\r\n", 2) < 0)
                    goto oom;
            } else if (r == FL_CHUNK_DONE) {
                if (obuf_add(e, "0\r\n\r\n", 5) < 0) goto oom;
                complete = 1;
            }
        } else {
            break; /* FL_FRAME_NONE: complete already */
        }
    }
    if (data == u->in.p) u->in.len = 0; /* the buffered head (and what followed) is used */
    if (complete && pos < len) c->up_reuse = 0; /* bytes after the response: unusable */
    if (e->obuf.len) {
        if (client_write(e, c, e->obuf.p, e->obuf.len) < 0) return; /* closed u too */
    }
    if (complete) finish(e, c, u, c->up_reuse);
    return;
oom:
    upstream_broken(e, c, u, "out of memory");
}

/* ------------------------------------------------------------------ events */

static void on_accept(Engine *e) {
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(e->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the connection stays in the backlog and the listener stays ready: stop
                   watching it until the next sweep, else epoll reports it at once again
                   and poll() spins for as long as the process is out of fds */
                int err = errno;
                if (!e->accept_paused && epoll_ctl(e->epfd, EPOLL_CTL_DEL, e->listen_fd, NULL) == 0) {
                    e->accept_paused = 1;
                    py_log(e, 30, "fast lane: cannot accept (%s): pausing until the next sweep", strerror(err));
                }
            }
            return; /* EAGAIN, or an error on one connection (ECONNABORTED...) */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char ip[INET6_ADDRSTRLEN] = "0.0.0.0";
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
        int tls = 0;
#ifdef FL_TLS
        tls = e->ntls > 0;
        SSL *ssl = NULL;
        if (tls) { /* admitted once the handshake is done (a page can then be read) */
            BIO *bio = BIO_new(fl_bio_method);
            ssl = bio ? SSL_new(e->tls_ctx[0]) : NULL;
            if (ssl == NULL) {
                BIO_free(bio);
                ERR_clear_error();
                close(fd);
                continue;
            }
            BIO_set_data(bio, e);
            SSL_set_bio(ssl, bio, bio); /* (one reference, for both directions) */
            SSL_set_accept_state(ssl);
        }
#endif
        if (!tls) {
            PyObject *r = PyObject_CallFunction(e->cb_admit, "s", ip);
            if (r == NULL) {
                report_error(e, "fast lane admit");
                close(fd);
                continue;
            }
            if (PyBytes_Check(r)) { /* refused: the page, then close */
                send(fd, PyBytes_AS_STRING(r), (size_t)PyBytes_GET_SIZE(r), MSG_NOSIGNAL | MSG_DONTWAIT);
                Py_DECREF(r);
                close(fd);
                continue;
            }
            Py_DECREF(r);
        }
        client *c = calloc(1, sizeof *c);
        if (c == NULL) {
#ifdef FL_TLS
            SSL_free(ssl);
#endif
            close(fd);
            continue;
        }
        c->pfd = -1;
#ifdef FL_TLS
        c->ssl = ssl;
        c->tls = tls ? T_HANDSHAKE : T_PLAIN;
#endif
        if (e->nfree == 0) {
            if (e->nslots == e->slots_cap) {
                uint32_t cap = e->slots_cap ? e->slots_cap * 2 : 1024;
                client **s = realloc(e->slots, cap * sizeof *s);
                uint32_t *f = s ? realloc(e->free_slots, cap * sizeof *f) : NULL;
                if (s) e->slots = s;
                if (f == NULL) {
#ifdef FL_TLS
                    SSL_free(c->ssl);
#endif
                    free(c);
                    close(fd);
                    continue;
                }
                e->free_slots = f;
                e->slots_cap = cap;
            }
            e->free_slots[e->nfree++] = e->nslots++;
        }
        c->kind = K_CLIENT;
        c->fd = fd;
        c->slot = e->free_slots[--e->nfree];
        c->gen = ++e->next_gen;
        c->backend = -1;
        c->events = EPOLLIN;
        c->last_activity = c->born = now_s();
        memcpy(c->ip, ip, sizeof ip);
        c->ip_len = strlen(ip);
        response_reset(c);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        e->slots[c->slot] = c;
        if (!tls) {
            c->counted = 1;
            e->nclients++;
        }
        if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            client_close(e, c);
            continue;
        }
    }
}

/* start what c->in holds, if the client is ready for another request */
static void client_process(Engine *e, client *c) {
    if (c->dead || c->state != C_IDLE || c->closing || c->out.len || !c->in.len) return;
    client_consume(e, c, c->in.p, c->in.len, 1);
}

/* n bytes of request data in e->scratch */
static void client_data(Engine *e, client *c, size_t n) {
    c->last_activity = now_s();
    if (c->closing) return; /* reading only to notice a close */
    if (c->state == C_IDLE && c->out.len == 0 && c->in.len == 0) {
        client_consume(e, c, e->scratch, n, 0);
        return;
    }
    if (buf_append(&c->in, e->scratch, n) < 0) {
        client_close(e, c);
        return;
    }
    if (c->state == C_IDLE && c->out.len == 0) {
        client_consume(e, c, c->in.p, c->in.len, 1);
        return;
    }
    if (c->in.len > e->max_head + READ_SIZE && !c->read_paused) {
        c->read_paused = 1;
        client_update(e, c);
    }
}

#ifdef FL_TLS
/* the handshake is done: admission, as for a plain client at accept; -1: refused/closed */
static int tls_admit(Engine *e, client *c) {
    PyObject *r = PyObject_CallFunction(e->cb_admit, "s", c->ip);
    if (r == NULL) {
        report_error(e, "fast lane admit");
        client_close(e, c);
        return -1;
    }
    if (PyBytes_Check(r)) { /* refused: the page (encrypted), then close */
        c->closing = 1;
        c->read_paused = 1;
        client_write(e, c, PyBytes_AS_STRING(r), (size_t)PyBytes_GET_SIZE(r));
        Py_DECREF(r);
        if (!c->dead) client_flush(e, c);
        return -1;
    }
    Py_DECREF(r);
    c->counted = 1;
    e->nclients++;
    return 0;
}

static ssize_t tls_decrypt(Engine *e, client *c, int *eof);

/* read from a TLS client: returns the count of plaintext bytes now in e->scratch (0: none
   yet), or -1 when the client was closed here; *eof: its stream ended (FIN or
   close_notify). Every complete record read is decrypted: OpenSSL keeps no plaintext
   back, so epoll's readiness stays the whole truth */
static ssize_t tls_read(Engine *e, client *c, int *eof) {
    ssize_t n = recv(c->fd, e->tscratch, TLS_READ, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        client_close(e, c);
        return -1;
    }
    if (n == 0) {
        *eof = 1;
        return 0;
    }
    e->tin = e->tscratch;
    e->tin_len = (size_t)n;
    ssize_t got = tls_decrypt(e, c, eof);
    e->tin_len = 0; /* (all of it was taken, unless the connection ended) */
    e->tout.len = 0; /* (an alert for a connection closed without a word) */
    return got;
}

static ssize_t tls_decrypt(Engine *e, client *c, int *eof) {
    if (c->tls == T_HANDSHAKE) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            if (err == SSL_ERROR_WANT_READ) return tls_push(e, c) < 0 ? -1 : 0;
            /* garbage, a refused version, the client's alert: close without a word (as
               the Python relay does) */
            client_close(e, c);
            return -1;
        }
        c->tls = T_OPEN;
        if (tls_push(e, c) < 0 || tls_admit(e, c) < 0) return -1;
    }
    size_t got = 0;
    while (got < READ_SIZE) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, e->scratch + got, (int)(READ_SIZE - got));
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        int err = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_READ) break;
        if (err == SSL_ERROR_ZERO_RETURN) { /* close_notify */
            *eof = 1;
            break;
        }
        client_close(e, c); /* a bad record, an alert */
        return -1;
    }
    /* (post-handshake messages may need an answer: a key update) */
    if (tls_push(e, c) < 0) return -1;
    return (ssize_t)got;
}

/* plaintext from the client to the relay through the pair; -1 if the client was closed */
static int tunnel_in(Engine *e, client *c, const char *data, size_t n) {
    if (c->pair_shut) return 0; /* the relay stopped reading: drop it */
    if (c->in.len == 0) {
        ssize_t w = send_some(c->pfd, data, n);
        if (w < 0) { /* the relay closed: what it wrote still goes out */
            c->pair_shut = 1;
            c->read_paused = 1;
            client_update(e, c);
            return 0;
        }
        data += w;
        n -= (size_t)w;
    }
    if (n && buf_append(&c->in, data, n) < 0) {
        client_close(e, c);
        return -1;
    }
    if (c->in.len > e->buffer_size) c->read_paused = 1; /* the relay is not reading */
    client_update(e, c);
    return 0;
}

static void tunnel_eof(Engine *e, client *c) {
    c->eof = 1;
    c->read_paused = 1;
    if (c->in.len == 0 && !c->pair_shut) {
        shutdown(c->pfd, SHUT_WR);
        c->pair_shut = 1;
    }
    client_update(e, c);
}

static void on_tunnel_client(Engine *e, client *c, uint32_t events) {
    if (events & EPOLLOUT) {
        if (client_flush(e, c) < 0) return;
    }
    if (c->read_paused) {
        if (events & (EPOLLHUP | EPOLLERR)) client_close(e, c);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    int eof = 0;
    ssize_t n = tls_read(e, c, &eof);
    if (n < 0 || c->dead) return;
    if (n > 0) {
        c->last_activity = now_s();
        if (tunnel_in(e, c, e->scratch, (size_t)n) < 0) return;
    }
    if (eof) tunnel_eof(e, c);
}

/* the pair's end: the relay's answers to encrypt, room for waiting input */
static void on_pair(Engine *e, client *c, uint32_t events) {
    if ((events & EPOLLOUT) && c->in.len) {
        ssize_t w = send_some(c->pfd, c->in.p, c->in.len);
        if (w < 0) {
            c->in.len = 0;
            c->pair_shut = 1;
            c->read_paused = 1;
        } else {
            buf_consume(&c->in, (size_t)w);
        }
        if (c->in.len == 0) {
            buf_trim(&c->in);
            if (c->eof && !c->pair_shut) {
                shutdown(c->pfd, SHUT_WR);
                c->pair_shut = 1;
            }
        }
        if (!c->eof && !c->pair_shut && c->read_paused && c->in.len <= e->buffer_size) c->read_paused = 0;
        client_update(e, c);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    if (c->out.len > e->buffer_size && !(events & (EPOLLHUP | EPOLLERR))) return; /* the client lags */
    ssize_t n = recv(c->pfd, e->scratch, READ_SIZE, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n > 0) {
        client_write(e, c, e->scratch, (size_t)n);
        return;
    }
    /* the relay closed the connection: what it wrote goes out (then close_notify), and
       the client is closed */
    close(c->pfd);
    c->pfd = -1;
    c->in.len = 0;
    c->closing = 1;
    c->read_paused = 1;
    client_update(e, c);
    client_flush(e, c);
}
#endif

static void on_client(Engine *e, client *c, uint32_t events) {
#ifdef FL_TLS
    if (c->state == C_TUNNEL) {
        on_tunnel_client(e, c, events);
        return;
    }
#endif
    if (events & EPOLLOUT) {
        if (client_flush(e, c) < 0) return;
        client_process(e, c);
        if (c->dead) return;
    }
    if (c->read_paused) {
        /* not reading (closing, or too much waiting): a hang-up still ends it, else
           epoll would report it again and again */
        if (events & (EPOLLHUP | EPOLLERR)) client_close(e, c);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    ssize_t n;
    int eof = 0;
#ifdef FL_TLS
    if (c->tls != T_PLAIN) {
        n = tls_read(e, c, &eof);
        if (n < 0 || c->dead) return;
        if (n == 0 && !eof) return;
    } else
#endif
    {
        n = recv(c->fd, e->scratch, READ_SIZE, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            client_close(e, c);
            return;
        }
        eof = n == 0;
    }
    if (n > 0) {
        client_data(e, c, (size_t)n);
        if (!eof || c->dead) return;
#ifdef FL_TLS
        if (c->state == C_TUNNEL) { /* handed over by this read, which also ended */
            tunnel_eof(e, c);
            return;
        }
#endif
    }
    /* end of the client's stream: with nothing to answer, close; else answer what
       came (a half-close after a request, as `nc -N` does), then close */
    if (c->state == C_IDLE && !c->in.len && !c->out.len) {
        client_close(e, c);
        return;
    }
    c->eof = 1;
    c->read_paused = 1;
    client_update(e, c);
    if (c->state == C_IDLE && !c->in.len) { /* only output left */
        c->closing = 1;
        client_flush(e, c);
    } else {
        client_process(e, c);
    }
}

static void on_upstream(Engine *e, upstream *u, uint32_t events) {
    client *c = u->client;
    if ((events & EPOLLOUT) && u->out.len) {
        ssize_t w = send_some(u->fd, u->out.p, u->out.len);
        if (w < 0)
            u->out.len = 0; /* failed: the read side reports it */
        else
            buf_consume(&u->out, (size_t)w);
        up_update(e, u);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    /* paused while the client lags (a hang-up is read anyway: epoll repeats it) */
    if (c != NULL && c->out.len > e->buffer_size && !(events & (EPOLLHUP | EPOLLERR))) return;
    ssize_t n = recv(u->fd, e->scratch, READ_SIZE, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (c == NULL) { /* an idle pooled connection must not talk; EOF: it closed */
        up_close(e, u);
        return;
    }
    if (n <= 0) {
        if (!c->resp_started) {
            upstream_lost_early(e, c, u, n == 0 ? "end of stream" : strerror(errno));
        } else if (c->framing == FL_FRAME_CLOSE) {
            finish(e, c, u, 0); /* the close ends the body (keep_alive is 0) */
        } else {
            fl_backend *b = backend_at(e, c->backend);
            if (b) b->response_errors++;
            client_close(e, c); /* truncated response: the client must see the break */
        }
        return;
    }
    fl_backend *b = backend_at(e, u->backend);
    if (b) b->bytes_in += (uint64_t)n;
    c->up_activity = now_s();
    if (u->in.len) {
        if (buf_append(&u->in, e->scratch, (size_t)n) < 0) {
            upstream_broken(e, c, u, "out of memory");
            return;
        }
        response_data(e, c, u, u->in.p, u->in.len);
    } else {
        response_data(e, c, u, e->scratch, (size_t)n);
    }
}

/* an engine method starts: structs closed from now on stay allocated until it ends */
static void enter(Engine *e) { e->depth++; }

/* free the structs closed meanwhile, unless an outer engine method (a handler callback
   called this one from inside poll, sweep...) may still be using them */
static void reap(Engine *e) {
    if (--e->depth > 0) return;
    while (e->dead_clients) {
        client *c = e->dead_clients;
        e->dead_clients = c->next_dead;
        buf_free(&c->in);
        buf_free(&c->out);
        buf_free(&c->req);
#ifdef FL_TLS
        SSL_free(c->ssl);
#endif
        free(c);
    }
    while (e->dead_ups) {
        upstream *u = e->dead_ups;
        e->dead_ups = u->next_dead;
        buf_free(&u->in);
        buf_free(&u->out);
        free(u);
    }
}

/* ------------------------------------------------------------------ Engine methods */

static PyObject *Engine_poll(Engine *e, PyObject *Py_UNUSED(ignored)) {
    struct epoll_event evs[MAX_EVENTS];
    if (e->epfd < 0) Py_RETURN_NONE;
    enter(e);
    int n = epoll_wait(e->epfd, evs, MAX_EVENTS, 0);
    for (int i = 0; i < n; i++) {
        int *kind = evs[i].data.ptr;
        if (*kind == K_LISTEN) {
            if (e->listen_fd >= 0) on_accept(e);
        } else if (*kind == K_CLIENT) {
            client *c = evs[i].data.ptr;
            if (!c->dead) on_client(e, c, evs[i].events);
#ifdef FL_TLS
        } else if (*kind == K_PAIR) {
            client *c = (client *)((char *)kind - offsetof(client, pair_kind));
            if (!c->dead && c->pfd >= 0) on_pair(e, c, evs[i].events);
#endif
        } else {
            upstream *u = evs[i].data.ptr;
            if (!u->dead) on_upstream(e, u, evs[i].events);
        }
    }
    reap(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_sweep(Engine *e, PyObject *Py_UNUSED(ignored)) {
    double now = now_s();
    enter(e);
    if (e->accept_paused && e->listen_fd >= 0 && e->epfd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &e->listen_kind};
        if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->listen_fd, &ev) == 0) e->accept_paused = 0;
    }
    for (uint32_t i = 0; i < e->nslots; i++) {
        client *c = e->slots[i];
        if (c == NULL || c->dead) continue;
        if (c->out.len && now - c->out_progress > e->client_timeout) {
            /* the client has not taken any output for client_timeout_s: the wait is on
               the client, not the backend (no 504, no failure charged to the backend) */
            py_log(e, 20, "client %s: not reading its response for %.0fs: closing", c->ip,
                   e->client_timeout);
            client_close(e, c);
            continue;
        }
        if (c->tls == T_HANDSHAKE) { /* the handshake, bounded as in the relay */
            if (now - c->born > e->client_timeout) client_close(e, c);
            continue;
        }
        if (c->state == C_IDLE) {
            /* between requests (a pipelined one waits only while output is pending) */
            if (!c->out.len && now - c->last_activity > e->idle_timeout) client_close(e, c);
            continue;
        }
        if (c->state == C_SENT && c->out.len <= e->buffer_size) { /* (else paused: the client) */
            double quiet = c->up_activity > c->last_activity ? c->up_activity : c->last_activity;
            if (now - quiet > e->server_timeout) {
                fl_backend *b = backend_at(e, c->backend);
                if (b) b->response_errors++;
                if (c->backend >= 0) py_failure(e, c->backend, "response timeout");
                client_fail(e, c, 504, "the backend did not answer in time");
            }
        }
    }
    for (int i = 0; i < e->nbackends; i++) {
        fl_backend *b = &e->backends[i];
        b->peak_prev = b->peak; /* (the sweep runs about once a second) */
        b->peak = b->busy;
        upstream **pp = &b->idle;
        while (*pp) {
            upstream *u = *pp;
            if (now - u->idle_since > e->idle_timeout) {
                *pp = u->next_idle;
                u->next_idle = NULL;
                u->in_pool = 0;
                b->nidle--;
                up_close(e, u);
                continue;
            }
            pp = &u->next_idle;
        }
    }
    reap(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_attach(Engine *e, PyObject *args) {
    unsigned long long token;
    int fd, backend;
    if (!PyArg_ParseTuple(args, "Kii", &token, &fd, &backend)) return NULL;
    if (backend < 0 || backend > 1000000 || backend_at(e, backend) == NULL) {
        close(fd);
        PyErr_SetString(PyExc_ValueError, "bad backend index");
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    enter(e);
    upstream *u = up_new(e, fd, backend);
    if (u == NULL) {
        close(fd);
        py_release(e, backend, 0);
        client *c = client_by_token(e, token);
        if (c) client_fail(e, c, 502, "Could not connect to a backend server.");
        reap(e);
        Py_RETURN_NONE;
    }
    client *c = client_by_token(e, token);
    if (c == NULL || c->state != C_WAIT_PY) {
        /* the client has gone: keep the connection for someone else */
        if (py_release(e, backend, 1))
            park(e, u);
        else
            up_close(e, u);
    } else {
        send_request(e, c, u, 0);
    }
    reap(e);
    Py_RETURN_NONE;
}

/* Python's wait queue gave the request `token` a slot on `backend`: the engine takes the
   slot and goes on as after `select` (an idle pooled connection, else `connect`) */
static PyObject *Engine_proceed(Engine *e, PyObject *args) {
    unsigned long long token;
    int backend;
    if (!PyArg_ParseTuple(args, "Ki", &token, &backend)) return NULL;
    if (backend < 0 || backend > 1000000 || backend_at(e, backend) == NULL) {
        PyErr_SetString(PyExc_ValueError, "bad backend index");
        return NULL;
    }
    enter(e);
    client *c = client_by_token(e, token);
    if (c == NULL || c->state != C_WAIT_PY)
        py_release(e, backend, 0); /* the client has gone: nothing to connect for */
    else
        use_backend(e, c, backend);
    reap(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_fail(Engine *e, PyObject *args) {
    unsigned long long token;
    PyObject *page;
    if (!PyArg_ParseTuple(args, "KS", &token, &page)) return NULL;
    enter(e);
    client *c = client_by_token(e, token);
    if (c != NULL && c->state == C_WAIT_PY) client_page(e, c, page);
    reap(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_configure(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"max_header_bytes", "buffer_size", "max_idle_upstream", "idle_timeout_s",
                            "server_timeout_s", "hash_mode", "hash_header", "stopping", "retry_limit",
                            "client_timeout_s", "hide_server", NULL};
    Py_ssize_t max_head = (Py_ssize_t)e->max_head, buffer_size = (Py_ssize_t)e->buffer_size;
    int max_idle = e->max_idle, hash_mode = e->hash_mode, stopping = e->stopping, retry = e->retry_limit;
    int hide_server = e->hide_server;
    double idle = e->idle_timeout, server = e->server_timeout, client_t = e->client_timeout;
    const char *hh = NULL;
    Py_ssize_t hhl = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|nniddiy#pidp", names, &max_head, &buffer_size, &max_idle,
                                     &idle, &server, &hash_mode, &hh, &hhl, &stopping, &retry, &client_t,
                                     &hide_server))
        return NULL;
    if (max_head < 256 || max_head > 1 << 20 || buffer_size < 1024 || max_idle < 0 || hash_mode < 0 ||
        hash_mode > 3 || hhl >= (Py_ssize_t)sizeof e->hash_header || retry < 0) {
        PyErr_SetString(PyExc_ValueError, "fast lane setting out of range");
        return NULL;
    }
    e->max_head = (size_t)max_head;
    e->buffer_size = (size_t)buffer_size;
    e->max_idle = max_idle;
    e->idle_timeout = idle;
    e->server_timeout = server;
    e->client_timeout = client_t;
    e->hash_mode = hash_mode;
    e->stopping = stopping;
    e->retry_limit = retry;
    e->hide_server = hide_server;
    if (hh != NULL) {
        for (Py_ssize_t i = 0; i < hhl; i++) {
            char ch = hh[i];
            e->hash_header[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        e->hash_header[hhl] = 0;
        e->hash_header_len = (size_t)hhl;
    }
    Py_RETURN_NONE;
}

#ifdef FL_TLS
/* Python's default for server contexts (3.10+), so both data planes offer the same */
#define FL_CIPHERS \
    "@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"

static int no_password(char *buf, int size, int rwflag, void *u) {
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0; /* an encrypted key fails to load instead of prompting on a terminal */
}

static int alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
    static const unsigned char ours[] = "\x08http/1.1";
    (void)s;
    (void)arg;
    unsigned char *chosen = NULL;
    if (SSL_select_next_proto(&chosen, outlen, ours, sizeof ours - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no http/1.1 offered: go on without ALPN */
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

/* every ClientHello: the certificate for the server name, from the set current now */
static int sni_select(SSL *s, int *alert, void *arg) {
    Engine *e = arg;
    (void)alert;
    if (e->ntls == 0) return SSL_TLSEXT_ERR_OK;
    long idx = 0;
    const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    if (name != NULL && e->ntls > 1 && e->cb_pick != NULL) {
        PyObject *r = PyObject_CallFunction(e->cb_pick, "y", name);
        if (r == NULL) {
            report_error(e, "fast lane tls_pick");
        } else {
            idx = PyLong_AsLong(r);
            if (idx == -1 && PyErr_Occurred()) PyErr_Clear();
            Py_DECREF(r);
            if (idx < 0 || idx >= e->ntls) idx = 0;
        }
    }
    if (SSL_get_SSL_CTX(s) != e->tls_ctx[idx]) SSL_set_SSL_CTX(s, e->tls_ctx[idx]);
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *tls_context(Engine *e, int min_version, const char *cert, const char *key, char *err,
                            size_t errlen) {
    const char *step = "cannot create a TLS context";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) goto fail;
    step = "TLS settings";
    if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1) goto fail;
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* an idle keep-alive connection keeps no record buffers */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, FL_CIPHERS) != 1) goto fail;
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    step = "cannot load the certificate";
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) goto fail;
    step = "cannot load the key";
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) goto fail;
    step = "the key does not belong to the certificate";
    if (SSL_CTX_check_private_key(ctx) != 1) goto fail;
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_select);
    SSL_CTX_set_tlsext_servername_arg(ctx, e);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"parlour", 7);
    return ctx;
fail:;
    char why[256] = "";
    unsigned long code = ERR_peek_last_error();
    if (code) ERR_error_string_n(code, why, sizeof why);
    if (ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH)
        step = "the key does not belong to the certificate";
    ERR_clear_error();
    snprintf(err, errlen, "%s (%s / %s): %s", step, cert, key, why);
    SSL_CTX_free(ctx);
    return NULL;
}
#endif

/* tls_load(min_version, [(cert, key), ...]): the certificates for new handshakes ([0] the
   default, then those tls_pick indexes); all load or nothing changes */
static PyObject *Engine_tls_load(Engine *e, PyObject *args) {
#ifndef FL_TLS
    (void)e;
    (void)args;
    PyErr_SetString(PyExc_RuntimeError, "the fast lane was built without OpenSSL");
    return NULL;
#else
    int minv;
    PyObject *chains;
    if (!PyArg_ParseTuple(args, "iO!", &minv, &PyList_Type, &chains)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(chains);
    if (n < 1 || n > 100000 || (minv != TLS1_2_VERSION && minv != TLS1_3_VERSION)) {
        PyErr_SetString(PyExc_ValueError, "tls_load: bad version or certificate list");
        return NULL;
    }
    if (e->handler == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine not initialised");
        return NULL;
    }
    if (e->cb_pick == NULL) {
        e->cb_pick = PyObject_GetAttrString(e->handler, "tls_pick");
        if (e->cb_pick == NULL) return NULL;
    }
    SSL_CTX **ctxs = calloc((size_t)n, sizeof *ctxs);
    if (ctxs == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *cert = NULL, *key = NULL;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(chains, i), "O&O&", PyUnicode_FSConverter, &cert,
                              PyUnicode_FSConverter, &key)) {
            Py_XDECREF(cert);
            goto fail;
        }
        char err[1024];
        ctxs[i] = tls_context(e, minv, PyBytes_AS_STRING(cert), PyBytes_AS_STRING(key), err, sizeof err);
        Py_DECREF(cert);
        Py_DECREF(key);
        if (ctxs[i] == NULL) {
            PyErr_SetString(PyExc_ValueError, err);
            goto fail;
        }
    }
    /* live connections hold references to the contexts they use */
    for (int i = 0; i < e->ntls; i++) SSL_CTX_free(e->tls_ctx[i]);
    free(e->tls_ctx);
    e->tls_ctx = ctxs;
    e->ntls = (int)n;
    Py_RETURN_NONE;
fail:
    for (Py_ssize_t i = 0; i < n; i++) SSL_CTX_free(ctxs[i]);
    free(ctxs);
    return NULL;
#endif
}

static PyObject *Engine_drop_backend(Engine *e, PyObject *arg) {
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    enter(e);
    if (i >= 0 && i < e->nbackends) {
        upstream *u;
        while ((u = pool_take(e, (int)i)) != NULL) up_close(e, u);
    }
    reap(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_harvest(Engine *e, PyObject *Py_UNUSED(ignored)) {
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    for (int i = 0; i < e->nbackends; i++) {
        fl_backend *b = &e->backends[i];
        if (!b->requests && !b->bytes_in && !b->bytes_out && !b->response_errors && !b->retries && !b->nlat)
            continue;
        PyObject *lat = PyList_New((Py_ssize_t)b->nlat);
        if (lat == NULL) goto fail;
        size_t start = (b->lat_head + LATENCY_RING - b->nlat) % LATENCY_RING;
        for (size_t k = 0; k < b->nlat; k++) {
            PyObject *f = PyFloat_FromDouble(b->lat[(start + k) % LATENCY_RING]);
            if (f == NULL) {
                Py_DECREF(lat);
                goto fail;
            }
            PyList_SET_ITEM(lat, (Py_ssize_t)k, f);
        }
        PyObject *t = Py_BuildValue("(iKKKKKN)", i, (unsigned long long)b->requests,
                                    (unsigned long long)b->bytes_in, (unsigned long long)b->bytes_out,
                                    (unsigned long long)b->response_errors, (unsigned long long)b->retries, lat);
        if (t == NULL || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
        b->requests = b->bytes_in = b->bytes_out = b->response_errors = b->retries = 0;
        b->nlat = b->lat_head = 0;
    }
    PyObject *r = Py_BuildValue("(KKN)", (unsigned long long)e->requests, (unsigned long long)e->errors, list);
    e->requests = e->errors = 0;
    return r;
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *Engine_stop_accepting(Engine *e, PyObject *Py_UNUSED(ignored)) {
    if (e->listen_fd >= 0) {
        close(e->listen_fd);
        e->listen_fd = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_shutdown_idle(Engine *e, PyObject *Py_UNUSED(ignored)) {
    enter(e);
    for (uint32_t i = 0; i < e->nslots; i++) {
        client *c = e->slots[i];
        if (c && !c->dead && c->state == C_IDLE && !c->out.len) client_close(e, c);
    }
    reap(e);
    Py_RETURN_NONE;
}

static void close_all(Engine *e) {
    enter(e);
    for (uint32_t i = 0; i < e->nslots; i++) {
        client *c = e->slots[i];
        if (c && !c->dead) client_close(e, c);
    }
    for (int i = 0; i < e->nbackends; i++) {
        upstream *u;
        while ((u = pool_take(e, i)) != NULL) up_close(e, u);
    }
    reap(e);
    if (e->listen_fd >= 0) {
        close(e->listen_fd);
        e->listen_fd = -1;
    }
}

static PyObject *Engine_close(Engine *e, PyObject *Py_UNUSED(ignored)) {
    close_all(e);
    if (e->epfd >= 0) {
        close(e->epfd);
        e->epfd = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_fileno(Engine *e, PyObject *Py_UNUSED(ignored)) { return PyLong_FromLong(e->epfd); }

static PyObject *Engine_get_clients(Engine *e, void *Py_UNUSED(closure)) { return PyLong_FromLong(e->nclients); }

static PyObject *Engine_get_busy(Engine *e, void *Py_UNUSED(closure)) {
    for (uint32_t i = 0; i < e->nslots; i++) {
        client *c = e->slots[i];
        if (c && !c->dead && (c->state != C_IDLE || c->out.len)) Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static int Engine_init(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"listen_fd", "handler", NULL};
    int fd;
    PyObject *handler;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO", names, &fd, &handler)) return -1;
    if (e->epfd >= 0 || e->handler != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
        return -1;
    }
    const char *cbs[] = {"admit", "select", "connect", "release", "failure", "escape", "page", "log"};
    PyObject **slots[] = {&e->cb_admit,   &e->cb_select, &e->cb_connect, &e->cb_release,
                          &e->cb_failure, &e->cb_escape, &e->cb_page,    &e->cb_log};
    for (int i = 0; i < 8; i++) {
        *slots[i] = PyObject_GetAttrString(handler, cbs[i]);
        if (*slots[i] == NULL) return -1;
    }
    e->scratch = malloc(READ_SIZE);
    e->tscratch = malloc(TLS_READ);
    if (e->scratch == NULL || e->tscratch == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    e->listen_kind = K_LISTEN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &e->listen_kind};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    e->listen_fd = fd;
    Py_INCREF(handler);
    e->handler = handler;
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    (void)args;
    (void)kw;
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (e == NULL) return NULL;
    e->epfd = -1;
    e->listen_fd = -1;
    e->max_head = 8192;
    e->buffer_size = 65536;
    e->max_idle = 32;
    e->idle_timeout = 60.0;
    e->server_timeout = 30.0;
    e->client_timeout = 30.0;
    e->retry_limit = 2;
    return (PyObject *)e;
}

static void Engine_dealloc(Engine *e) {
    close_all(e);
    if (e->epfd >= 0) close(e->epfd);
    Py_XDECREF(e->handler);
    Py_XDECREF(e->cb_admit);
    Py_XDECREF(e->cb_select);
    Py_XDECREF(e->cb_connect);
    Py_XDECREF(e->cb_release);
    Py_XDECREF(e->cb_failure);
    Py_XDECREF(e->cb_escape);
    Py_XDECREF(e->cb_page);
    Py_XDECREF(e->cb_log);
    Py_XDECREF(e->cb_pick);
#ifdef FL_TLS
    for (int i = 0; i < e->ntls; i++) SSL_CTX_free(e->tls_ctx[i]);
    free(e->tls_ctx);
#endif
    free(e->tscratch);
    buf_free(&e->tout);
    free(e->slots);
    free(e->free_slots);
    free(e->backends);
    free(e->scratch);
    buf_free(&e->obuf);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMethodDef Engine_methods[] = {
    {"poll", (PyCFunction)Engine_poll, METH_NOARGS, "Handle the ready events (uvloop calls this)."},
    {"sweep", (PyCFunction)Engine_sweep, METH_NOARGS, "Apply the idle and server timeouts."},
    {"attach", (PyCFunction)Engine_attach, METH_VARARGS, "attach(token, fd, backend): a connection for a waiting request."},
    {"proceed", (PyCFunction)Engine_proceed, METH_VARARGS, "proceed(token, backend): a queued request got a slot."},
    {"fail", (PyCFunction)Engine_fail, METH_VARARGS, "fail(token, page): answer a waiting request with page and close."},
    {"configure", (PyCFunction)(void (*)(void))Engine_configure, METH_VARARGS | METH_KEYWORDS, "Set limits and timeouts."},
    {"drop_backend", (PyCFunction)Engine_drop_backend, METH_O, "Close the idle connections to a backend."},
    {"tls_load", (PyCFunction)Engine_tls_load, METH_VARARGS,
     "tls_load(min_version, [(cert, key), ...]): terminate TLS with these certificates."},
    {"harvest", (PyCFunction)Engine_harvest, METH_NOARGS, "Counters since the last harvest."},
    {"stop_accepting", (PyCFunction)Engine_stop_accepting, METH_NOARGS, "Close the listening socket."},
    {"shutdown_idle", (PyCFunction)Engine_shutdown_idle, METH_NOARGS, "Close clients between requests."},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "Close every connection and the epoll set."},
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, "The epoll fd to watch for readability."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"clients", (getter)Engine_get_clients, NULL, "Client connections in the fast lane.", NULL},
    {"busy", (getter)Engine_get_busy, NULL, "Whether a request is in flight.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "parlour.proxy._fastlane.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The fast lane's epoll engine (see docs/design/proxy-fast-lane.md).",
    .tp_new = Engine_new,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

static PyObject *skew_clock(PyObject *Py_UNUSED(self), PyObject *arg) {
    double by = PyFloat_AsDouble(arg);
    if (by == -1.0 && PyErr_Occurred()) return NULL;
    clock_skew += by;
    return PyFloat_FromDouble(clock_skew);
}

static PyMethodDef module_methods[] = {
    {"_skew_clock", skew_clock, METH_O,
     "_skew_clock(seconds) -> total: move every engine's clock (for tests of timeouts)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastlane_module = {
    PyModuleDef_HEAD_INIT, "_fastlane", "Native fast lane of parlour proxy.", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastlane(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
#ifdef FL_TLS
    if (fl_bio_method == NULL && fl_bio_init() < 0) {
        PyErr_SetString(PyExc_ImportError, "cannot set up the fast lane's OpenSSL BIO");
        return NULL;
    }
#endif
    PyObject *m = PyModule_Create(&fastlane_module);
    if (m == NULL) return NULL;
    Py_INCREF(&EngineType);
#ifdef FL_TLS
    PyObject *tls = Py_True;
#else
    PyObject *tls = Py_False;
#endif
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 || fl_add_head_functions(m) < 0 ||
        PyModule_AddObjectRef(m, "TLS", tls) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
