/* crc32c.h - CRC-32C (Castagnoli), as in iSCSI/ext4: the checksum stored per
 * tensor in checkpoints. */
#ifndef FM_CRC32C_H
#define FM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc (start from 0) over n bytes. */
uint32_t fm_crc32c(uint32_t crc, const void *buf, size_t n);

#endif
