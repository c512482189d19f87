/* selfpipe: an event loop's self-pipe (a pipe whose both ends the process keeps). It puts
 * three numbered items into the pipe, then at each of N steps waits for the pipe with
 * poll, takes one item, prints it and puts the next one in, so the pipe always holds
 * items the process has not taken yet. Ordinary code: nothing in it knows about
 * Discount Checking.
 *
 *   selfpipe N   prints "item K (step K)" for K = 1..N, then "done"; "empty at step K"
 *                (and exits 1) if the pipe held nothing when an item was due
 */
#define _GNU_SOURCE /* pipe2 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define ITEM 11 /* "item %05d\n" */

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void put(int fd, int k) {
    char rec[ITEM + 1];
    snprintf(rec, sizeof rec, "item %05d\n", k);
    if (write(fd, rec, ITEM) != ITEM)
        die("write");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2)
        return 2;
    int n = atoi(argv[1]);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        die("pipe2");
    int next = 1;
    for (; next <= 3 && next <= n; next++)
        put(p[1], next);
    for (int i = 1; i <= n; i++) {
        struct pollfd q = {.fd = p[0], .events = POLLIN};
        if (poll(&q, 1, 1000) != 1) {
            printf("empty at step %d\n", i);
            return 1;
        }
        char got[ITEM + 1];
        if (read(p[0], got, ITEM) != ITEM)
            die("read");
        got[ITEM - 1] = 0;
        printf("%s (step %d)\n", got, i);
        if (next <= n)
            put(p[1], next++);
        struct timespec t = {0, 2000000};
        nanosleep(&t, NULL);
    }
    printf("done\n");
    return 0;
}
