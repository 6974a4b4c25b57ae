/* fuzz_file.h - the harnesses' input as a file (fuzz_file.c). */
#ifndef FUZZ_FILE_H
#define FUZZ_FILE_H

#include <stddef.h>
#include <stdint.h>

/* An in-memory file (memfd) holding data[0..size); path (n bytes) <- its
 * name under /proc/self/fd. Returns its descriptor (close it after), or -1. */
int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t n);

#endif
