/*
 * plugin.h - a tiny freestanding runtime for claude-ingest plugins written in C
 * (clang --target=wasm32 -nostdlib). Include it from exactly one .c file,
 * implement `static void run(jv *input, out_t *out)`, and the header provides
 * the ABI exports `alloc` and `process` (see plugins/README.md).
 *
 * Memory model: every call runs in a fresh instance, so a bump allocator that
 * never frees is correct and the simplest thing that works.
 */
#ifndef CLAUDE_INGEST_PLUGIN_H
#define CLAUDE_INGEST_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

/* Plugins use only part of these helpers. */
#pragma clang diagnostic ignored "-Wunused-function"

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

/* The only host import: write a debug line to the engine's log. */
IMPORT("env", "log") void host_log(const char *ptr, int32_t len);

/* ---- libc bits the compiler may call implicitly ---------------------------- */
void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}
void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--) *d++ = *s++;
    } else {
        while (n--) d[n] = s[n];
    }
    return dst;
}
void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

static size_t cstr_len(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static void log_cstr(const char *msg) { host_log(msg, (int32_t)cstr_len(msg)); }

/* ---- bump allocator ---------------------------------------------------------- */
extern unsigned char __heap_base;
static uintptr_t heap_top;

/* Returns NULL when the memory limit is reached (memory.grow fails). */
static void *arena_alloc(size_t n) {
    if (!heap_top) heap_top = (uintptr_t)&__heap_base;
    uintptr_t p = (heap_top + 7u) & ~(uintptr_t)7u;
    uintptr_t end = p + n;
    if (end < p) return NULL;
    uintptr_t have = (uintptr_t)__builtin_wasm_memory_size(0) << 16;
    if (end > have) {
        size_t pages = (size_t)((end - have + 0xffffu) >> 16);
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return NULL;
    }
    heap_top = end;
    return (void *)p;
}

EXPORT("alloc") int32_t plugin_alloc(int32_t len) {
    if (len < 0) return 0;
    return (int32_t)(uintptr_t)arena_alloc((size_t)len);
}

/* ---- strings ----------------------------------------------------------------- */
static int bytes_eq(const char *a, size_t an, const char *b, size_t bn) {
    if (an != bn) return 0;
    for (size_t i = 0; i < an; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}
static int str_is(const char *s, size_t n, const char *lit) { return bytes_eq(s, n, lit, cstr_len(lit)); }
static int starts_with(const char *s, size_t n, const char *lit) {
    size_t m = cstr_len(lit);
    return n >= m && bytes_eq(s, m, lit, m);
}
static int find(const char *s, size_t n, const char *lit) {
    size_t m = cstr_len(lit);
    for (size_t i = 0; i + m <= n; i++)
        if (bytes_eq(s + i, m, lit, m)) return (int)i;
    return -1;
}

/* ---- JSON (parsed into a tree in the arena) ------------------------------------ */
enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
    int type;
    const char *s; /* decoded string, or number text */
    size_t n;
    const char *key; /* member name when inside an object */
    size_t keyn;
    struct jv *child; /* first element / member */
    struct jv *next;  /* next sibling */
} jv;

typedef struct {
    const unsigned char *p, *end;
    int depth;
    const char *err;
} jparser;

#define JSON_MAX_DEPTH 200

static void skip_ws(jparser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int hex4(const unsigned char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *d, uint32_t cp) {
    if (cp < 0x80) { d[0] = (char)cp; return 1; }
    if (cp < 0x800) { d[0] = (char)(0xc0 | (cp >> 6)); d[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        d[0] = (char)(0xe0 | (cp >> 12)); d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (char)(0x80 | (cp & 0x3f)); return 3;
    }
    d[0] = (char)(0xf0 | (cp >> 18)); d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); d[3] = (char)(0x80 | (cp & 0x3f)); return 4;
}

/* Parses a string literal (at the opening quote); the decoded text is never
 * longer than the raw text, so one allocation of the raw size suffices. */
static int parse_string(jparser *ps, const char **out, size_t *outn) {
    const unsigned char *start = ++ps->p;
    const unsigned char *q = start;
    while (q < ps->end && *q != '"') q += (*q == '\\') ? 2 : 1;
    if (q >= ps->end) { ps->err = "unterminated string"; return 0; }
    char *buf = arena_alloc((size_t)(q - start) + 1);
    if (!buf) { ps->err = "out of memory"; return 0; }
    size_t n = 0;
    const unsigned char *p = start;
    while (p < q) {
        unsigned char c = *p++;
        if (c != '\\') { buf[n++] = (char)c; continue; }
        c = *p++;
        switch (c) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (q - p < 4 || !hex4(p, &cp)) { ps->err = "bad \\u escape"; return 0; }
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && q - p >= 6 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, &lo) &&
                lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                p += 6;
            } else if (cp >= 0xd800 && cp < 0xe000) {
                cp = 0xfffd; /* lone surrogate: keep the output valid UTF-8 */
            }
            n += put_utf8(buf + n, cp);
            break;
        }
        default: ps->err = "bad escape"; return 0;
        }
    }
    buf[n] = 0;
    ps->p = q + 1;
    *out = buf;
    *outn = n;
    return 1;
}

static jv *parse_value(jparser *ps);

static jv *new_node(jparser *ps, int type) {
    jv *v = arena_alloc(sizeof(jv));
    if (!v) { ps->err = "out of memory"; return NULL; }
    memset(v, 0, sizeof(jv));
    v->type = type;
    return v;
}

static jv *parse_container(jparser *ps, int type) {
    char close = type == J_ARR ? ']' : '}';
    jv *v = new_node(ps, type);
    if (!v) return NULL;
    if (++ps->depth > JSON_MAX_DEPTH) { ps->err = "nesting too deep"; return NULL; }
    ps->p++;
    skip_ws(ps);
    jv **tail = &v->child;
    if (ps->p < ps->end && *ps->p == close) { ps->p++; ps->depth--; return v; }
    for (;;) {
        const char *key = NULL;
        size_t keyn = 0;
        skip_ws(ps);
        if (type == J_OBJ) {
            if (ps->p >= ps->end || *ps->p != '"') { ps->err = "expected member name"; return NULL; }
            if (!parse_string(ps, &key, &keyn)) return NULL;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') { ps->err = "expected ':'"; return NULL; }
            ps->p++;
        }
        jv *item = parse_value(ps);
        if (!item) return NULL;
        item->key = key;
        item->keyn = keyn;
        *tail = item;
        tail = &item->next;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        if (ps->p < ps->end && *ps->p == close) { ps->p++; ps->depth--; return v; }
        ps->err = "expected ',' or closing bracket";
        return NULL;
    }
}

static jv *parse_value(jparser *ps) {
    skip_ws(ps);
    if (ps->p >= ps->end) { ps->err = "unexpected end of input"; return NULL; }
    unsigned char c = *ps->p;
    if (c == '{') return parse_container(ps, J_OBJ);
    if (c == '[') return parse_container(ps, J_ARR);
    if (c == '"') {
        jv *v = new_node(ps, J_STR);
        if (!v || !parse_string(ps, &v->s, &v->n)) return NULL;
        return v;
    }
    size_t left = (size_t)(ps->end - ps->p);
    if (left >= 4 && str_is((const char *)ps->p, 4, "null")) { ps->p += 4; return new_node(ps, J_NULL); }
    if (left >= 4 && str_is((const char *)ps->p, 4, "true")) { ps->p += 4; return new_node(ps, J_TRUE); }
    if (left >= 5 && str_is((const char *)ps->p, 5, "false")) { ps->p += 5; return new_node(ps, J_FALSE); }
    if (c == '-' || (c >= '0' && c <= '9')) {
        jv *v = new_node(ps, J_NUM);
        if (!v) return NULL;
        v->s = (const char *)ps->p;
        while (ps->p < ps->end && (*ps->p == '-' || *ps->p == '+' || *ps->p == '.' || *ps->p == 'e' ||
                                   *ps->p == 'E' || (*ps->p >= '0' && *ps->p <= '9')))
            ps->p++;
        v->n = (size_t)((const char *)ps->p - v->s);
        return v;
    }
    ps->err = "unexpected character";
    return NULL;
}

/* Member `key` of object `obj`, or NULL (also when `obj` is not an object). */
static jv *jget(const jv *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (jv *m = obj->child; m; m = m->next)
        if (str_is(m->key, m->keyn, key)) return m;
    return NULL;
}
static int jis_str(const jv *v, const char *lit) { return v && v->type == J_STR && str_is(v->s, v->n, lit); }

/* ---- output builder ---------------------------------------------------------- */
typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} out_t;

static void out_bytes(out_t *o, const char *s, size_t n) {
    if (o->oom) return;
    if (o->len + n > o->cap) {
        size_t cap = (o->cap ? o->cap * 2 : 4096);
        while (cap < o->len + n) cap *= 2;
        char *buf = arena_alloc(cap);
        if (!buf) { o->oom = 1; return; }
        memcpy(buf, o->buf, o->len);
        o->buf = buf;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}
static void out_lit(out_t *o, const char *lit) { out_bytes(o, lit, cstr_len(lit)); }

/* Writes `s` as a JSON string literal (quoted and escaped). */
static void out_json_str(out_t *o, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    out_bytes(o, "\"", 1);
    size_t run = 0; /* copy unescaped runs in one go */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c != '"' && c != '\\' && c >= 0x20) continue;
        out_bytes(o, s + run, i - run);
        run = i + 1;
        if (c == '"') out_bytes(o, "\\\"", 2);
        else if (c == '\\') out_bytes(o, "\\\\", 2);
        else if (c == '\n') out_bytes(o, "\\n", 2);
        else if (c == '\t') out_bytes(o, "\\t", 2);
        else if (c == '\r') out_bytes(o, "\\r", 2);
        else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            out_bytes(o, esc, 6);
        }
    }
    out_bytes(o, s + run, n - run);
    out_bytes(o, "\"", 1);
}
static void out_json_cstr(out_t *o, const char *s) { out_json_str(o, s, cstr_len(s)); }

static int64_t pack(const char *ptr, size_t len) {
    return (int64_t)(((uint64_t)(uintptr_t)ptr << 32) | (uint64_t)(uint32_t)len);
}
static int64_t return_cstr(const char *s) { return pack(s, cstr_len(s)); }

/* ---- the ABI entry point ------------------------------------------------------- */
static void run(jv *input, out_t *out);

EXPORT("process") int64_t plugin_process(int32_t ptr, int32_t len) {
    jparser ps = {(const unsigned char *)(uintptr_t)ptr, (const unsigned char *)(uintptr_t)ptr + len, 0, NULL};
    jv *input = parse_value(&ps);
    if (!input) {
        log_cstr(ps.err);
        return return_cstr("{\"error\":\"cannot parse input JSON\"}");
    }
    out_t out = {0};
    run(input, &out);
    if (out.oom) return return_cstr("{\"error\":\"out of memory building output\"}");
    if (out.len == 0) return return_cstr("{}");
    return pack(out.buf, out.len);
}

#endif
