/* fifo: a pipeline over FIFOs (named pipes). A producer writes numbered records into a
 * FIFO that a relay reads and forwards into a second FIFO, which a consumer reads,
 * printing a running count and checksum every N records. Each reader makes the FIFO it
 * reads (mkfifo); each writer opens its FIFO by path, waiting until it exists. Ordinary
 * FIFO code: nothing in it knows about Discount Checking.
 *
 *   fifo consumer PATH RECORDS EVERY   (makes PATH, reads it; prints "n=K last=L sum=S"
 *                                        every EVERY records, then "done")
 *   fifo relay IN OUT                   (makes IN, reads it and forwards every byte into
 *                                        OUT until the producer ends)
 *   fifo producer PATH RECORDS          (writes RECORDS records "rec %08d\n" into PATH,
 *                                        one every millisecond)
 *   fifo lines PATH                     (makes PATH, reads it; prints "got LINE" for each
 *                                        line, "eof" at the end of the stream)
 *
 * Every record must reach the consumer exactly once and in order: a lost or repeated
 * record changes the sums it prints. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* Makes the FIFO a reader reads (it may be there already) and opens it for reading
 * (which waits until a writer opens it). */
static int open_reader(const char *path) {
    if (mkfifo(path, 0600) != 0 && errno != EEXIST)
        die("mkfifo");
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("open for reading");
    return fd;
}

/* Opens a FIFO for writing once its reader has made it (which waits until the reader
 * opens it). */
static int open_writer(const char *path) {
    for (int i = 0; i < 2000; i++) {
        int fd = open(path, O_WRONLY);
        if (fd >= 0)
            return fd;
        if (errno != ENOENT)
            die("open for writing");
        pause_ms(10);
    }
    fprintf(stderr, "%s never appeared\n", path);
    exit(1);
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
    int c = open_reader(path);
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
    }
    printf("done\n");
    close(c);
    return 0;
}

static int relay(const char *in_path, const char *out_path) {
    int in = open_reader(in_path);
    int out = open_writer(out_path);
    char buf[512];
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
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
    close(in);
    return 0;
}

static int producer(const char *path, int records) {
    int s = open_writer(path);
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

static int lines(const char *path) {
    FILE *f = fdopen(open_reader(path), "r");
    if (!f)
        die("fdopen");
    char line[256];
    while (fgets(line, sizeof line, f))
        printf("got %s", line);
    printf("eof\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "consumer") == 0)
        return consumer(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 4 && strcmp(argv[1], "relay") == 0)
        return relay(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "producer") == 0)
        return producer(argv[2], atoi(argv[3]));
    if (argc == 3 && strcmp(argv[1], "lines") == 0)
        return lines(argv[2]);
    fprintf(stderr, "usage: fifo consumer PATH RECORDS EVERY | relay IN OUT | "
                    "producer PATH RECORDS | lines PATH\n");
    return 2;
}
