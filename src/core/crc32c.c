/* crc32c.c - CRC-32C, with the SSE4.2 instruction when the build has it. */
#include "fm/crc32c.h"

#include <string.h>
#ifdef __SSE4_2__
#include <nmmintrin.h>
#endif

#ifndef __SSE4_2__
static uint32_t crc_table_entry(uint32_t c)
{
    for (int k = 0; k < 8; k++)
        c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    return c;
}
#endif

uint32_t fm_crc32c(uint32_t crc, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    crc = ~crc;
#ifdef __SSE4_2__
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    crc = (uint32_t)c;
    while (n--)
        crc = _mm_crc32_u8(crc, *p++);
#else
    while (n--)
        crc = (crc >> 8) ^ crc_table_entry((crc ^ *p++) & 0xffu);
#endif
    return ~crc;
}
