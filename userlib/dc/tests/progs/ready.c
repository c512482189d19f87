/* ready: a reader that waits for its input with a readiness call. Ordinary code: nothing
 * in it knows about Discount Checking.
 *
 *   ready fifo-writer PATH       opens the FIFO PATH for writing (once it exists), writes
 *                                "hello\n", waits 2 s, exits
 *   ready fifo-reader PATH CALL  makes the FIFO PATH and opens it for reading; once bytes
 *                                are in it (FIONREAD) prints "ready", then waits for input
 *                                with CALL (select, pselect, epoll, ppoll; at most 1 s)
 *                                and prints "got LINE", or "timeout" if CALL says nothing
 *                                is readable
 *   ready tcp-writer PORT        connects to 127.0.0.1:PORT, writes "hello\n", waits 2 s
 *   ready tcp-reader PORT CALL   listens on 127.0.0.1:PORT, accepts one connection, then as
 *                                fifo-reader
 *   ready fifo-late-writer PATH  opens the FIFO PATH for writing, waits 300 ms, prints
 *                                "writing", then as fifo-writer
 *   ready fifo-waiter PATH CALL  makes the FIFO PATH, opens it for reading, waits for input
 *                                with CALL without a timeout, prints "got LINE"
 *
 * CALL "none": no readiness call (fifo-reader then prints "ready" and "got LINE" as soon
 * as FIONREAD, polled with 10 ms sleeps between, sees the bytes).
 */
#define _GNU_SOURCE /* ppoll */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&t, NULL);
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Writes the line, then stays (waiting in poll) so that the reader's end keeps a writer;
 * `late`: first waits and says so on stdout. */
static int writer(int fd, int late) {
    if (late) {
        pause_ms(300);
        printf("writing\n");
    }
    if (write(fd, "hello\n", 6) != 6)
        die("write");
    poll(NULL, 0, 2000);
    close(fd);
    return 0;
}

/* Waits (at most 1 s; `forever`: without a timeout) with `call` until `fd` is readable:
 * 1 if it is, 0 if not. */
static int wait_readable(int fd, const char *call, int forever) {
    if (strcmp(call, "none") == 0)
        return 1;
    if (strcmp(call, "select") == 0 || strcmp(call, "pselect") == 0) {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(fd, &r);
        int n;
        if (call[0] == 's') {
            struct timeval tv = {1, 0};
            n = select(fd + 1, &r, NULL, NULL, forever ? NULL : &tv);
        } else {
            struct timespec ts = {1, 0};
            n = pselect(fd + 1, &r, NULL, NULL, forever ? NULL : &ts, NULL);
        }
        if (n < 0)
            die(call);
        return n == 1 && FD_ISSET(fd, &r);
    }
    if (strcmp(call, "epoll") == 0) {
        int ep = epoll_create1(0);
        if (ep < 0)
            die("epoll_create1");
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            die("epoll_ctl");
        struct epoll_event out[4];
        int n = epoll_wait(ep, out, 4, forever ? -1 : 1000);
        if (n < 0)
            die("epoll_wait");
        close(ep);
        return n == 1 && out[0].data.u64 == 42 && (out[0].events & EPOLLIN);
    }
    if (strcmp(call, "ppoll") == 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        struct timespec ts = {1, 0};
        int n = ppoll(&p, 1, forever ? NULL : &ts, NULL);
        if (n < 0)
            die("ppoll");
        return n == 1 && (p.revents & POLLIN);
    }
    fprintf(stderr, "unknown call %s\n", call);
    exit(2);
}

/* `forever`: waits for input at once, without a timeout; else first until bytes are in
 * the FIFO, then says "ready" and waits at most 1 s. */
static int reader(int fd, const char *call, int forever) {
    int n = 0;
    while (!forever && ioctl(fd, FIONREAD, &n) == 0 && n == 0)
        pause_ms(10);
    if (!forever)
        printf("ready\n");
    if (!wait_readable(fd, call, forever)) {
        printf("timeout\n");
        return 0;
    }
    char buf[64];
    ssize_t r = read(fd, buf, sizeof buf - 1);
    if (r < 0)
        die("read");
    buf[r] = 0;
    printf("got %s", buf);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int late = argc == 3 && strcmp(argv[1], "fifo-late-writer") == 0;
    if (late || (argc == 3 && strcmp(argv[1], "fifo-writer") == 0)) {
        for (int i = 0; i < 500; i++) {
            int fd = open(argv[2], O_WRONLY);
            if (fd >= 0)
                return writer(fd, late);
            if (errno != ENOENT)
                die("open");
            pause_ms(10);
        }
        return 1;
    }
    int waiter = argc == 4 && strcmp(argv[1], "fifo-waiter") == 0;
    if (waiter || (argc == 4 && strcmp(argv[1], "fifo-reader") == 0)) {
        if (mkfifo(argv[2], 0600) != 0 && errno != EEXIST)
            die("mkfifo");
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0)
            die("open");
        return reader(fd, argv[3], waiter);
    }
    if (argc == 3 && strcmp(argv[1], "tcp-writer") == 0) {
        struct sockaddr_in a = loopback(atoi(argv[2]));
        for (int i = 0; i < 500; i++) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (s < 0)
                die("socket");
            if (connect(s, (struct sockaddr *)&a, sizeof a) == 0)
                return writer(s, 0);
            close(s);
            pause_ms(10);
        }
        return 1;
    }
    if (argc == 4 && strcmp(argv[1], "tcp-reader") == 0) {
        struct sockaddr_in a = loopback(atoi(argv[2]));
        int l = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
            die("socket");
        if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0)
            die("bind");
        int c = accept(l, NULL, NULL);
        if (c < 0)
            die("accept");
        return reader(c, argv[3], 0);
    }
    fprintf(stderr, "usage: ready fifo-writer PATH | fifo-reader PATH CALL | tcp-writer PORT | "
                    "tcp-reader PORT CALL | fifo-late-writer PATH | fifo-waiter PATH CALL\n");
    return 2;
}
