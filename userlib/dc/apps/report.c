/* report: a computation that reports to the outside world. A source streams numbered
 * records over TCP to a reporter; the reporter prints a running count and checksum every
 * EVERY records and, for every read that completes records, sends one line to a peer
 * outside the computation: "J FIRST LAST" (the J-th such line: the records that read
 * completed), and after the last record "J end RECORDS SUM". How many records one read
 * completes depends on timing (the reporter spends 2 ms on each line, while records queue
 * up), so those lines are output that depends on non-deterministic input. Ordinary socket code: nothing in it knows about Discount
 * Checking. A broken connection to the outside peer (EPIPE, ECONNRESET) is made again and
 * the line sent again, as a real client does.
 *
 *   report source PORT RECORDS
 *       connects to 127.0.0.1:PORT, sends RECORDS records "rec %08d\n", one every
 *       millisecond, then prints "sent RECORDS"
 *   report reporter PORT OUT RECORDS EVERY
 *       listens on 127.0.0.1:PORT for the source and sends the lines to OUT:
 *         tcp:IP:PORT   connects there (IPv4)
 *         unix:PATH     connects to that AF_UNIX stream socket
 *         listen:PORT   listens on 127.0.0.1:PORT and writes to the client it accepts
 *                       (accepting the next one when the connection breaks)
 *       prints "n=K last=R sum=S" every EVERY records, "done" at the end */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REC 13 /* "rec %08d\n" */

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static struct sockaddr_in inet_of(const char *ip, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", ip);
        exit(2);
    }
    return a;
}

/* Connects a new stream socket of `family` to `a`, retrying while nobody listens. */
static int connect_retry(int family, const struct sockaddr *a, socklen_t len) {
    for (int i = 0; i < 2000; i++) {
        int s = socket(family, SOCK_STREAM, 0);
        if (s < 0)
            die("socket");
        if (connect(s, a, len) == 0)
            return s;
        if (errno != ECONNREFUSED && errno != ENOENT)
            die("connect");
        close(s);
        pause_ms(10);
    }
    fprintf(stderr, "nobody listens\n");
    exit(1);
}

static int listen_tcp(int port) {
    struct sockaddr_in a = inet_of("127.0.0.1", port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    int one = 1;
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        die("setsockopt");
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0)
        die("bind");
    if (listen(s, 8) != 0)
        die("listen");
    return s;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Where the lines go. */
static const char *out_spec;
static int out_fd = -1;
static int out_listener = -1;

static void out_open(void) {
    if (strncmp(out_spec, "tcp:", 4) == 0) {
        char ip[64];
        const char *colon = strrchr(out_spec + 4, ':');
        size_t n = colon ? (size_t)(colon - (out_spec + 4)) : 0;
        if (!colon || n >= sizeof ip) {
            fprintf(stderr, "bad OUT %s\n", out_spec);
            exit(2);
        }
        memcpy(ip, out_spec + 4, n);
        ip[n] = 0;
        struct sockaddr_in a = inet_of(ip, atoi(colon + 1));
        out_fd = connect_retry(AF_INET, (struct sockaddr *)&a, sizeof a);
    } else if (strncmp(out_spec, "unix:", 5) == 0) {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        strncpy(a.sun_path, out_spec + 5, sizeof a.sun_path - 1);
        out_fd = connect_retry(AF_UNIX, (struct sockaddr *)&a, sizeof a);
    } else if (strncmp(out_spec, "listen:", 7) == 0) {
        if (out_listener < 0)
            out_listener = listen_tcp(atoi(out_spec + 7));
        out_fd = accept(out_listener, NULL, NULL);
        if (out_fd < 0)
            die("accept (outside client)");
    } else {
        fprintf(stderr, "bad OUT %s\n", out_spec);
        exit(2);
    }
}

/* Sends one line to the outside peer, making the connection again while it is broken. */
static void out_line(const char *line) {
    for (;;) {
        if (out_fd < 0)
            out_open();
        if (write_all(out_fd, line, strlen(line)) == 0)
            return;
        if (errno != EPIPE && errno != ECONNRESET && errno != ENOTCONN)
            die("write (outside)");
        close(out_fd);
        out_fd = -1;
    }
}

static int source(int port, int records) {
    struct sockaddr_in a = inet_of("127.0.0.1", port);
    int s = connect_retry(AF_INET, (struct sockaddr *)&a, sizeof a);
    char rec[REC + 1];
    for (int k = 1; k <= records; k++) {
        snprintf(rec, sizeof rec, "rec %08d\n", k);
        if (write_all(s, rec, REC) != 0)
            die("write");
        pause_ms(1);
    }
    close(s);
    printf("sent %d\n", records);
    return 0;
}

static int reporter(int port, const char *out, int records, int every) {
    signal(SIGPIPE, SIG_IGN);
    out_spec = out;
    if (strncmp(out, "listen:", 7) == 0)
        out_listener = listen_tcp(atoi(out + 7));
    int l = listen_tcp(port);
    int c = accept(l, NULL, NULL);
    if (c < 0)
        die("accept");
    if (out_listener >= 0)
        out_open();
    char buf[512], rec[REC], line[96];
    size_t have = 0;
    uint32_t sum = 2166136261u;
    int n = 0, j = 0;
    while (n < records) {
        ssize_t r = read(c, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (r == 0) {
            fprintf(stderr, "the stream ended after %d records\n", n);
            return 1;
        }
        int first = 0, last = 0;
        for (ssize_t i = 0; i < r; i++) {
            rec[have++] = buf[i];
            if (have < REC)
                continue;
            have = 0;
            int k;
            if (sscanf(rec, "rec %d", &k) != 1) {
                fprintf(stderr, "bad record %.12s\n", rec);
                return 1;
            }
            if (first == 0)
                first = k;
            last = k;
            sum = (sum ^ (uint32_t)k) * 16777619u;
            n++;
            if (n % every == 0)
                printf("n=%d last=%d sum=%08x\n", n, k, sum);
        }
        if (first != 0) {
            snprintf(line, sizeof line, "%d %d %d\n", ++j, first, last);
            out_line(line);
            pause_ms(2); /* some work per line, during which records queue up */
        }
    }
    snprintf(line, sizeof line, "%d end %d %08x\n", ++j, n, sum);
    out_line(line);
    printf("done\n");
    close(out_fd);
    close(c);
    close(l);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "source") == 0)
        return source(atoi(argv[2]), atoi(argv[3]));
    if (argc == 6 && strcmp(argv[1], "reporter") == 0)
        return reporter(atoi(argv[2]), argv[3], atoi(argv[4]), atoi(argv[5]));
    fprintf(stderr, "usage: report source PORT RECORDS | reporter PORT OUT RECORDS EVERY\n");
    return 2;
}
