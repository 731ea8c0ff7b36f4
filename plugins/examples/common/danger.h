/*
 * danger.h - classify a shell command as risky. Shared by dangerous_bash and
 * bash_commands. A heuristic, not a parser: it splits the command into simple
 * commands at ; & | ( ) and newlines (outside quotes) and looks at each one.
 */
#ifndef CLAUDE_INGEST_DANGER_H
#define CLAUDE_INGEST_DANGER_H

#include "plugin.h"

#define MAX_WORDS 64

typedef struct {
    const char *s[MAX_WORDS];
    size_t n[MAX_WORDS];
    int count;
} words_t;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_sep_char(char c) { return c == ';' || c == '&' || c == '|' || c == '(' || c == ')' || c == '\n'; }

/* A separator at cmd[i]; the `&` of a redirection (2>&1, <&3) is not one. */
static int sep_at(const char *cmd, size_t i) {
    if (!is_sep_char(cmd[i])) return 0;
    return !(cmd[i] == '&' && i > 0 && (cmd[i - 1] == '>' || cmd[i - 1] == '<'));
}

/* Last path component: /usr/bin/rm -> rm. */
static void basename_of(const char **s, size_t *n) {
    for (size_t i = *n; i > 0; i--)
        if ((*s)[i - 1] == '/') { *s += i; *n -= i; return; }
}

/* Index of the command word: skips VAR=value assignments and wrappers. */
static int command_index(const words_t *w) {
    int i = 0;
    while (i < w->count) {
        const char *s = w->s[i];
        size_t n = w->n[i];
        int assign = n > 0 && s[0] != '=' && find(s, n, "=") > 0 && s[0] != '-';
        if (assign || str_is(s, n, "sudo") || str_is(s, n, "env") || str_is(s, n, "time") ||
            str_is(s, n, "nohup") || str_is(s, n, "exec") || str_is(s, n, "doas")) {
            i++;
            continue;
        }
        return i;
    }
    return -1;
}

static int any_word(const words_t *w, int from, const char *lit) {
    for (int i = from; i < w->count; i++)
        if (str_is(w->s[i], w->n[i], lit)) return 1;
    return 0;
}

/* Checks one simple command; `fetch_before` = it reads from a curl/wget pipe. */
static const char *check_simple(const words_t *w, int fetch_before) {
    if (w->count == 0) return NULL;
    int c = command_index(w);
    for (int i = 0; i < (c < 0 ? w->count : c); i++)
        if (str_is(w->s[i], w->n[i], "sudo") || str_is(w->s[i], w->n[i], "doas")) return "sudo";
    if (c < 0) return NULL;
    const char *cmd = w->s[c];
    size_t cmdn = w->n[c];
    basename_of(&cmd, &cmdn);

    if (str_is(cmd, cmdn, "rm")) {
        int r = 0, f = 0;
        for (int i = c + 1; i < w->count; i++) {
            const char *a = w->s[i];
            size_t an = w->n[i];
            if (str_is(a, an, "--")) break;
            if (str_is(a, an, "--recursive")) r = 1;
            else if (str_is(a, an, "--force")) f = 1;
            else if (an > 1 && a[0] == '-' && a[1] != '-')
                for (size_t k = 1; k < an; k++) {
                    if (a[k] == 'r' || a[k] == 'R') r = 1;
                    if (a[k] == 'f') f = 1;
                }
        }
        if (r && f) return "rm -rf";
    }
    if (fetch_before && (str_is(cmd, cmdn, "sh") || str_is(cmd, cmdn, "bash") || str_is(cmd, cmdn, "zsh") ||
                         str_is(cmd, cmdn, "dash") || str_is(cmd, cmdn, "ksh")))
        return "pipe to shell";
    if (str_is(cmd, cmdn, "chmod") &&
        (any_word(w, c + 1, "777") || any_word(w, c + 1, "0777") || any_word(w, c + 1, "a+rwx")))
        return "chmod 777";
    if (str_is(cmd, cmdn, "git") && any_word(w, c + 1, "push")) {
        for (int i = c + 1; i < w->count; i++)
            if (str_is(w->s[i], w->n[i], "-f") || starts_with(w->s[i], w->n[i], "--force"))
                return "git push --force";
    }
    if (starts_with(cmd, cmdn, "mkfs")) return "mkfs";
    if (str_is(cmd, cmdn, "dd"))
        for (int i = c + 1; i < w->count; i++)
            if (starts_with(w->s[i], w->n[i], "of=")) return "dd of=";
    return NULL;
}

/* Reads the words of one simple command starting at cmd[i] into `w`; returns
 * the index of the separator that ends it (or n). Quotes group characters and
 * are dropped when they wrap a whole word ("rm" -> rm), which is enough here. */
static size_t next_simple(const char *cmd, size_t n, size_t i, words_t *w) {
    w->count = 0;
    for (;;) {
        while (i < n && is_space(cmd[i]) && cmd[i] != '\n') i++;
        if (i >= n || sep_at(cmd, i)) return i;
        size_t start = i;
        char quote = 0;
        while (i < n && (quote || (!is_space(cmd[i]) && !sep_at(cmd, i)))) {
            if (quote && cmd[i] == quote) quote = 0;
            else if (!quote && (cmd[i] == '"' || cmd[i] == '\'')) quote = cmd[i];
            else if (cmd[i] == '\\' && i + 1 < n) i++;
            i++;
        }
        size_t len = (i > n ? n : i) - start;
        const char *s = cmd + start;
        if (len >= 2 && (s[0] == '"' || s[0] == '\'') && s[len - 1] == s[0]) { s++; len -= 2; }
        if (w->count < MAX_WORDS) {
            w->s[w->count] = s;
            w->n[w->count] = len;
            w->count++;
        }
    }
}

/* Name of the first risky pattern in `cmd`, or NULL. */
static const char *danger_reason(const char *cmd, size_t n) {
    if (find(cmd, n, ":(){") >= 0) return "fork bomb";
    /* Redirection onto a raw disk device. */
    for (size_t i = 0; i < n; i++) {
        if (cmd[i] != '>') continue;
        size_t j = i + 1;
        while (j < n && (cmd[j] == '>' || is_space(cmd[j]))) j++;
        if (starts_with(cmd + j, n - j, "/dev/sd") || starts_with(cmd + j, n - j, "/dev/nvme") ||
            starts_with(cmd + j, n - j, "/dev/hd") || starts_with(cmd + j, n - j, "/dev/mmcblk") ||
            starts_with(cmd + j, n - j, "/dev/disk"))
            return "write to block device";
    }
    words_t w;
    int fetch_in_pipe = 0; /* an earlier stage of this pipeline runs curl/wget */
    size_t i = 0;
    for (;;) {
        i = next_simple(cmd, n, i, &w);
        const char *why = check_simple(&w, fetch_in_pipe);
        if (why) return why;
        int c = command_index(&w);
        if (c >= 0) {
            const char *name = w.s[c];
            size_t nn = w.n[c];
            basename_of(&name, &nn);
            if (str_is(name, nn, "curl") || str_is(name, nn, "wget")) fetch_in_pipe = 1;
        }
        if (i >= n) return NULL;
        /* `|` keeps the pipeline going (`||` does not); anything else ends it. */
        int pipe = cmd[i] == '|' && !(i + 1 < n && cmd[i + 1] == '|');
        if (!pipe) fetch_in_pipe = 0;
        while (i < n && sep_at(cmd, i)) i++;
    }
}

#endif
