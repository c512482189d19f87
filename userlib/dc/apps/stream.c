/* stream: a pipeline over stream sockets. A producer sends numbered records over TCP to a
 * relay, which forwards them over an AF_UNIX stream socket to a consumer, which prints a
 * running count and checksum every N records. Ordinary socket code: nothing in it knows
 * about Discount Checking.
 *
 *   stream consumer PATH RECORDS EVERY   (listens on the AF_UNIX path; prints
 *                                          "n=K sum=S" every EVERY records, then "done")
 *   stream relay PORT PATH                (listens on 127.0.0.1:PORT, connects to PATH,
 *                                          forwards every byte until the producer ends)
 *   stream producer PORT RECORDS          (connects to 127.0.0.1:PORT, sends RECORDS
 *                                          records "rec %08d\n", one every millisecond)
 *   stream client PORT                    (connects to 127.0.0.1:PORT, sends "ping K",
 *                                          prints each answer line; on an error prints
 *                                          "error: <call>: <errno name>" and exits 0)
 *
 * Every record must reach the consumer exactly once and in order: a lost or repeated
 * record changes the sums it prints. */
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

static struct sockaddr_in inet_addr_of(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static struct sockaddr_un unix_addr_of(const char *path) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    return a;
}

/* Connects a new socket of `family` to `a`, retrying while nobody listens there yet. */
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

static int listen_on(int family, const struct sockaddr *a, socklen_t len) {
    int s = socket(family, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    int one = 1;
    if (family == AF_INET && setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        die("setsockopt");
    if (bind(s, a, len) != 0)
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

static int consumer(const char *path, int records, int every) {
    struct sockaddr_un a = unix_addr_of(path);
    unlink(path);
    int l = listen_on(AF_UNIX, (struct sockaddr *)&a, sizeof a);
    int c = accept(l, NULL, NULL);
    if (c < 0)
        die("accept");
    char rec[REC];
    size_t have = 0;
    uint32_t sum = 2166136261u;
    for (int n = 0; n < records;) {
        ssize_t r = read(c, rec + have, REC - have);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (r == 0) {
            fprintf(stderr, "the stream ended after %d records\n", n);
            return 1;
        }
        have += (size_t)r;
        if (have < REC)
            continue;
        have = 0;
        int k;
        if (sscanf(rec, "rec %d", &k) != 1) {
            fprintf(stderr, "bad record %.12s\n", rec);
            return 1;
        }
        sum = (sum ^ (uint32_t)k) * 16777619u;
        n++;
        if (n % every == 0)
            printf("n=%d last=%d sum=%08x\n", n, k, sum);
        fflush(stdout);
    }
    printf("done\n");
    close(c);
    close(l);
    unlink(path);
    return 0;
}

static int relay(int port, const char *path) {
    struct sockaddr_in in = inet_addr_of(port);
    int l = listen_on(AF_INET, (struct sockaddr *)&in, sizeof in);
    struct sockaddr_un un = unix_addr_of(path);
    int out = connect_retry(AF_UNIX, (struct sockaddr *)&un, sizeof un);
    int c = accept(l, NULL, NULL);
    if (c < 0)
        die("accept");
    char buf[512];
    for (;;) {
        ssize_t r = read(c, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (r == 0)
            break;
        if (write_all(out, buf, (size_t)r) != 0)
            die("write");
    }
    close(out);
    close(c);
    close(l);
    return 0;
}

static int producer(int port, int records) {
    struct sockaddr_in a = inet_addr_of(port);
    int s = connect_retry(AF_INET, (struct sockaddr *)&a, sizeof a);
    char rec[REC + 1];
    for (int k = 1; k <= records; k++) {
        snprintf(rec, sizeof rec, "rec %08d\n", k);
        if (write_all(s, rec, REC) != 0)
            die("write");
        pause_ms(1);
    }
    close(s);
    return 0;
}

static const char *errname(int e) {
    switch (e) {
    case ECONNRESET: return "ECONNRESET";
    case EPIPE: return "EPIPE";
    case ENOTCONN: return "ENOTCONN";
    default: return "other";
    }
}

static int client(int port) {
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in a = inet_addr_of(port);
    int s = connect_retry(AF_INET, (struct sockaddr *)&a, sizeof a);
    char line[64], buf[64];
    for (int k = 1; k <= 1000; k++) {
        int n = snprintf(line, sizeof line, "ping %d\n", k);
        if (write_all(s, line, (size_t)n) != 0) {
            printf("error: write: %s\n", errname(errno));
            return 0;
        }
        size_t have = 0;
        while (have == 0 || buf[have - 1] != '\n') {
            ssize_t r = read(s, buf + have, sizeof buf - 1 - have);
            if (r < 0) {
                printf("error: read: %s\n", errname(errno));
                return 0;
            }
            if (r == 0) {
                printf("eof\n");
                return 0;
            }
            have += (size_t)r;
        }
        buf[have] = 0;
        printf("got %s", buf);
        fflush(stdout);
        pause_ms(20);
    }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "consumer") == 0)
        return consumer(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "relay") == 0)
        return relay(atoi(argv[2]), argv[3]);
    if (argc == 4 && strcmp(argv[1], "producer") == 0)
        return producer(atoi(argv[2]), atoi(argv[3]));
    if (argc == 3 && strcmp(argv[1], "client") == 0)
        return client(atoi(argv[2]));
    fprintf(stderr, "usage: stream consumer PATH RECORDS EVERY | relay PORT PATH | "
                    "producer PORT RECORDS | client PORT\n");
    return 2;
}
