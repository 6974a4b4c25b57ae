"""crc32c.py - CRC32C (Castagnoli, reflected, table-driven) in pure Python, for
the tests that check or rewrite fmtrain's checksums without fmtrain's code
(tests/parity/test_ckpt_numpy.py, tests/fault/stedit.py)."""

_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data, crc=0):
    """The CRC32C of data, continuing from crc (0 to start)."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
