/*
 * crc32c.h - CRC32C (Castagnoli), the checksum of the journal's frames. Ground floor: includes
 * nothing of mltrack.
 */
#ifndef MLT_CRC32C_H
#define MLT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC32C of data, continuing from crc (0 to start). Any thread. */
uint32_t mlt__crc32c(uint32_t crc, const void *data, size_t len);

#endif
