/* heat: a message-passing parallel computation (the role TreadMarks Barnes-Hut plays in
 * the thesis's Figure 6.6): an explicit 1-D heat-diffusion stencil split over N worker
 * processes that exchange their boundary cells over UDP every step, with their own
 * retransmission. Ordinary socket code: nothing in it knows about Discount Checking.
 *
 *   heat ID STEPS CELLS PRINT_EVERY PEERS
 *
 * PEERS is "ip:port,ip:port,..." (one per worker; worker ID binds its own). Worker 0
 * prints "step S" every PRINT_EVERY steps; at the end every worker prints the checksum of
 * its cells (the result is deterministic: a failure-free run and one with crashes must
 * print the same).
 *
 * Messages: { magic, kind, from, step, value, prev }. kind 1: my boundary cell facing you
 * at the start of `step`, and at the start of the step before; kind 2: I have finished.
 * A worker at step s needs each neighbour's boundary of step s; a neighbour may be one
 * step ahead (its message carries the value of step s too, and its own is kept) or behind
 * (it lost mine: I send my value of its step again, I keep two steps of history). While
 * waiting it repeats its own value every 10 ms. After the last step it repeats "finished"
 * until each neighbour has said the same, and lingers a little answering late requests. */
#include <arpa/inet.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x48454154u
struct msg { uint32_t magic, kind, from, step; double value, prev; };

static int sock, id, n;
static struct sockaddr_in peers[64];

static void die(const char *what) { perror(what); exit(2); }

static void parse_peers(char *s) {
    n = 0;
    for (char *tok = strtok(s, ","); tok && n < 64; tok = strtok(NULL, ",")) {
        char *colon = strchr(tok, ':');
        if (!colon) { fprintf(stderr, "heat: bad peer %s\n", tok); exit(2); }
        *colon = 0;
        memset(&peers[n], 0, sizeof peers[n]);
        peers[n].sin_family = AF_INET;
        peers[n].sin_port = htons(atoi(colon + 1));
        if (inet_pton(AF_INET, tok, &peers[n].sin_addr) != 1) { fprintf(stderr, "heat: bad address %s\n", tok); exit(2); }
        n++;
    }
}

static void send_to(int to, uint32_t kind, uint32_t step, double v, double prev) {
    struct msg m = { MAGIC, kind, (uint32_t)id, step, v, prev };
    sendto(sock, &m, sizeof m, 0, (struct sockaddr *)&peers[to], sizeof peers[to]);
}

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: heat ID STEPS CELLS PRINT_EVERY PEERS\n"); return 2; }
    id = atoi(argv[1]);
    int steps = atoi(argv[2]), cells = atoi(argv[3]), every = atoi(argv[4]);
    parse_peers(argv[5]);
    if (id < 0 || id >= n || cells < 1 || steps < 1) { fprintf(stderr, "heat: bad arguments\n"); return 2; }
    sock = socket(AF_INET, SOCK_DGRAM, 0);
    if (sock < 0) die("socket");
    int one = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(sock, (struct sockaddr *)&peers[id], sizeof peers[id]) < 0) die("bind");

    double *u = calloc(cells + 2, sizeof *u), *nu = calloc(cells + 2, sizeof *nu);
    for (int i = 1; i <= cells; i++) {
        double x = (double)(id * cells + i - 1) / (double)(n * cells);
        u[i] = sin(3.14159265358979 * x) + (x > 0.4 && x < 0.6 ? 1.0 : 0.0);
    }
    /* My boundary values of the last three steps: hist[s % 3][0] left cell, [1] right. */
    double hist[3][2];
    /* A neighbour's value for step s+1 that arrived early: [0] left, [1] right. */
    int early_have[2] = {0, 0};
    double early[2];
    int left = id - 1, right = id + 1 < n ? id + 1 : -1;
    for (int s = 0; s < steps; s++) {
        hist[s % 3][0] = u[1];
        hist[s % 3][1] = u[cells];
        int have_l = left < 0, have_r = right < 0;
        u[0] = 0.0; u[cells + 1] = 0.0;
        if (!have_l && early_have[0]) { u[0] = early[0]; have_l = 1; early_have[0] = 0; }
        if (!have_r && early_have[1]) { u[cells + 1] = early[1]; have_r = 1; early_have[1] = 0; }
        long last = 0;
        while (!have_l || !have_r) {
            if (now_ms() - last >= 10) {
                double pl = s > 0 ? hist[(s - 1) % 3][0] : 0, pr = s > 0 ? hist[(s - 1) % 3][1] : 0;
                if (left >= 0) send_to(left, 1, s, u[1], pl);
                if (right >= 0) send_to(right, 1, s, u[cells], pr);
                last = now_ms();
            }
            struct pollfd p = { sock, POLLIN, 0 };
            if (poll(&p, 1, 10) <= 0) continue;
            struct msg m;
            ssize_t r = recv(sock, &m, sizeof m, 0);
            if (r != sizeof m || m.magic != MAGIC || m.kind != 1) continue;
            int side = (int)m.from == left ? 0 : (int)m.from == right ? 1 : -1;
            if (side < 0) continue;
            if ((int)m.step == s) {
                if (side == 0 && !have_l) { u[0] = m.value; have_l = 1; }
                if (side == 1 && !have_r) { u[cells + 1] = m.value; have_r = 1; }
            } else if ((int)m.step == s + 1) {
                if (side == 0 && !have_l) { u[0] = m.prev; have_l = 1; }
                if (side == 1 && !have_r) { u[cells + 1] = m.prev; have_r = 1; }
                early[side] = m.value; early_have[side] = 1;
            } else if ((int)m.step == s - 1) {
                send_to(m.from, 1, s - 1, hist[(s - 1) % 3][side], s > 1 ? hist[(s - 2) % 3][side] : 0);
            }
        }
        for (int i = 1; i <= cells; i++)
            nu[i] = u[i] + 0.25 * (u[i - 1] - 2.0 * u[i] + u[i + 1]);
        double *t = u; u = nu; nu = t;
        if (id == 0 && every > 0 && (s + 1) % every == 0) {
            printf("step %d\n", s + 1);
            fflush(stdout);
        }
    }
    /* Finish: a neighbour still at the last step may need my last value again. */
    int fin_l = left < 0, fin_r = right < 0;
    long last = 0, linger_until = -1;
    hist[steps % 3][0] = u[1];
    hist[steps % 3][1] = u[cells];
    for (;;) {
        long t = now_ms();
        if (fin_l && fin_r && linger_until < 0) linger_until = t + 200;
        if (linger_until >= 0 && t >= linger_until) break;
        if (t - last >= 10) {
            if (left >= 0) send_to(left, 2, steps, 0, 0);
            if (right >= 0) send_to(right, 2, steps, 0, 0);
            last = t;
        }
        struct pollfd p = { sock, POLLIN, 0 };
        if (poll(&p, 1, 10) <= 0) continue;
        struct msg m;
        ssize_t r = recv(sock, &m, sizeof m, 0);
        if (r != sizeof m || m.magic != MAGIC) continue;
        int side = (int)m.from == left ? 0 : (int)m.from == right ? 1 : -1;
        if (side < 0) continue;
        if (m.kind == 2) {
            if (side == 0) fin_l = 1; else fin_r = 1;
        } else if (m.kind == 1 && (int)m.step == steps - 1) {
            send_to(m.from, 1, steps - 1, hist[(steps - 1) % 3][side], steps > 1 ? hist[(steps - 2) % 3][side] : 0);
        }
    }
    double sum = 0;
    for (int i = 1; i <= cells; i++) sum += u[i] * (double)(id * cells + i);
    printf("worker %d checksum %.17g\n", id, sum);
    fflush(stdout);
    close(sock);
    return 0;
}
