/* Discount Checking: failure transparency for single-threaded C programs.
 *
 *   #include "dc.h"
 *   int main(int argc, char **argv) {
 *       if (dc_init() != 0) return 1;   // first line of main
 *       ...                               // the program, unchanged
 *   }
 *
 * Link with libdiscount.a (built by `cargo build -p discount`, in target/<profile>/):
 *   cc prog.c -Iuserlib/discount/include target/release/libdiscount.a \
 *      -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
 *
 * Configuration comes from the environment: DC_DIR (state directory), DC_PROTOCOL
 * (manual, cand, cpvs, cbndvs, cand-log, cbndvs-log), DC_INTERVAL_MS, DC_TRACE, ...
 * (see the crate README). Use read/write/open directly for input, output and files:
 * glibc's stdio calls the kernel through private entry points that are not intercepted.
 */
#ifndef DC_H
#define DC_H

#ifdef __cplusplus
extern "C" {
#endif

/* Makes the program recoverable. Re-executes the program (first run: with ASLR off;
 * after a crash: as first started, resuming from the last checkpoint). Returns 0, or
 * -1 after printing why to stderr. */
int dc_init(void);

/* Takes a checkpoint: 0 after a checkpoint, 1 when returning a second time after a
 * crash and recovery, -1 on error. */
int dc_checkpoint(void);

#ifdef __cplusplus
}
#endif

#endif
