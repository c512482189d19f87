/* A line-oriented note keeper in plain C, made recoverable by one call to dc_init().
 * Reads commands with read(2), answers with write(2), keeps notes in malloc'd memory
 * and saves them with open/write/close. Prompt: "kv[N]> " (N commands done), like
 * dc-kv, so the same test harness drives both.
 *
 * Commands: add TEXT | del N | print | count | save FILE | upper N | quit
 */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dc.h"

struct note {
    char *text;
    struct note *next;
};

static struct note *head;
static long ncmds;

static void out(const char *s) { write(1, s, strlen(s)); }

static void outf(const char *fmt, long a, const char *b) {
    char buf[512];
    snprintf(buf, sizeof buf, fmt, a, b ? b : "");
    out(buf);
}

static int count(void) {
    int n = 0;
    for (struct note *p = head; p; p = p->next) n++;
    return n;
}

static int readline(char *buf, int cap) {
    int n = 0;
    while (n < cap - 1) {
        char c;
        ssize_t r = read(0, &c, 1);
        if (r <= 0) return n > 0 ? n : -1;
        if (c == '\n') break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return n;
}

int main(void) {
    if (dc_init() != 0) return 1;
    char line[1024];
    for (;;) {
        outf("kv[%ld]> %s", ncmds, NULL);
        if (readline(line, sizeof line) < 0) { out("eof\n"); break; }
        ncmds++;
        char *arg = strchr(line, ' ');
        if (arg) *arg++ = 0;
        if (!strcmp(line, "add") && arg) {
            struct note *n = malloc(sizeof *n), **pp = &head;
            n->text = strdup(arg);
            n->next = NULL;
            while (*pp) pp = &(*pp)->next;
            *pp = n;
            outf("added %ld%s\n", count(), NULL);
        } else if (!strcmp(line, "del") && arg) {
            long k = atol(arg);
            struct note **pp = &head;
            while (*pp && k-- > 0) pp = &(*pp)->next;
            if (*pp) {
                struct note *d = *pp;
                *pp = d->next;
                free(d->text);
                free(d);
                out("deleted\n");
            } else out("no such note\n");
        } else if (!strcmp(line, "upper") && arg) {
            long k = atol(arg);
            struct note *p = head;
            while (p && k-- > 0) p = p->next;
            if (p) { for (char *c = p->text; *c; c++) *c = toupper((unsigned char)*c); out("ok\n"); }
            else out("no such note\n");
        } else if (!strcmp(line, "print")) {
            long i = 0;
            for (struct note *p = head; p; p = p->next) outf("%ld: %s\n", i++, p->text);
            out("--\n");
        } else if (!strcmp(line, "count")) {
            outf("%ld%s\n", count(), NULL);
        } else if (!strcmp(line, "save") && arg) {
            int fd = open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0) { out("error\n"); continue; }
            for (struct note *p = head; p; p = p->next) { write(fd, p->text, strlen(p->text)); write(fd, "\n", 1); }
            close(fd);
            outf("saved %ld%s\n", count(), NULL);
        } else if (!strcmp(line, "quit")) {
            outf("bye after %ld commands%s\n", ncmds, NULL);
            break;
        } else {
            out("unknown\n");
        }
    }
    return 0;
}
