/*
 * bash_commands - a mapper plugin: one row per Bash tool_use of an assistant
 * entry, for the user-defined table `plugin_bash_commands` (DDL: table.sql).
 *
 * Columns: session_id, uuid, timestamp (the entry's ISO string), tool_use_id,
 * command, program (first word after VAR=value assignments and sudo/env),
 * dangerous (1 when the command matches a risky pattern, see danger.h).
 * Output example:
 *   {"rows":[{"table":"plugin_bash_commands","columns":{"session_id":"s1",...}}]}
 */
#include "../common/danger.h"

static void out_field(out_t *out, const char *name, const jv *v) {
    out_lit(out, ",\"");
    out_lit(out, name);
    out_lit(out, "\":");
    if (v && v->type == J_STR) out_json_str(out, v->s, v->n);
    else out_lit(out, "\"\"");
}

/* The program a command runs: the command word of its first simple command
 * (after VAR=value assignments and sudo/env wrappers). */
static void program_of(const char *cmd, size_t n, const char **s, size_t *len) {
    words_t w;
    next_simple(cmd, n, 0, &w);
    int c = command_index(&w);
    *s = c >= 0 ? w.s[c] : "";
    *len = c >= 0 ? w.n[c] : 0;
}

static void run(jv *input, out_t *out) {
    jv *entry = jget(input, "entry");
    if (!jis_str(jget(entry, "type"), "assistant")) return;
    jv *content = jget(jget(entry, "message"), "content");
    if (!content || content->type != J_ARR) return;
    jv *session = jget(entry, "sessionId");
    jv *timestamp = jget(entry, "timestamp");
    int rows = 0;
    for (jv *item = content->child; item; item = item->next) {
        if (!jis_str(jget(item, "type"), "tool_use") || !jis_str(jget(item, "name"), "Bash")) continue;
        jv *cmd = jget(jget(item, "input"), "command");
        if (!cmd || cmd->type != J_STR) continue;
        if (!session || session->type != J_STR || !timestamp || timestamp->type != J_STR) {
            /* Without a key and a time the row would be useless (and rejected). */
            log_cstr("bash_commands: entry without sessionId/timestamp, skipped");
            return;
        }
        const char *prog;
        size_t progn;
        program_of(cmd->s, cmd->n, &prog, &progn);
        out_lit(out, rows ? "," : "{\"rows\":[");
        out_lit(out, "{\"table\":\"plugin_bash_commands\",\"columns\":{\"session_id\":");
        out_json_str(out, session->s, session->n);
        out_field(out, "uuid", jget(entry, "uuid"));
        out_field(out, "timestamp", timestamp);
        out_field(out, "tool_use_id", jget(item, "id"));
        out_field(out, "command", cmd);
        out_lit(out, ",\"program\":");
        out_json_str(out, prog, progn);
        out_lit(out, danger_reason(cmd->s, cmd->n) ? ",\"dangerous\":1}}" : ",\"dangerous\":0}}");
        rows++;
    }
    if (rows) out_lit(out, "]}");
}
