/* A member of a computation for the two-phase-commit tests (dc/tests/twopc.rs): an
 * ordinary program, nothing Discount-Checking-specific. It prints one line per step with
 * a running sum and reads the clock (a non-deterministic event) at every step. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int id = argc > 1 ? atoi(argv[1]) : 0;
    int n = argc > 2 ? atoi(argv[2]) : 20;
    long ms = argc > 3 ? atol(argv[3]) : 20;
    long sum = 0;
    for (int i = 1; i <= n; i++) {
        sum += (long)i * (id + 1);
        struct timespec now, ts = {0, ms * 1000000L};
        clock_gettime(CLOCK_MONOTONIC, &now);
        nanosleep(&ts, 0);
        printf("member %d step %d sum %ld\n", id, i, sum);
        fflush(stdout);
    }
    return 0;
}
