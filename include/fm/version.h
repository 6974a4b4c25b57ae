/* version.h - what a bug report needs to know about this build and this
 * process: fmtrain's version and git revision, the compiler and flags, the
 * oneDNN version and the instruction set it runs, the MPI library, and the
 * OpenMP threads and their binding. `fmtrain --version` prints it, and every
 * run logs it first (rank 0). */
#ifndef FM_VERSION_H
#define FM_VERSION_H

#include <stddef.h>

#define FM_VERSION "0.1.0"

/* The report as lines separated by '\n' (no final newline) into buf[n],
 * truncated to fit. ranks > 0 adds the world size to the MPI line. Callable
 * before MPI_Init. */
void fm_version_text(char *buf, size_t n, int ranks);

#endif
