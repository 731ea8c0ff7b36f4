/*
 * {{name}}: a claude-ingest classifier plugin in C, on the core JSON ABI
 * (plugin.h provides the `alloc` / `process` exports, a JSON tree and an
 * output builder; plugins/README.md, "The ABI"). The engine calls it for
 * every entry a rule sends to it (`plugins: [{plugin: {{name}}}]`).
 * Output: {"labels": [...], "set": {"{{name}}_blocks": N}}.
 */
#include "plugin.h"

/* Appends the JSON string `prefix` + `v` (a string node, or nothing) as a label. */
static void label(out_t *out, int *first, const char *prefix, const jv *v) {
    size_t pn = cstr_len(prefix), vn = (v && v->type == J_STR) ? v->n : 0;
    char *buf = arena_alloc(pn + vn + 1);
    if (!buf) return;
    for (size_t i = 0; i < pn; i++) buf[i] = prefix[i];
    for (size_t i = 0; i < vn; i++) buf[pn + i] = v->s[i];
    if (!*first) out_lit(out, ",");
    *first = 0;
    out_json_str(out, buf, pn + vn);
}

static void out_uint(out_t *out, unsigned n) {
    char digits[12];
    int i = 11;
    digits[i] = 0;
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n && i > 0);
    out_lit(out, &digits[i]);
}

static void run(jv *input, out_t *out) {
    jv *entry = jget(input, "entry");
    jv *type = jget(entry, "type");
    jv *content = jget(jget(entry, "message"), "content");
    int first = 1;
    unsigned blocks = 0;
    out_lit(out, "{\"labels\":[");
    label(out, &first, "{{name}}:", type);
    if (content && content->type == J_STR && jis_str(type, "user")) label(out, &first, "{{name}}:prompt", 0);
    if (content && content->type == J_ARR) {
        for (jv *b = content->child; b; b = b->next) {
            blocks++;
            if (jis_str(jget(b, "type"), "tool_use")) label(out, &first, "{{name}}:tool:", jget(b, "name"));
        }
    }
    out_lit(out, "],\"set\":{\"{{name}}_blocks\":");
    out_uint(out, blocks);
    out_lit(out, "}}");
}
