/* whereabouts relay: the compiled `whereabouts` CNI executable that install-cni puts on the nodes.
 *
 * The container runtime starts the CNI executable once per call; starting Python costs most of a call's CPU
 * when the node daemon serves it. This program does what whereabouts.cni.main's relay does, byte for byte
 * (wire format there and in whereabouts.node.daemon): it hands the call (the CNI_, NODENAME and WHEREABOUTS_
 * environment variables and stdin) to the node daemon and relays its answer. Whenever the Python relay would
 * serve the call in process (no daemon, a dead one, a declined call) it execs the Python plugin instead:
 * `whereabouts-python` in this executable's own directory, with the same arguments and environment,
 * WHEREABOUTS_SOCKET set empty (so it does not try the daemon again), the stdin already read, and the reason
 * in WHEREABOUTS_RELAY_REASON (printed as its own). So does a call without CNI_COMMAND (the help text).
 * When the fallback is the daemon's doing it appends one byte to `fallbacks` beside the socket, as the Python
 * relay does: `n` no socket, `u` nobody listens (or one neither root nor this user: SO_PEERCRED), `d` the
 * daemon went away mid-call, `b` busy (code 11).
 * When nobody listens there and WHEREABOUTS_STANDIN names seconds, the call goes to the stand-in daemon on
 * the socket's path + ".standin" the same way (no byte written for that try); when nobody listens there
 * either, the Python plugin is exec'd with the stand-in's socket in WHEREABOUTS_RELAY_STANDIN: it starts one
 * (whereabouts.cni.main.start_standin) and serves the call.
 *
 * install-cni writes environment defaults after SETTINGS_MARKER in its copy (as the Python launcher's
 * os.environ.setdefault lines; whereabouts.node.relay): NUL-terminated "KEY=VALUE" entries ("#..." and entries
 * without "=" are comments) up to an empty one.
 *
 * Build: scripts/build-relay.sh OUT (gcc -O2 -static: the host may be of any distro).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef WITHOUT_MEMFD /* the tests' build of the pipe path, as on a kernel before 3.17 */
#define memfd_create(name, flags) (errno = ENOSYS, -1)
#endif

#define SOCKET_ENV "WHEREABOUTS_SOCKET"
#define DEFAULT_SOCKET "/run/whereabouts/plugin.sock"
#define REASON_ENV "WHEREABOUTS_RELAY_REASON"
#define STANDIN_ENV "WHEREABOUTS_STANDIN"
#define STANDIN_START_ENV "WHEREABOUTS_RELAY_STANDIN"
#define STANDIN_SUFFIX ".standin"
#define PYTHON_NAME "whereabouts-python"
#ifndef CONNECT_WAIT /* the tests build one with shorter waits */
#define CONNECT_WAIT 30 /* seconds a call waits for a busy daemon to take it */
#endif
#ifndef ANSWER_WAIT
#define ANSWER_WAIT 60 /* seconds for each read of its answer */
#endif
#define TEXT(x) #x
#define SECONDS(x) TEXT(x) " s"
#define REASON_MAX 16384 /* bytes of a reason passed in the environment (one variable may hold 128 KiB) */
#define SETTINGS_MARKER "\n#whereabouts-relay-settings#\n"
#define SETTINGS_SIZE 4096

/* Not static and laundered before use: the compiler must not fold the bytes install-cni rewrites. */
char whereabouts_relay_settings[SETTINGS_SIZE] = SETTINGS_MARKER;

extern char **environ;

typedef struct {
    char *data;
    size_t len, cap;
} buf;

enum outcome { SERVED, FALLBACK, BUSY };

typedef struct {
    enum outcome outcome;
    uint32_t status; /* SERVED: the exit status */
    buf out;         /* SERVED: stdout; BUSY: what `what` says the daemon did not do */
    buf reason;      /* FALLBACK: why (empty: no daemon is installed at all) */
    char tally;      /* FALLBACK or BUSY caused by the daemon: the byte for `fallbacks`, else 0 */
    int absent;      /* FALLBACK: nobody listens (no socket, or its connect failed) */
} answer;

static void out_of_memory(void) {
    static const char msg[] = "whereabouts: out of memory\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void reserve(buf *b, size_t more) {
    if (more <= b->cap - b->len)
        return;
    if (more > SIZE_MAX / 2 - b->len)
        out_of_memory();
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < more)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data)
        out_of_memory();
    b->data = data;
    b->cap = cap;
}

static void append(buf *b, const void *data, size_t len) {
    reserve(b, len + 1);
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0'; /* always a C string too */
}

static void appends(buf *b, const char *text) { append(b, text, strlen(text)); }

static uint32_t u32_at(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static int write_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n, len -= (size_t)n;
    }
    return 0;
}

/* ---- the environment: the caller's, with install-cni's defaults ---- */

typedef struct {
    char **entries;
    size_t len, cap;
} envlist;

static void env_push(envlist *e, char *entry) {
    if (e->len + 2 > e->cap) {
        e->cap = e->cap ? e->cap * 2 : 64;
        e->entries = realloc(e->entries, e->cap * sizeof *e->entries);
        if (!e->entries)
            out_of_memory();
    }
    e->entries[e->len++] = entry;
    e->entries[e->len] = NULL;
}

static size_t key_len(const char *entry) {
    const char *eq = strchr(entry, '=');
    return eq ? (size_t)(eq - entry) : SIZE_MAX;
}

/* The first entry of `key` (Python's os.environ and getenv both take the first), or -1. */
static ssize_t env_find(const envlist *e, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < e->len; i++)
        if (key_len(e->entries[i]) == n && !memcmp(e->entries[i], key, n))
            return (ssize_t)i;
    return -1;
}

static const char *env_get(const envlist *e, const char *key) {
    ssize_t i = env_find(e, key);
    return i < 0 ? NULL : e->entries[i] + strlen(key) + 1;
}

static void env_drop(envlist *e, const char *key) {
    size_t n = strlen(key), kept = 0;
    for (size_t i = 0; i < e->len; i++)
        if (!(key_len(e->entries[i]) == n && !memcmp(e->entries[i], key, n)))
            e->entries[kept++] = e->entries[i];
    e->len = kept;
    e->entries[kept] = NULL;
}

static envlist caller_env(void) {
    envlist e = {0};
    env_push(&e, NULL);
    e.len = 0; /* an empty list, NULL-terminated */
    for (char **p = environ; *p; p++)
        env_push(&e, *p);
    const char *s = whereabouts_relay_settings;
    __asm__("" : "+r"(s)); /* launder: see whereabouts_relay_settings */
    const char *end = s + SETTINGS_SIZE;
    for (s += sizeof SETTINGS_MARKER - 1; s < end && *s; s += strlen(s) + 1) {
        if (!memchr(s, '\0', (size_t)(end - s)))
            break; /* not terminated: a damaged copy */
        size_t k = key_len(s);
        if (k == SIZE_MAX || k == 0 || *s == '#')
            continue; /* a comment */
        char key[256];
        if (k >= sizeof key)
            continue;
        memcpy(key, s, k), key[k] = '\0';
        if (!env_get(&e, key))
            env_push(&e, (char *)s);
    }
    return e;
}

/* ---- the request ---- */

static int forwarded(const char *entry, size_t klen) {
    static const char *prefixes[] = {"CNI_", "NODENAME", "WHEREABOUTS_"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(prefixes[i]);
        if (klen >= n && !memcmp(entry, prefixes[i], n))
            return 1;
    }
    return 0;
}

static uint64_t hash_key(const char *key, size_t len) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    return h;
}

/* "K=V\0K=V": the forwarded variables in the environment's order, each key once (its first entry, as in
 * Python's os.environ), joined by NULs. */
static void env_blob(const envlist *e, buf *blob) {
    size_t slots = 64;
    while (slots < 2 * e->len)
        slots *= 2;
    const char **seen = calloc(slots, sizeof *seen);
    if (!seen)
        out_of_memory();
    for (size_t i = 0; i < e->len; i++) {
        const char *entry = e->entries[i];
        size_t k = key_len(entry);
        if (k == SIZE_MAX || !forwarded(entry, k))
            continue;
        size_t at = hash_key(entry, k) & (slots - 1);
        while (seen[at] && !(key_len(seen[at]) == k && !memcmp(seen[at], entry, k)))
            at = (at + 1) & (slots - 1);
        if (seen[at])
            continue;
        seen[at] = entry;
        if (blob->len)
            append(blob, "\0", 1);
        appends(blob, entry);
    }
    free(seen);
}

static void read_stdin(buf *in) {
    for (;;) {
        reserve(in, 65536 + 1);
        ssize_t n = read(0, in->data + in->len, in->cap - in->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        in->len += (size_t)n;
    }
    reserve(in, 1);
    in->data[in->len] = '\0';
}

/* ---- what a path is to this process (cni.main.path_identity) ---- */

/* os.path.split: the head keeps its slashes only when it is nothing but slashes. */
static void split(const char *path, size_t len, size_t *head, size_t *tail) {
    size_t i = len;
    while (i && path[i - 1] != '/')
        i--;
    *tail = i;
    size_t h = i;
    size_t slashes = 0;
    while (slashes < h && path[slashes] == '/')
        slashes++;
    if (h && slashes != h)
        while (h && path[h - 1] == '/')
            h--;
    *head = h;
}

/* "device:inode" of `asked`, or of its deepest existing ancestor followed by the rest of the path; "" when
 * none (or when the path holds a NUL byte, which Python's lstat refuses). */
static void path_identity(const char *asked, size_t len, buf *out) {
    if (memchr(asked, '\0', len))
        return;
    /* rest outgrows the path by one "/" at most: a relative path's last step, to "" (which never exists) */
    char *path = malloc(len + 1), *rest = malloc(len + 2);
    if (!path || !rest)
        out_of_memory();
    memcpy(path, asked, len), path[len] = '\0';
    size_t end = len + 1, rest_at = end; /* rest is rest[rest_at..end) */
    for (;;) {
        struct stat st;
        if (lstat(path, &st) == 0) {
            char ids[64];
            snprintf(ids, sizeof ids, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
            appends(out, ids);
            append(out, rest + rest_at, end - rest_at);
            break;
        }
        if (errno != ENOENT && errno != ENOTDIR)
            break;
        size_t plen = strlen(path), head, tail;
        split(path, plen, &head, &tail);
        if (head == plen || tail == plen)
            break; /* the parent is the path itself, or the name is empty */
        size_t name = plen - tail;
        rest_at -= name + 1;
        memcpy(rest + rest_at + 1, path + tail, name);
        rest[rest_at] = '/';
        path[head] = '\0';
    }
    free(path), free(rest);
}

/* ---- the exchange with the daemon ---- */

typedef struct {
    int fd;
    const char *path;
    buf in; /* received, not yet taken: in.data[taken..len) */
    size_t taken;
} conn;

static int is_busy(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EALREADY || err == EINPROGRESS; }

static void went_away(answer *a, const conn *c, const char *why) {
    a->outcome = FALLBACK;
    a->tally = 'd';
    appends(&a->reason, "node daemon on "), appends(&a->reason, c->path);
    appends(&a->reason, " went away: "), appends(&a->reason, why);
}

static void busy(answer *a, const char *what) {
    a->outcome = BUSY;
    a->tally = 'b';
    appends(&a->out, what);
}

/* A failed socket call: the daemon is busy (timed out) or gone. Returns -1 for the caller to pass on. */
static int failed(answer *a, const conn *c, int err) {
    if (is_busy(err))
        busy(a, "did not answer within " SECONDS(ANSWER_WAIT));
    else
        went_away(a, c, strerror(err));
    return -1;
}

static int recv_more(answer *a, conn *c) {
    reserve(&c->in, 65536 + 1);
    for (;;) {
        ssize_t n = recv(c->fd, c->in.data + c->in.len, 65536, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            return 1;
        }
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return failed(a, c, errno);
    }
}

/* The next `size` bytes of the answer, or NULL (`a` then says why). */
static const char *take(answer *a, conn *c, size_t size) {
    while (c->in.len - c->taken < size) {
        int got = recv_more(a, c);
        if (got < 0)
            return NULL;
        if (got == 0) {
            went_away(a, c, "the connection ended before the answer");
            return NULL;
        }
    }
    const char *at = c->in.data + c->taken;
    c->taken += size;
    return at;
}

/* Everything left until the daemon hangs up, into `into`. */
static int rest(answer *a, conn *c, buf *into) {
    append(into, c->in.data + c->taken, c->in.len - c->taken);
    c->taken = c->in.len;
    for (;;) {
        c->in.len = c->taken = 0;
        int got = recv_more(a, c);
        if (got <= 0)
            return got;
        append(into, c->in.data, c->in.len);
    }
}

static int send_iov(int fd, struct iovec *iov, int count) {
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)count};
    while (msg.msg_iovlen) {
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        while (msg.msg_iovlen && (size_t)n >= msg.msg_iov->iov_len) {
            n -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++, msg.msg_iovlen--;
        }
        if (msg.msg_iovlen) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
            msg.msg_iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

static int answer_identity(answer *a, conn *c) {
    const char *head4 = take(a, c, 4);
    uint32_t size = head4 ? u32_at(head4) : 0;
    const char *asked = head4 ? take(a, c, size) : NULL; /* may move the buffer: head4 is stale now */
    if (!asked)
        return -1;
    buf id = {0};
    path_identity(asked, size, &id);
    unsigned char head[5] = {'s', id.len >> 24, id.len >> 16, id.len >> 8, id.len};
    struct iovec iov[2] = {{head, 5}, {id.data, id.len}};
    int sent = send_iov(c->fd, iov, 2);
    free(id.data);
    return sent < 0 ? failed(a, c, errno) : 0;
}

/* Python's repr() of one byte: b'x', b'\n', b'\x00', b"'", b'\\'. */
static void byte_repr(buf *b, unsigned char ch) {
    char text[16];
    if (ch == '\'')
        snprintf(text, sizeof text, "b\"'\"");
    else if (ch == '\\')
        snprintf(text, sizeof text, "b'\\\\'");
    else if (ch == '\t' || ch == '\n' || ch == '\r')
        snprintf(text, sizeof text, "b'\\%c'", ch == '\t' ? 't' : ch == '\n' ? 'n' : 'r');
    else if (ch < 0x20 || ch >= 0x7f)
        snprintf(text, sizeof text, "b'\\x%02x'", ch);
    else
        snprintf(text, sizeof text, "b'%c'", ch);
    appends(b, text);
}

static void exchange(answer *a, conn *c) {
    for (;;) {
        const char *kind = take(a, c, 1);
        if (!kind)
            return;
        if (*kind == 'S') {
            if (answer_identity(a, c) < 0)
                return;
        } else if (*kind == 'R') {
            buf said = {0};
            if (rest(a, c, &said) == 0) {
                a->outcome = FALLBACK;
                appends(&a->reason, "node daemon declined: ");
                append(&a->reason, said.data ? said.data : "", said.len);
            }
            free(said.data);
            return;
        } else if (*kind == 'W') {
            const char *status = take(a, c, 4);
            if (status && (a->status = u32_at(status), rest(a, c, &a->out) == 0))
                a->outcome = SERVED;
            return;
        } else {
            a->outcome = FALLBACK;
            a->tally = 'd'; /* answered out of turn: counted as a daemon gone, as the Python relay counts it */
            appends(&a->reason, "node daemon on "), appends(&a->reason, c->path), appends(&a->reason, " answered ");
            byte_repr(&a->reason, (unsigned char)*kind);
            appends(&a->reason, ": not a whereabouts daemon");
            return;
        }
    }
}

/* The process listening must run as root or as this process's user (SO_PEERCRED, its credentials when it
 * listened): a user who could make the socket's path would otherwise answer the calls. Served in process
 * otherwise, counted as `u` (cni.main._stranger says the same). */
static int trusted(answer *a, int fd, const char *path) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    char why[128];
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        snprintf(why, sizeof why, "cannot tell who listens: %s", strerror(errno));
    else if (cred.uid == 0 || cred.uid == geteuid())
        return 0;
    else
        snprintf(why, sizeof why, "it is served by uid %u, neither root nor this process's user: not trusted",
                 (unsigned)cred.uid);
    a->tally = 'u';
    appends(&a->reason, "node daemon on "), appends(&a->reason, path), appends(&a->reason, ": ");
    appends(&a->reason, why);
    return -1;
}

static int connect_to(answer *a, int fd, const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    int err = ENAMETOOLONG;
    if (len < sizeof addr.sun_path) {
        memcpy(addr.sun_path, path, len + 1);
        while ((err = connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ? errno : 0) == EINTR)
            ;
    }
    if (!err)
        return trusted(a, fd, path);
    if (err == ENOENT) {
        a->tally = 'n'; /* written only where the socket's directory exists */
        a->absent = 1;
    } else if (is_busy(err)) {
        busy(a, "took no call for " SECONDS(CONNECT_WAIT));
    } else {
        a->tally = 'u'; /* nobody listens: a stale socket */
        a->absent = err != ENAMETOOLONG; /* (where nobody can listen) */
        appends(&a->reason, "node daemon on "), appends(&a->reason, path), appends(&a->reason, ": ");
        appends(&a->reason, err == ENAMETOOLONG ? "AF_UNIX path too long" : strerror(err));
    }
    return -1;
}

/* Hand the call to the daemon on `path`: its answer, or why this process must serve the call. */
static void relay(answer *a, const char *path, const envlist *e, const buf *in) {
    a->outcome = FALLBACK;
    buf blob = {0};
    env_blob(e, &blob);
    if (blob.len > UINT32_MAX || in->len > UINT32_MAX) {
        appends(&a->reason, "the request is too large for the node daemon");
        free(blob.data);
        return;
    }
    conn c = {.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), .path = path};
    struct timeval send_wait = {CONNECT_WAIT, 0}, answer_wait = {ANSWER_WAIT, 0};
    if (c.fd < 0 || setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &send_wait, sizeof send_wait) < 0 ||
        setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &answer_wait, sizeof answer_wait) < 0) {
        appends(&a->reason, "node daemon on "), appends(&a->reason, path), appends(&a->reason, ": ");
        appends(&a->reason, strerror(errno));
    } else if (connect_to(a, c.fd, path) == 0) {
        unsigned char env_size[4] = {blob.len >> 24, blob.len >> 16, blob.len >> 8, blob.len};
        unsigned char in_size[4] = {in->len >> 24, in->len >> 16, in->len >> 8, in->len};
        struct iovec iov[4] = {{env_size, 4}, {blob.data, blob.len}, {in_size, 4}, {in->data, in->len}};
        /* A daemon that stopped reading (a request too large for it) left its reason to be read. */
        if (send_iov(c.fd, iov, 4) == 0 || errno == EPIPE || errno == ECONNRESET)
            exchange(a, &c);
        else
            failed(a, &c, errno);
    }
    if (c.fd >= 0)
        close(c.fd);
    free(c.in.data), free(blob.data);
}

/* ---- the outcomes ---- */

/* Python's bytes.find: the index of `needle` in data[start..), or -1. */
static ssize_t find(const buf *data, const char *needle, ssize_t start) {
    if (start < 0 || (size_t)start > data->len)
        return -1;
    const char *at = memmem(data->data + start, data->len - (size_t)start, needle, strlen(needle));
    return at ? at - data->data : -1;
}

/* The request's cniVersion, found without a JSON parser (cni.main._declared_version). */
static void declared_version(const buf *in, buf *out) {
    ssize_t at = find(in, "\"cniVersion\"", 0);
    ssize_t start = at >= 0 ? find(in, "\"", find(in, ":", at) + 1) + 1 : 0;
    ssize_t end = start ? find(in, "\"", start) : -1;
    int digits = 0, others = 0;
    if (0 < end - start && end - start < 16)
        for (ssize_t i = start; i < end; i++) {
            if (in->data[i] >= '0' && in->data[i] <= '9')
                digits++;
            else if (in->data[i] != '.')
                others++;
        }
    if (digits && !others)
        append(out, in->data + start, (size_t)(end - start));
    else
        appends(out, "1.1.0");
}

/* A CNI error in the request's version on stdout (cni.main._busy): exits 1. */
static void cni_error(const buf *in, int code, const char *text) {
    buf json = {0}, version = {0};
    declared_version(in, &version);
    char head[64];
    snprintf(head, sizeof head, "\", \"code\": %d, \"msg\": \"", code);
    appends(&json, "{\"cniVersion\": \""), append(&json, version.data, version.len), appends(&json, head);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '\\' || *p == '"')
            append(&json, "\\", 1);
        append(&json, *p < 0x20 ? "?" : (const char *)p, 1);
    }
    appends(&json, "\"}\n");
    signal(SIGPIPE, SIG_IGN);
    write_all(1, json.data, json.len);
    _exit(1);
}

static void tally(const char *path, char byte) {
    size_t dir = strlen(path), head, tail;
    split(path, dir, &head, &tail);
    buf name = {0};
    append(&name, path, head);
    if (head && path[head - 1] != '/')
        appends(&name, "/");
    appends(&name, "fallbacks");
    int fd = open(name.data, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        (void)!write(fd, &byte, 1);
        close(fd);
    }
    free(name.data);
}

/* The Python plugin beside this executable (install-cni writes both into one directory). */
static void python_path(const char *argv0, buf *out) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        append(out, self, (size_t)n); /* after the file was replaced: "/dir/whereabouts (deleted)" */
    } else if (strchr(argv0, '/')) {
        appends(out, argv0);
    }
    char *slash = out->data ? strrchr(out->data, '/') : NULL;
    out->len = slash ? (size_t)(slash - out->data) + 1 : 0;
    appends(out, PYTHON_NAME);
}

/* stdin for the Python plugin, from memory: a memfd, else a pipe fed by a detached writer. */
static int stdin_from(const buf *in) {
    int fd = memfd_create("whereabouts-stdin", MFD_CLOEXEC);
    if (fd >= 0) {
        if (write_all(fd, in->data, in->len) == 0 && lseek(fd, 0, SEEK_SET) == 0 && dup2(fd, 0) == 0)
            return close(fd), 0;
        close(fd);
        return -1;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return -1;
    pid_t child = fork();
    if (child == 0) {
        if (fork() == 0) { /* the writer, reparented away from the plugin, holding none of its outputs */
            close(0), close(1), close(2), close(pipefd[0]);
            _exit(write_all(pipefd[1], in->data, in->len) < 0);
        }
        _exit(0);
    }
    close(pipefd[1]);
    if (child > 0)
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
    int ok = child > 0 && dup2(pipefd[0], 0) == 0;
    close(pipefd[0]);
    return ok ? 0 : -1;
}

/* WHEREABOUTS_STANDIN names a positive number of seconds (ASCII digits only: cni.main.standin_wanted). */
static int standin_wanted(const char *value) {
    int nonzero = 0;
    if (!value || !*value)
        return 0;
    for (; *value; value++) {
        if (*value < '0' || *value > '9')
            return 0;
        nonzero |= *value != '0';
    }
    return nonzero;
}

/* Exec the Python plugin; returns only when it cannot. `in`: the stdin read (NULL: stdin untouched). */
static void run_python(char **argv, envlist *e, const buf *in, const buf *reason) {
    buf python = {0}, entry = {0};
    python_path(argv[0], &python);
    env_drop(e, REASON_ENV);
    if (in) {
        env_drop(e, SOCKET_ENV);
        env_push(e, SOCKET_ENV "=");
        if (stdin_from(in) < 0)
            cni_error(in, 999, "whereabouts: cannot hand the network config to the plugin in process");
    }
    if (reason && reason->len) {
        appends(&entry, REASON_ENV "=");
        for (size_t i = 0; i < reason->len && entry.len < REASON_MAX; i++)
            append(&entry, reason->data[i] ? reason->data + i : "\xef\xbf\xbd", reason->data[i] ? 1 : 3);
        env_push(e, entry.data);
    }
    argv[0] = python.data;
    execve(python.data, argv, e->entries);
    if (errno == E2BIG && entry.len) { /* no room for the reason: say it here */
        buf line = {0};
        appends(&line, "whereabouts: serving the call in process: ");
        append(&line, entry.data + sizeof REASON_ENV, entry.len - sizeof REASON_ENV);
        appends(&line, "\n");
        write_all(2, line.data, line.len);
        env_drop(e, REASON_ENV);
        execve(python.data, argv, e->entries);
    }
    buf msg = {0};
    appends(&msg, "whereabouts: cannot run "), appends(&msg, python.data), appends(&msg, ": ");
    appends(&msg, strerror(errno));
    if (!in) {
        appends(&msg, "\n");
        write_all(2, msg.data, msg.len);
        _exit(1);
    }
    cni_error(in, 999, msg.data);
}

int main(int argc, char **argv) {
    char *no_arguments[] = {"whereabouts", NULL};
    if (argc < 1) /* exec'd with no argv[0] at all */
        argv = no_arguments;
    envlist e = caller_env();
    env_drop(&e, STANDIN_START_ENV); /* ours to set (below), never the caller's */
    if (!env_get(&e, "CNI_COMMAND")) /* a person ran it: the Python plugin's help */
        run_python(argv, &e, NULL, NULL);
    const char *path = env_get(&e, SOCKET_ENV);
    if (!path)
        path = DEFAULT_SOCKET;
    if (!*path) /* no daemon wanted: the plugin serves it, reading stdin itself */
        run_python(argv, &e, NULL, NULL);
    buf in = {0};
    read_stdin(&in);
    answer a = {0};
    relay(&a, path, &e, &in);
    if (a.tally)
        tally(path, a.tally);
    if (a.outcome == FALLBACK && a.absent && standin_wanted(env_get(&e, STANDIN_ENV)) &&
        strlen(path) + strlen(STANDIN_SUFFIX) < sizeof(((struct sockaddr_un *)0)->sun_path)) {
        buf standin = {0}, entry = {0};
        appends(&standin, path), appends(&standin, STANDIN_SUFFIX);
        answer s = {0};
        relay(&s, standin.data, &e, &in);
        if (s.outcome != FALLBACK || !s.absent) { /* its answer (or why it did not give one) is the call's */
            a = s, path = standin.data;
        } else {
            appends(&entry, STANDIN_START_ENV "="), appends(&entry, standin.data);
            env_push(&e, entry.data);
        }
    }
    if (a.outcome == BUSY) {
        buf text = {0};
        appends(&text, "whereabouts node daemon on "), appends(&text, path), appends(&text, " ");
        append(&text, a.out.data, a.out.len);
        cni_error(&in, 11, text.data);
    }
    if (a.outcome == FALLBACK)
        run_python(argv, &e, &in, &a.reason);
    signal(SIGPIPE, SIG_IGN);
    write_all(1, a.out.data ? a.out.data : "", a.out.len);
    _exit(a.status > INT_MAX ? 1 : (int)a.status); /* os._exit(status): a status over INT_MAX fails there */
}
