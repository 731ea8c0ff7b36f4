/*
 * dangerous_bash - a classifier plugin.
 *
 * For assistant entries:
 *   - every Bash tool_use whose command matches a risky pattern (rm -rf,
 *     curl|sh, chmod 777, sudo, git push --force, mkfs, dd of=, > /dev/sd..,
 *     fork bomb) adds the label `dangerous_command`, and sets
 *     `dangerous_pattern` to the first pattern found;
 *   - every ``` fenced block in text content adds `code_block:<lang>`
 *     (lowercased; `code_block:plain` when the fence has no language).
 * Output example: {"labels":["dangerous_command"],"set":{"dangerous_pattern":"rm -rf"}}
 */
#include "../common/danger.h"

#define MAX_LABELS 32

typedef struct {
    const char *s[MAX_LABELS];
    size_t n[MAX_LABELS];
    int count;
} labels_t;

static void add_label(labels_t *l, const char *s, size_t n) {
    for (int i = 0; i < l->count; i++)
        if (bytes_eq(l->s[i], l->n[i], s, n)) return;
    if (l->count < MAX_LABELS) {
        l->s[l->count] = s;
        l->n[l->count] = n;
        l->count++;
    }
}

/* Labels every opening ``` fence of a markdown text; closing fences toggle back. */
static void scan_code_blocks(labels_t *l, const char *t, size_t n) {
    int open = 0;
    size_t i = 0;
    while (i < n) {
        size_t line = i;
        while (i < n && t[i] != '\n') i++;
        size_t end = i;
        if (i < n) i++;
        size_t p = line;
        while (p < end && (t[p] == ' ' || t[p] == '\t')) p++;
        if (end - p < 3 || !starts_with(t + p, end - p, "```")) continue;
        if (open) { open = 0; continue; }
        open = 1;
        p += 3;
        while (p < end && t[p] == '`') p++;
        while (p < end && t[p] == ' ') p++;
        size_t lang = p;
        while (p < end && t[p] != ' ' && t[p] != '\t' && t[p] != '\r' && t[p] != '{' && t[p] != '`') p++;
        size_t langn = p - lang;
        if (langn > 32) langn = 32;
        /* "code_block:" + lowercase language, built in the arena (it must outlive this call). */
        char *label = arena_alloc(11 + (langn ? langn : 5));
        if (!label) return;
        memcpy(label, "code_block:", 11);
        if (!langn) {
            memcpy(label + 11, "plain", 5);
            langn = 5;
        } else {
            for (size_t k = 0; k < langn; k++) {
                char c = t[lang + k];
                label[11 + k] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
            }
        }
        add_label(l, label, 11 + langn);
    }
}

static void run(jv *input, out_t *out) {
    jv *entry = jget(input, "entry");
    if (!jis_str(jget(entry, "type"), "assistant")) return;
    jv *content = jget(jget(entry, "message"), "content");
    labels_t labels = {0};
    const char *pattern = NULL;
    if (content && content->type == J_STR) scan_code_blocks(&labels, content->s, content->n);
    if (content && content->type == J_ARR) {
        for (jv *item = content->child; item; item = item->next) {
            jv *type = jget(item, "type");
            if (jis_str(type, "text")) {
                jv *text = jget(item, "text");
                if (text && text->type == J_STR) scan_code_blocks(&labels, text->s, text->n);
            } else if (jis_str(type, "tool_use") && jis_str(jget(item, "name"), "Bash")) {
                jv *cmd = jget(jget(item, "input"), "command");
                if (!cmd || cmd->type != J_STR) continue;
                const char *why = danger_reason(cmd->s, cmd->n);
                if (why) {
                    add_label(&labels, "dangerous_command", 17);
                    if (!pattern) pattern = why;
                }
            }
        }
    }
    if (!labels.count) return;
    out_lit(out, "{\"labels\":[");
    for (int i = 0; i < labels.count; i++) {
        if (i) out_lit(out, ",");
        out_json_str(out, labels.s[i], labels.n[i]);
    }
    out_lit(out, "]");
    if (pattern) {
        out_lit(out, ",\"set\":{\"dangerous_pattern\":");
        out_json_cstr(out, pattern);
        out_lit(out, "}");
    }
    out_lit(out, "}");
}
