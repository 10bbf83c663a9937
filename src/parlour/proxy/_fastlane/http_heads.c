/* Sans-I/O HTTP/1.1 heads for the fast lane: see http_heads.h for the rules.
 *
 * Every scanner looks at buf[0:end] only, end = min(len, max_head, INT32_MAX), so offsets
 * fit the uint32_t/int32_t fields; running out of bytes there is "incomplete" (or, when
 * the caller gave more than max_head bytes, "too large"). Byte classes come from one
 * constant table; nothing is allocated and nothing global is written.
 */
#include "http_heads.h"

#include <limits.h>
#include <string.h>

/* byte classes (RFC 9110 §5.6.2 tchar, §5.5 field-vchar / obs-text, §5.6.3 OWS) */
enum { C_TCHAR = 1, C_VCHAR = 2, C_OBS = 4, C_WS = 8, C_HEX = 16 };

static const uint8_t cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  8,  0,  0,  0,  0,  0,  0,
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
    8,  3,  2,  3,  3,  3,  3,  3,  2,  2,  3,  3,  2,  3,  3,  2,
    19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 2,  2,  2,  2,  2,  2,
    2,  19, 19, 19, 19, 19, 19, 3,  3,  3,  3,  3,  3,  3,  3,  3,
    3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  2,  2,  2,  3,  3,
    3,  19, 19, 19, 19, 19, 19, 3,  3,  3,  3,  3,  3,  3,  3,  3,
    3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  2,  3,  2,  3,  0,
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
    4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
};

static inline uint8_t lower(uint8_t c) { return (uint8_t)(c | ((uint8_t)(c - 'A') < 26u) << 5); }

/* a[0:n] equals the lower-case literal lit[0:n], ignoring the case of a */
static int ieq(const uint8_t *a, const char *lit, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (lower(a[k]) != (uint8_t)lit[k])
            return 0;
    return 1;
}

static int ieq2(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (lower(a[k]) != lower(b[k]))
            return 0;
    return 1;
}

static size_t min_end(size_t len, size_t max_head)
{
    size_t end = len < max_head ? len : max_head;
    return end < (size_t)INT32_MAX ? end : (size_t)INT32_MAX;
}

/* ------------------------------------------------------------------ field names */

enum kind {
    K_OTHER, K_HOST, K_CONTENT_LENGTH, K_CONNECTION, K_KEEP_ALIVE, K_PROXY_CONNECTION,
    K_TE, K_TRAILER, K_TRANSFER_ENCODING, K_UPGRADE, K_EXPECT, K_FORWARDED, K_VIA,
    K_XFF, K_XFP, K_XFH, K_XRI,
};

static enum kind name_kind(const uint8_t *n, size_t len)
{
#define IS(lit) ieq(n, lit, sizeof(lit) - 1)
    switch (len) { /* the length alone rules out almost every name */
    case 2: return IS("te") ? K_TE : K_OTHER;
    case 3: return IS("via") ? K_VIA : K_OTHER;
    case 4: return IS("host") ? K_HOST : K_OTHER;
    case 6: return IS("expect") ? K_EXPECT : K_OTHER;
    case 7: return IS("trailer") ? K_TRAILER : IS("upgrade") ? K_UPGRADE : K_OTHER;
    case 9: return IS("forwarded") ? K_FORWARDED : IS("x-real-ip") ? K_XRI : K_OTHER;
    case 10: return IS("connection") ? K_CONNECTION : IS("keep-alive") ? K_KEEP_ALIVE : K_OTHER;
    case 14: return IS("content-length") ? K_CONTENT_LENGTH : K_OTHER;
    case 15: return IS("x-forwarded-for") ? K_XFF : K_OTHER;
    case 16:
        return IS("proxy-connection") ? K_PROXY_CONNECTION
               : IS("x-forwarded-host") ? K_XFH
                                        : K_OTHER;
    case 17:
        return IS("transfer-encoding") ? K_TRANSFER_ENCODING
               : IS("x-forwarded-proto") ? K_XFP
                                         : K_OTHER;
    default: return K_OTHER;
    }
#undef IS
}

/* RFC 9110 §7.6.1: hop-by-hop fields, never relayed */
static int hop_by_hop(enum kind k)
{
    return k == K_CONNECTION || k == K_KEEP_ALIVE || k == K_PROXY_CONNECTION || k == K_TE ||
           k == K_TRAILER || k == K_TRANSFER_ENCODING || k == K_UPGRADE;
}

/* The next element of a comma-separated list value v[0:n] (RFC 9110 §5.6.1: elements
 * trimmed of OWS, empty ones allowed), from *i on: sets [*s, *e) and moves *i past the
 * comma. Returns 0 when the list is done. */
static int next_element(const uint8_t *v, size_t n, size_t *i, size_t *s, size_t *e)
{
    if (*i > n)
        return 0;
    size_t a = *i;
    size_t b = a;
    while (b < n && v[b] != ',')
        b++;
    *i = b + 1;
    while (a < b && (cls[v[a]] & C_WS))
        a++;
    while (b > a && (cls[v[b - 1]] & C_WS))
        b--;
    *s = a;
    *e = b;
    return 1;
}

/* Connection tokens (RFC 9110 §7.6.1: #connection-option), as a mask */
enum { T_CLOSE = 1, T_KEEP = 2, T_UPGRADE = 4, T_OTHER = 8 };

static int conn_tokens(const uint8_t *v, size_t n)
{
    int mask = 0;
    size_t i = 0, s, e;
    while (next_element(v, n, &i, &s, &e)) {
        if (e == s)
            continue;
        if (e - s == 5 && ieq(v + s, "close", 5))
            mask |= T_CLOSE;
        else if (e - s == 10 && ieq(v + s, "keep-alive", 10))
            mask |= T_KEEP;
        else if (e - s == 7 && ieq(v + s, "upgrade", 7))
            mask |= T_UPGRADE;
        else
            mask |= T_OTHER;
    }
    return mask;
}

/* does a Connection value list the field name name[0:len]? */
static int conn_names(const uint8_t *v, size_t n, const uint8_t *name, size_t len)
{
    size_t i = 0, s, e;
    while (next_element(v, n, &i, &s, &e))
        if (e - s == len && ieq2(v + s, name, len))
            return 1;
    return 0;
}

/* ------------------------------------------------------------------ field lines */

/* One field line at p[*pos] (RFC 9112 §5: name ":" OWS value OWS CRLF; no space before
 * the colon, §5.1). Value bytes are those of class `ok` with inner SP/HTAB. Returns 1 and
 * moves *pos past the CRLF, 0 when end comes first, -1 when malformed (this includes
 * bare LF, bare CR, CTLs and obs-fold, whose line starts with SP/HTAB: an empty name).
 * *tws tells whether the value had trailing SP/HTAB (left out of f->value). */
static int field_line(const uint8_t *p, size_t end, size_t *pos, uint8_t ok, fl_field *f,
                      int *tws)
{
    size_t i = *pos;
    const size_t start = i;
    while (i < end && (cls[p[i]] & C_TCHAR))
        i++;
    if (i == end)
        return 0;
    if (i == start || p[i] != ':')
        return -1;
    f->name_off = (uint32_t)start;
    f->name_len = (uint32_t)(i - start);
    i++;
    while (i < end && (cls[p[i]] & C_WS))
        i++;
    const size_t vstart = i;
    size_t vend = i;
    for (; i < end; i++) {
        const uint8_t k = cls[p[i]];
        if (k & ok)
            vend = i + 1;
        else if (!(k & C_WS))
            break;
    }
    if (i == end)
        return 0;
    if (p[i] != '\r')
        return -1;
    if (i + 1 == end)
        return 0;
    if (p[i + 1] != '\n')
        return -1;
    f->value_off = (uint32_t)vstart;
    f->value_len = (uint32_t)(vend - vstart);
    *tws = vend != i;
    *pos = i + 2;
    return 1;
}

/* 1+ '0' digits, at most 18 (what headers.validate_request reads as Content-Length 0) */
static int all_zeros(const uint8_t *v, size_t n)
{
    if (n == 0 || n > 18)
        return 0;
    for (size_t k = 0; k < n; k++)
        if (v[k] != '0')
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ requests */

int fl_parse_request(const char *buf, size_t len, size_t max_head, const char *hash_header,
                     size_t hash_header_len, fl_request *out)
{
    static const char version[] = " HTTP/1.1\r\n";
    const uint8_t *p = (const uint8_t *)buf;
    const size_t end = min_end(len, max_head);
    const char *method;
    size_t i, mlen;
    int hosts = 0, lengths = 0, total = 0;

    out->nfields = 0;
    out->key_off = -1;
    out->key_len = 0;
    out->keep_alive = 1;
    if (end == 0)
        goto more;
    switch (p[0]) { /* no leading empty lines (RFC 9112 §2.2 allows them; Python does it) */
    case 'G': method = "GET /", mlen = 5, out->method = FL_GET; break;
    case 'H': method = "HEAD /", mlen = 6, out->method = FL_HEAD; break;
    case 'O': method = "OPTIONS /", mlen = 9, out->method = FL_OPTIONS; break;
    default: return FL_PUNT;
    }
    for (i = 1; i < mlen; i++) { /* the method, one SP, and the '/' of an origin-form */
        if (i == end)
            goto more;
        if (p[i] != (uint8_t)method[i])
            return FL_PUNT;
    }
    out->url_off = (uint32_t)(i - 1);
    while (i < end && (cls[p[i]] & C_VCHAR))
        i++;
    out->url_len = (uint32_t)(i - out->url_off);
    for (size_t k = 0; k < sizeof version - 1; k++, i++) {
        if (i == end)
            goto more;
        if (p[i] != (uint8_t)version[k])
            return FL_PUNT;
    }

    for (;;) {
        if (i == end)
            goto more;
        if (p[i] == '\r') { /* the empty line ends the head */
            if (i + 1 == end)
                goto more;
            if (p[i + 1] != '\n')
                return FL_PUNT;
            i += 2;
            break;
        }
        if (total == FL_MAX_FIELDS)
            return FL_PUNT;
        fl_field f;
        int tws;
        const int r = field_line(p, end, &i, C_VCHAR, &f, &tws);
        if (r == 0)
            goto more;
        /* llhttp keeps trailing whitespace in a value: Python would forward it as it is
         * (and reject "Content-Length: 0 "), so such heads are left to Python */
        if (r < 0 || tws)
            return FL_PUNT;
        total++;
        const uint8_t *name = p + f.name_off, *value = p + f.value_off;
        if (hash_header != NULL && out->key_off < 0 && f.name_len == hash_header_len &&
            ieq(name, hash_header, hash_header_len)) {
            out->key_off = (int32_t)f.value_off;
            out->key_len = f.value_len;
        }
        switch (name_kind(name, f.name_len)) {
        case K_OTHER:
            break;
        case K_HOST:
            hosts++;
            out->host_off = f.value_off;
            out->host_len = f.value_len;
            break;
        case K_CONTENT_LENGTH:
            if (++lengths > 1 || !all_zeros(value, f.value_len))
                return FL_PUNT; /* a body: Python's */
            break;
        case K_CONNECTION:
        case K_PROXY_CONNECTION: { /* llhttp reads both for keep-alive and upgrades */
            const int t = conn_tokens(value, f.value_len);
            if (t & (T_UPGRADE | T_OTHER))
                return FL_PUNT; /* upgrades, and fields named hop-by-hop: Python's */
            if (t & T_CLOSE)
                out->keep_alive = 0;
            continue; /* hop-by-hop: not forwarded */
        }
        case K_KEEP_ALIVE:
            continue;
        default: /* framing, upgrades, Expect, and forwarding fields: Python's */
            return FL_PUNT;
        }
        out->fields[out->nfields++] = f;
    }
    if (hosts != 1) /* RFC 9112 §3.2: exactly one Host in HTTP/1.1 */
        return FL_PUNT;
    out->head_len = i;
    return FL_OK;
more:
    return len > end ? FL_PUNT : FL_INCOMPLETE;
}

/* ------------------------------------------------------------------ output */

typedef struct {
    char *p;
    size_t cap, n;
    int over; /* something did not fit */
} writer;

static void put(writer *w, const void *s, size_t n)
{
    if (w->over || n > w->cap - w->n) {
        w->over = 1;
        return;
    }
    memcpy(w->p + w->n, s, n);
    w->n += n;
}

#define PUT_LIT(w, lit) put(w, lit, sizeof(lit) - 1)

static ssize_t written(const writer *w)
{
    return w->over || w->n > (SIZE_MAX >> 1) ? -1 : (ssize_t)w->n;
}

static void put_field(writer *w, const char *buf, const fl_field *f)
{
    put(w, buf + f->name_off, f->name_len);
    PUT_LIT(w, ": ");
    put(w, buf + f->value_off, f->value_len);
    PUT_LIT(w, "\r\n");
}

ssize_t fl_build_request(char *out, size_t cap, const char *buf, const fl_request *req,
                         const char *client_ip, size_t client_ip_len, int https)
{
    static const char *const methods[] = {"GET ", "HEAD ", "OPTIONS "};
    writer w = {out, cap, 0, 0};
    if (req->method < FL_GET || req->method > FL_OPTIONS)
        return -1;
    put(&w, methods[req->method], strlen(methods[req->method]));
    put(&w, buf + req->url_off, req->url_len);
    PUT_LIT(&w, " HTTP/1.1\r\n");
    for (int k = 0; k < req->nfields; k++)
        put_field(&w, buf, &req->fields[k]);
    PUT_LIT(&w, "X-Forwarded-For: ");
    put(&w, client_ip, client_ip_len);
    if (https)
        PUT_LIT(&w, "\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ");
    else
        PUT_LIT(&w, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ");
    put(&w, buf + req->host_off, req->host_len);
    PUT_LIT(&w, "\r\nVia: 1.1 parlour\r\n\r\n");
    return written(&w);
}

/* ------------------------------------------------------------------ responses */

int fl_parse_response(const char *buf, size_t len, size_t max_head, fl_response *out)
{
    static const char proto[] = "HTTP/1.";
    const uint8_t *p = (const uint8_t *)buf;
    const size_t end = min_end(len, max_head);
    uint8_t kinds[FL_MAX_FIELDS];
    int n = 0, te = 0, tokens = 0, named = 0;
    size_t i;

    out->chunked = out->has_length = 0;
    out->content_length = 0;
    out->nfields = 0;
    out->length_field = -1;
    /* status line (RFC 9112 §4): HTTP/1.0 or 1.1 (llhttp rejects other versions) */
    for (i = 0; i < sizeof proto - 1; i++) {
        if (i == end)
            goto more;
        if (p[i] != (uint8_t)proto[i])
            return FL_BAD;
    }
    if (i == end)
        goto more;
    if (p[i] != '0' && p[i] != '1')
        return FL_BAD;
    out->version_minor = p[i++] - '0';
    if (i == end)
        goto more;
    if (p[i++] != ' ')
        return FL_BAD;
    out->status = 0;
    for (int d = 0; d < 3; d++, i++) {
        if (i == end)
            goto more;
        if (p[i] < '0' || p[i] > '9' || (d == 0 && p[i] == '0'))
            return FL_BAD;
        out->status = out->status * 10 + (p[i] - '0');
    }
    if (i == end)
        goto more;
    if (p[i] == ' ') /* reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ), or none */
        i++;
    else if (p[i] != '\r')
        return FL_BAD;
    out->reason_off = (uint32_t)i;
    while (i < end && (cls[p[i]] & (C_VCHAR | C_OBS | C_WS)))
        i++;
    out->reason_len = (uint32_t)(i - out->reason_off);
    if (i == end || i + 1 == end)
        goto more_or_bad;
    if (p[i] != '\r' || p[i + 1] != '\n')
        return FL_BAD;
    i += 2;

    for (;;) {
        if (i == end)
            goto more;
        if (p[i] == '\r') {
            if (i + 1 == end)
                goto more;
            if (p[i + 1] != '\n')
                return FL_BAD;
            i += 2;
            break;
        }
        if (n == FL_MAX_FIELDS)
            return FL_BAD;
        fl_field *f = &out->fields[n];
        int tws;
        const int r = field_line(p, end, &i, C_VCHAR | C_OBS, f, &tws);
        if (r == 0)
            goto more;
        if (r < 0)
            return FL_BAD;
        const uint8_t *value = p + f->value_off;
        const enum kind k = name_kind(p + f->name_off, f->name_len);
        kinds[n++] = (uint8_t)k;
        if (k == K_CONTENT_LENGTH) {
            /* RFC 9110 §8.6 allows equal repeats, but llhttp (the Python relay) rejects
             * any repeat, so this does too */
            if (out->has_length || f->value_len == 0 || f->value_len > 18)
                return FL_BAD;
            for (uint32_t d = 0; d < f->value_len; d++) {
                if (value[d] < '0' || value[d] > '9')
                    return FL_BAD;
                out->content_length = out->content_length * 10 + (uint64_t)(value[d] - '0');
            }
            out->has_length = 1;
        } else if (k == K_TRANSFER_ENCODING) {
            /* RFC 9112 §6.1: only chunked, once (no other codings to undo) */
            if (te++ || f->value_len != 7 || !ieq(value, "chunked", 7))
                return FL_BAD;
            out->chunked = 1;
        } else if (k == K_CONNECTION) {
            const int t = conn_tokens(value, f->value_len);
            tokens |= t;
            named |= t & T_OTHER;
        } else if (k == K_PROXY_CONNECTION) { /* llhttp's keep-alive reads it too */
            tokens |= conn_tokens(value, f->value_len);
        }
    }
    /* RFC 9112 §6.3: both framings at once is a smuggling vector */
    if (out->chunked && out->has_length)
        return FL_BAD;
    out->keep_alive = !(tokens & T_CLOSE) && (out->version_minor == 1 || (tokens & T_KEEP));
    /* RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing: the
     * connection closes after it, whatever Connection says */
    if (out->chunked && out->version_minor == 0)
        out->keep_alive = 0;
    out->head_len = i;

    /* relay every field but the hop-by-hop ones and those a Connection field names: decide
     * for all fields first (the Connection values must stay in place), then compact */
    uint8_t drop[FL_MAX_FIELDS];
    for (int j = 0; j < n; j++) {
        drop[j] = (uint8_t)hop_by_hop((enum kind)kinds[j]);
        const fl_field *f = &out->fields[j];
        /* a Connection option never removes framing (Content-Length) or Host: dropping
         * them would change how the message is delimited or routed (see headers.py) */
        const int protected_field = kinds[j] == K_CONTENT_LENGTH || kinds[j] == K_HOST;
        for (int c = 0; named && !drop[j] && !protected_field && c < n; c++) /* rare */
            drop[j] = kinds[c] == K_CONNECTION &&
                      conn_names(p + out->fields[c].value_off, out->fields[c].value_len,
                                 p + f->name_off, f->name_len);
    }
    int w = 0;
    for (int j = 0; j < n; j++) {
        if (drop[j])
            continue;
        if (kinds[j] == K_CONTENT_LENGTH && out->length_field < 0)
            out->length_field = w;
        out->fields[w++] = out->fields[j];
    }
    out->nfields = w;
    return FL_OK;
more_or_bad:
    if (i < end && p[i] != '\r')
        return FL_BAD; /* a byte no reason may hold */
more:
    return len > end ? FL_BAD : FL_INCOMPLETE;
}

ssize_t fl_build_response(char *out, size_t cap, const char *buf, const fl_response *resp,
                          int framing, int keep_alive, int hide_server)
{
    writer w = {out, cap, 0, 0};
    const int keep_length = framing == FL_FRAME_LENGTH || framing == FL_FRAME_NONE;
    char status[5];
    if (resp->status < 100 || resp->status > 999)
        return -1;
    status[0] = (char)('0' + resp->status / 100);
    status[1] = (char)('0' + resp->status / 10 % 10);
    status[2] = (char)('0' + resp->status % 10);
    status[3] = ' ';
    PUT_LIT(&w, "HTTP/1.1 ");
    put(&w, status, 4);
    put(&w, buf + resp->reason_off, resp->reason_len);
    PUT_LIT(&w, "\r\n");
    for (int k = 0; k < resp->nfields; k++) {
        const fl_field *f = &resp->fields[k];
        if (!keep_length && f->name_len == 14 &&
            ieq((const uint8_t *)buf + f->name_off, "content-length", 14))
            continue;
        if (hide_server && f->name_len == 6 && ieq((const uint8_t *)buf + f->name_off, "server", 6))
            continue;
        put_field(&w, buf, f);
    }
    PUT_LIT(&w, "Via: 1.1 parlour\r\n");
    if (framing == FL_FRAME_CHUNKED)
        PUT_LIT(&w, "Transfer-Encoding: chunked\r\n");
    if (framing == FL_FRAME_CLOSE || !keep_alive)
        PUT_LIT(&w, "Connection: close\r\n");
    PUT_LIT(&w, "\r\n");
    return written(&w);
}

/* ------------------------------------------------------------------ chunked bodies */

/* RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF;
 * §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ),
 * taken here without BWS, as llhttp does; §7.1.2: trailer-section = *( field-line CRLF ) */
enum {
    S_SIZE,        /* first hex digit */
    S_SIZE_MORE,   /* more digits, ';' or CR */
    S_EXT_NAME0,   /* after ';': first tchar of a name */
    S_EXT_NAME,    /* tchar, '=', ';' or CR */
    S_EXT_VALUE0,  /* after '=': a token or a quoted-string */
    S_EXT_TOKEN,   /* tchar, ';' or CR */
    S_EXT_QUOTED,  /* qdtext, '\\' or '"' */
    S_EXT_QPAIR,   /* the byte after '\\' */
    S_EXT_QEND,    /* after the closing '"': ';' or CR */
    S_SIZE_LF,
    S_DATA,
    S_DATA_CR,
    S_DATA_LF,
    S_TRAILER0,    /* start of a trailer line, or CR of the empty line */
    S_TRAILER_NAME,
    S_TRAILER_VALUE,
    S_TRAILER_LF,
    S_END_LF,
    S_DONE,
    S_BAD,
};

void fl_chunks_init(fl_chunks *c)
{
    c->state = S_SIZE;
    c->remaining = 0;
    c->digits = 0;
    c->trailer_bytes = 0;
}

static int hexval(uint8_t b) { return b <= '9' ? b - '0' : lower(b) - 'a' + 10; }

int fl_chunks_feed(fl_chunks *c, const char *buf, size_t len, size_t max_trailer,
                   size_t *consumed, const char **data, size_t *data_len)
{
    const uint8_t *p = (const uint8_t *)buf;
    size_t i = 0;
    *data = NULL;
    *data_len = 0;
    while (i < len) {
        const uint8_t b = p[i];
        const uint8_t k = cls[b];
        switch (c->state) {
        case S_SIZE:
        case S_SIZE_MORE:
            if (k & C_HEX) {
                if (++c->digits > 15)
                    goto bad;
                c->remaining = c->remaining << 4 | (uint64_t)hexval(b);
                c->state = S_SIZE_MORE;
            } else if (c->state == S_SIZE) {
                goto bad;
            } else if (b == ';') {
                c->state = S_EXT_NAME0;
            } else if (b == '\r') {
                c->state = S_SIZE_LF;
            } else {
                goto bad;
            }
            break;
        case S_EXT_NAME0:
            if (!(k & C_TCHAR))
                goto bad;
            c->state = S_EXT_NAME;
            break;
        case S_EXT_NAME:
        case S_EXT_TOKEN:
        case S_EXT_QEND:
            if ((k & C_TCHAR) && c->state != S_EXT_QEND)
                break;
            if (b == '=' && c->state == S_EXT_NAME)
                c->state = S_EXT_VALUE0;
            else if (b == ';')
                c->state = S_EXT_NAME0;
            else if (b == '\r')
                c->state = S_SIZE_LF;
            else
                goto bad;
            break;
        case S_EXT_VALUE0:
            if (b == '"')
                c->state = S_EXT_QUOTED;
            else if (k & C_TCHAR)
                c->state = S_EXT_TOKEN;
            else
                goto bad;
            break;
        case S_EXT_QUOTED: /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
            if (b == '"')
                c->state = S_EXT_QEND;
            else if (b == '\\')
                c->state = S_EXT_QPAIR;
            else if (!(k & (C_VCHAR | C_OBS | C_WS)))
                goto bad;
            break;
        case S_EXT_QPAIR: /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (!(k & (C_VCHAR | C_OBS | C_WS)))
                goto bad;
            c->state = S_EXT_QUOTED;
            break;
        case S_SIZE_LF:
            if (b != '\n')
                goto bad;
            c->digits = 0;
            c->state = c->remaining ? S_DATA : S_TRAILER0;
            break;
        case S_DATA: {
            size_t piece = len - i;
            if (piece > c->remaining)
                piece = (size_t)c->remaining;
            c->remaining -= piece;
            if (c->remaining == 0)
                c->state = S_DATA_CR;
            *data = buf + i;
            *data_len = piece;
            *consumed = i + piece;
            return FL_CHUNK_DATA;
        }
        case S_DATA_CR:
            if (b != '\r')
                goto bad;
            c->state = S_DATA_LF;
            break;
        case S_DATA_LF:
            if (b != '\n')
                goto bad;
            c->state = S_SIZE;
            break;
        case S_TRAILER0:
            if (b == '\r') {
                c->state = S_END_LF;
                break;
            }
            if (!(k & C_TCHAR))
                goto bad; /* includes obs-fold (RFC 9112 §5.2) */
            c->state = S_TRAILER_NAME;
            goto trailer_byte;
        case S_TRAILER_NAME:
            if (b == ':')
                c->state = S_TRAILER_VALUE;
            else if (!(k & C_TCHAR))
                goto bad;
            goto trailer_byte;
        case S_TRAILER_VALUE:
            if (b == '\r')
                c->state = S_TRAILER_LF;
            else if (!(k & (C_VCHAR | C_OBS | C_WS)))
                goto bad;
            goto trailer_byte;
        case S_TRAILER_LF:
            if (b != '\n')
                goto bad;
            c->state = S_TRAILER0;
        trailer_byte:
            if (++c->trailer_bytes > max_trailer)
                goto bad;
            break;
        case S_END_LF:
            if (b != '\n')
                goto bad;
            c->state = S_DONE;
            *consumed = i + 1;
            return FL_CHUNK_DONE;
        case S_DONE:
            *consumed = i;
            return FL_CHUNK_DONE;
        default:
            goto bad;
        }
        i++;
    }
    *consumed = i;
    if (c->state == S_DONE)
        return FL_CHUNK_DONE;
    return c->state == S_BAD ? FL_CHUNK_BAD : FL_CHUNK_MORE;
bad:
    c->state = S_BAD;
    *consumed = i;
    return FL_CHUNK_BAD;
}
