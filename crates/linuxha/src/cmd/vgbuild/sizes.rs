//! Sizes: DRBD 8.4's internal metadata, LVM's extents, and sizes as people read them.

/// A sector, as DRBD counts.
const SECTOR: u64 = 512;

/// The size of DRBD 8.4's internal metadata at the end of a device of `device_bytes`: 36 KiB
/// (superblock and activity log) plus the bitmap, one bit per 4 KiB of data, in 4 KiB pieces
/// (the DRBD user's guide: `ceil(Cs / 2^18) * 8 + 72` sectors).
pub fn internal_metadata_bytes(device_bytes: u64) -> u64 {
    let sectors = device_bytes / SECTOR;
    (sectors.div_ceil(1 << 18) * 8 + 72) * SECTOR
}

/// The smallest device size whose space before DRBD's internal metadata holds `data_bytes`
/// (the data the metadata must not overwrite), before rounding to extents.
pub fn size_keeping(data_bytes: u64) -> u64 {
    let mut size = data_bytes + internal_metadata_bytes(data_bytes);
    while size - internal_metadata_bytes(size) < data_bytes {
        size = data_bytes + internal_metadata_bytes(size);
    }
    size
}

/// `bytes` rounded up to whole extents (as `lvcreate -L` and `lvextend -L` allocate).
pub fn round_up(bytes: u64, extent: u64) -> u64 {
    if extent == 0 {
        bytes
    } else {
        bytes.div_ceil(extent).saturating_mul(extent)
    }
}

/// A size as people read it: `256 MiB`, `1.5 GiB`, `44 KiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] =
        [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            return if bytes % size == 0 {
                format!("{} {unit}", bytes / size)
            } else {
                let value = bytes as f64 / size as f64;
                let text = format!("{value:.1}");
                format!("{} {unit}", text.trim_end_matches(".0"))
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_sizes_follow_drbds_formula() {
        // 256 MiB: 64 Ki blocks of 4 KiB, 8 KiB of bitmap, plus 36 KiB.
        assert_eq!(internal_metadata_bytes(256 << 20), 44 << 10);
        // 1 TiB: 32 MiB of bitmap.
        assert_eq!(internal_metadata_bytes(1 << 40), (32 << 20) + (36 << 10));
        for data in [8u64 << 20, 256 << 20, (128 << 30) - 4096, 1 << 40] {
            let size = size_keeping(data);
            assert!(size - internal_metadata_bytes(size) >= data, "{data}");
            assert!(size - 8 * SECTOR - internal_metadata_bytes(size - 8 * SECTOR) < data);
        }
    }

    #[test]
    fn rounding_and_human_sizes() {
        assert_eq!(round_up(256 << 20, 4 << 20), 256 << 20);
        assert_eq!(round_up((256 << 20) + 1, 4 << 20), 260 << 20);
        assert_eq!(round_up(5, 0), 5);
        assert_eq!(human(256 << 20), "256 MiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(44 << 10), "44 KiB");
        assert_eq!(human(100), "100 bytes");
        assert_eq!(human((256 << 20) + (1 << 20) / 10), "256.1 MiB");
    }
}
