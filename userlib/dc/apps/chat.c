/* chat: an interactive client/server program with several clients and frequent visible
 * events (the role xpilot plays in the thesis's Figure 6.7): a chat server that puts the
 * clients' lines in one order and sends them to every client, over UDP with its own
 * acknowledgements and retransmission. Ordinary socket code: nothing in it knows about
 * Discount Checking.
 *
 *   chat server PORT NCLIENTS          (prints "#G NAME: TEXT" for each line it orders)
 *   chat client ID NAME SERVER:PORT     (sends its stdin's lines, prints "[G] NAME: TEXT"
 *                                        for every line of the conversation, in order)
 *
 * A client posts one line at a time until the server acknowledges it (the server drops
 * repeats by the client's sequence number), and acknowledges the conversation
 * cumulatively; the server repeats what a client has not acknowledged. When every client
 * has said goodbye (its stdin ended) and has every line, the server says the end and
 * both exit. Every client must print the same conversation, the server's order. */
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x43484154u
#define TEXT 160
#define MAXLOG 4096
#define MAXC 16
enum { POST = 1, POSTACK, DELIVER, DACK, BYE, END, ENDACK };
struct msg { uint32_t magic, kind, cid, seq, from; char text[TEXT]; };

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int udp(int port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) { perror("socket"); exit(2); }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(2); }
    return s;
}

static int server(int port, int nc) {
    int s = udp(port);
    static struct { uint32_t from; char text[TEXT]; } log[MAXLOG];
    uint32_t g = 0, expect[MAXC] = {0}, acked[MAXC] = {0}, posts[MAXC] = {0};
    int known[MAXC] = {0}, bye[MAXC] = {0}, endack[MAXC] = {0};
    struct sockaddr_in addr[MAXC];
    long last = 0, linger = -1;
    for (;;) {
        long t = now_ms();
        int all_bye = 1, all_end = 1;
        for (int c = 0; c < nc; c++) {
            all_bye &= bye[c] && expect[c] == posts[c];
            all_end &= endack[c];
        }
        if (all_end && linger < 0) linger = t + 200;
        if (linger >= 0 && t >= linger) break;
        if (t - last >= 10) {
            for (int c = 0; c < nc; c++) {
                if (!known[c]) continue;
                struct msg m = { MAGIC, DELIVER, (uint32_t)c, 0, 0, "" };
                for (uint32_t k = acked[c] + 1; k <= g && k <= acked[c] + 8; k++) {
                    m.seq = k; m.from = log[k - 1].from;
                    memcpy(m.text, log[k - 1].text, TEXT);
                    sendto(s, &m, sizeof m, 0, (struct sockaddr *)&addr[c], sizeof addr[c]);
                }
                if (all_bye && acked[c] == g) {
                    struct msg e = { MAGIC, END, (uint32_t)c, g, 0, "" };
                    sendto(s, &e, sizeof e, 0, (struct sockaddr *)&addr[c], sizeof addr[c]);
                }
            }
            last = t;
        }
        struct pollfd p = { s, POLLIN, 0 };
        if (poll(&p, 1, 10) <= 0) continue;
        struct msg m;
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t r = recvfrom(s, &m, sizeof m, 0, (struct sockaddr *)&from, &fl);
        if (r != sizeof m || m.magic != MAGIC || m.cid >= (uint32_t)nc) continue;
        int c = m.cid;
        addr[c] = from; known[c] = 1;
        m.text[TEXT - 1] = 0;
        if (m.kind == POST) {
            if (m.seq == expect[c] + 1 && g < MAXLOG) {
                log[g].from = c;
                memcpy(log[g].text, m.text, TEXT);
                g++;
                expect[c]++;
                printf("#%u %s\n", g, m.text);
                fflush(stdout);
            }
            if (m.seq <= expect[c]) {
                struct msg a = { MAGIC, POSTACK, (uint32_t)c, m.seq, 0, "" };
                sendto(s, &a, sizeof a, 0, (struct sockaddr *)&from, fl);
            }
        } else if (m.kind == DACK) {
            if (m.seq > acked[c] && m.seq <= g) acked[c] = m.seq;
        } else if (m.kind == BYE) {
            bye[c] = 1; posts[c] = m.seq;
        } else if (m.kind == ENDACK) {
            endack[c] = 1;
        }
    }
    printf("server: %u lines from %d clients\n", g, nc);
    return 0;
}

static int client(int cid, const char *name, char *server_addr) {
    char *colon = strrchr(server_addr, ':');
    if (!colon) { fprintf(stderr, "chat: SERVER:PORT\n"); return 2; }
    *colon = 0;
    struct sockaddr_in srv = { .sin_family = AF_INET, .sin_port = htons(atoi(colon + 1)) };
    if (inet_pton(AF_INET, server_addr, &srv.sin_addr) != 1) { fprintf(stderr, "chat: bad address\n"); return 2; }
    int s = udp(0);
    uint32_t posted = 0, next = 1, total = 0;
    int eof = 0, pending = 0, ended = 0;
    char line[TEXT];
    struct msg out = { MAGIC, POST, (uint32_t)cid, 0, 0, "" };
    long last = 0, linger = -1;
    for (;;) {
        long t = now_ms();
        if (linger >= 0 && t >= linger) break;
        if (!pending && !eof) {
            if (fgets(line, sizeof line, stdin)) {
                line[strcspn(line, "\n")] = 0;
                out.kind = POST; out.seq = ++posted;
                snprintf(out.text, TEXT, "%s: %s", name, line);
                pending = 1; last = 0;
            } else {
                eof = 1;
            }
        }
        if (t - last >= 20) {
            if (pending) sendto(s, &out, sizeof out, 0, (struct sockaddr *)&srv, sizeof srv);
            struct msg a = { MAGIC, DACK, (uint32_t)cid, next - 1, 0, "" };
            sendto(s, &a, sizeof a, 0, (struct sockaddr *)&srv, sizeof srv);
            if (eof && !pending) {
                struct msg b = { MAGIC, BYE, (uint32_t)cid, posted, 0, "" };
                sendto(s, &b, sizeof b, 0, (struct sockaddr *)&srv, sizeof srv);
            }
            last = t;
        }
        struct pollfd p = { s, POLLIN, 0 };
        if (poll(&p, 1, 10) <= 0) continue;
        struct msg m;
        if (recv(s, &m, sizeof m, 0) != sizeof m || m.magic != MAGIC) continue;
        m.text[TEXT - 1] = 0;
        if (m.kind == POSTACK && pending && m.seq == out.seq) {
            pending = 0;
        } else if (m.kind == DELIVER && m.seq == next) {
            printf("[%u] %s\n", m.seq, m.text);
            fflush(stdout);
            next++;
        } else if (m.kind == END && m.seq == next - 1) {
            total = m.seq;
            struct msg e = { MAGIC, ENDACK, (uint32_t)cid, total, 0, "" };
            sendto(s, &e, sizeof e, 0, (struct sockaddr *)&srv, sizeof srv);
            if (!ended) { ended = 1; linger = t + 200; }
        }
    }
    printf("%s: %u lines in the conversation\n", name, total);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "server")) return server(atoi(argv[2]), atoi(argv[3]));
    if (argc == 5 && !strcmp(argv[1], "client")) return client(atoi(argv[2]), argv[3], argv[4]);
    fprintf(stderr, "usage: chat server PORT NCLIENTS | chat client ID NAME SERVER:PORT\n");
    return 2;
}
