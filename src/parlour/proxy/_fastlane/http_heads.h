/* Sans-I/O HTTP/1.1 head recognition and rewriting for the proxy's native fast lane.
 *
 * The fast lane relays only the common case natively: complete, bodiless, plainly valid
 * requests. Anything else (valid or not) is handed to the Python relay, which is the
 * reference implementation (httptools + parlour.proxy.headers). So the request side is a
 * conservative *recogniser*: whatever it accepts, the Python relay must accept too and must
 * forward byte for byte the same upstream head (a hypothesis test checks exactly this).
 *
 * Responses cannot be handed over (the request is already upstream), so the response side
 * is a full, strict parser: a head it rejects is a bad response (502), as in Python.
 *
 * No allocation, no I/O, no globals. Every length is bounded by the caller's limits.
 */
#ifndef PARLOUR_HTTP_HEADS_H
#define PARLOUR_HTTP_HEADS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FL_MAX_FIELDS 100 /* = parlour.proxy.headers.MAX_HEADERS */

/* results of fl_parse_request / fl_parse_response */
#define FL_OK 1          /* a complete head was recognised; *out is filled */
#define FL_INCOMPLETE 0  /* no end of head yet (and still within max_head bytes) */
#define FL_PUNT (-1)     /* request: not for the fast lane (hand the bytes to Python) */
#define FL_BAD (-2)      /* response: malformed or unsupported (502), or head too large */

enum fl_method { FL_GET = 0, FL_HEAD = 1, FL_OPTIONS = 2 };

typedef struct {
    uint32_t name_off, name_len;   /* offsets into the parsed buffer */
    uint32_t value_off, value_len; /* value without leading/trailing SP/HTAB */
} fl_field;

typedef struct {
    size_t head_len;               /* bytes of the head, through the blank line */
    int method;                    /* enum fl_method */
    uint32_t url_off, url_len;     /* origin-form target ("/...") */
    uint32_t host_off, host_len;   /* the Host value */
    int32_t key_off;               /* the hash header's value (first one), -1 if absent */
    uint32_t key_len;
    int keep_alive;                /* 0 when the client sent Connection: close */
    int nfields;                   /* fields forwarded as they are, in order */
    fl_field fields[FL_MAX_FIELDS];
} fl_request;

/* Recognise one request head at the start of buf[0:len].
 *
 * FL_OK only when ALL of these hold (else FL_PUNT, or FL_INCOMPLETE while no CRLF CRLF
 * has been seen in the first max_head bytes; FL_PUNT once len > max_head without one, and
 * at once for a prefix that already breaks a rule, e.g. a bare LF):
 *  - request line exactly `METHOD SP target SP HTTP/1.1 CRLF`, METHOD one of GET, HEAD,
 *    OPTIONS; target starts with '/', bytes 0x21-0x7e only; no leading empty lines
 *  - every line ends with CRLF (no bare LF, no bare CR anywhere), no obs-fold
 *    (a line starting with SP/HTAB), at most FL_MAX_FIELDS fields
 *  - field name: 1+ tchar (RFC 9110 token), then ':' immediately; value: after optional
 *    SP/HTAB, bytes 0x21-0x7e plus inner SP/HTAB only (no obs-text >= 0x80, no CTL);
 *    a value may be empty; trailing SP/HTAB -> FL_PUNT (llhttp keeps it in the value,
 *    so Python would forward it as it is, and reject "Content-Length: 0 ")
 *  - exactly one Host field
 *  - no Transfer-Encoding, Upgrade, Expect, TE, Trailer, Forwarded, Via,
 *    X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host field (any case)
 *  - Content-Length absent, or exactly one whose value is all '0' digits (1-18 digits)
 *  - Connection and Proxy-Connection fields (llhttp reads both; any number) contain only
 *    the tokens keep-alive / close
 *    (case-insensitive, comma separated with optional SP/HTAB, empty elements allowed);
 *    close anywhere -> keep_alive = 0
 *  - head (request line through blank line) no longer than max_head bytes
 * Forwarded fields (`fields`): every field except Connection, Keep-Alive and
 * Proxy-Connection (hop-by-hop, dropped as the Python relay does), in order; Host and
 * Content-Length are forwarded as they are.
 * hash_header: lower-case field name whose first value is the hash key, or NULL.
 */
int fl_parse_request(const char *buf, size_t len, size_t max_head, const char *hash_header,
                     size_t hash_header_len, fl_request *out);

/* The head to send upstream for a request fl_parse_request accepted from buf:
 *   METHOD SP target SP "HTTP/1.1" CRLF
 *   for each forwarded field: name ": " value CRLF
 *   "X-Forwarded-For: " client_ip CRLF
 *   "X-Forwarded-Proto: http" CRLF   ("https" when `https`: the client came over TLS)
 *   "X-Forwarded-Host: " host CRLF
 *   "Via: 1.1 parlour" CRLF CRLF
 * which is what parlour.proxy.headers.build_request_head returns for it.
 * Returns the length written, or -1 when cap is too small. */
ssize_t fl_build_request(char *out, size_t cap, const char *buf, const fl_request *req,
                         const char *client_ip, size_t client_ip_len, int https);

typedef struct {
    size_t head_len;
    int version_minor;             /* HTTP/1.x */
    int status;                    /* 100-999 */
    uint32_t reason_off, reason_len;
    int chunked;                   /* Transfer-Encoding: chunked (the only coding allowed) */
    int has_length;                /* Content-Length present (once: llhttp rejects repeats) */
    uint64_t content_length;
    int keep_alive;                /* HTTP/1.1 without Connection: close, or 1.0 with keep-alive
                                      (Connection or Proxy-Connection, as llhttp; close wins) */
    int nfields;                   /* fields to relay, in order: every field but the
                                      hop-by-hop ones (Connection, Keep-Alive,
                                      Proxy-Connection, TE, Trailer, Transfer-Encoding,
                                      Upgrade) and those a Connection field names */
    fl_field fields[FL_MAX_FIELDS];
    int length_field;              /* index in fields of the first Content-Length, -1 */
} fl_response;

/* Parse one response head at the start of buf[0:len]: FL_OK, FL_INCOMPLETE or FL_BAD.
 * Strict: status line `HTTP/1.x SP 3DIGIT SP reason CRLF` (x 0 or 1, as llhttp; reason
 * may be empty, the SP before it may be missing when it is), bytes of reason 0x09,
 * 0x20-0x7e, 0x80-0xff; fields as for requests but obs-text (>= 0x80) allowed in values
 * and trailing SP/HTAB trimmed; CRLF line ends only (llhttp rejects bare LF); obs-fold,
 * NUL, bare CR, bare LF -> FL_BAD; Transfer-Encoding other than a single "chunked" ->
 * FL_BAD; Content-Length non-digit, > 18 digits, or repeated (llhttp rejects even equal
 * repeats) -> FL_BAD; both Transfer-Encoding and Content-Length -> FL_BAD; more than
 * FL_MAX_FIELDS fields or head longer than max_head -> FL_BAD. A 101 is no error here
 * (the engine, which never asks for an upgrade, treats it as a bad response). */
int fl_parse_response(const char *buf, size_t len, size_t max_head, fl_response *out);

/* Framing of the response toward the client, decided by the engine */
enum fl_framing { FL_FRAME_LENGTH = 0, FL_FRAME_CHUNKED = 1, FL_FRAME_NONE = 2, FL_FRAME_CLOSE = 3 };

/* The head to send to an HTTP/1.1 client, as parlour.proxy.headers.build_response_head
 * builds it with client_version "1.1":
 *   "HTTP/1.1 " status SP reason CRLF       (the reason as the backend sent it)
 *   relayed fields "name: value" CRLF, minus Content-Length unless framing is LENGTH/NONE,
 *     minus Server when hide_server
 *   "Via: 1.1 parlour" CRLF
 *   ["Transfer-Encoding: chunked" CRLF]     (framing CHUNKED)
 *   ["Connection: close" CRLF]              (framing CLOSE or !keep_alive)
 *   CRLF
 * Returns the length written, or -1 when cap is too small. */
ssize_t fl_build_response(char *out, size_t cap, const char *buf, const fl_response *resp,
                          int framing, int keep_alive, int hide_server);

/* Incremental chunked-body decoder (RFC 9112 §7.1): chunk-size (hex, at most 15 digits),
 * optional chunk extensions (skipped; `;name[=token|quoted-string]` repeated, no BWS, as
 * llhttp accepts them), CRLF, data, CRLF (llhttp rejects bare LF here too); the last chunk
 * "0", then trailer fields (skipped, same byte rules as field lines, at most max_trailer
 * bytes of field lines in all), then the empty line. */
typedef struct {
    int state;
    uint64_t remaining;   /* data bytes left in the current chunk */
    int digits;
    size_t trailer_bytes;
} fl_chunks;

#define FL_CHUNK_MORE 0   /* consumed everything given, need more input */
#define FL_CHUNK_DATA 1   /* (*data, *data_len) is a piece of body data (inside buf) */
#define FL_CHUNK_DONE 2   /* the body ended; *consumed stops right after it */
#define FL_CHUNK_BAD (-2) /* malformed */

void fl_chunks_init(fl_chunks *c);
/* Consume from buf[0:len]; *consumed is set to the bytes used by this call. Returns at the
 * first data piece (FL_CHUNK_DATA: call again with the rest), at the end of the body, on
 * an error, or when the input is used up (FL_CHUNK_MORE). */
int fl_chunks_feed(fl_chunks *c, const char *buf, size_t len, size_t max_trailer,
                   size_t *consumed, const char **data, size_t *data_len);

#endif
