//! Extraction of the ELF `vmlinux` from an x86 bzImage.
//!
//! The x86 boot protocol header gives the payload position:
//! `payload_offset` and `payload_length` count from the start of the
//! protected-mode code, which follows the `setup_sects + 1` sectors of
//! real-mode setup code.

use std::io::{self, Read};

const SECTOR: usize = 512;
const SETUP_SECTS_OFFSET: usize = 0x1f1;
const HEADER_MAGIC_OFFSET: usize = 0x202;
const HEADER_MAGIC: &[u8] = b"HdrS";
const VERSION_OFFSET: usize = 0x206;
const PAYLOAD_OFFSET_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH_OFFSET: usize = 0x24c;
/// Boot protocol 2.08 added `payload_offset` and `payload_length`.
const MIN_PROTOCOL_VERSION: u16 = 0x0208;

const ELF_MAGIC: &[u8] = b"\x7fELF";
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
const BZIP2_MAGIC: &[u8] = b"BZh";
const LZMA_MAGIC: &[u8] = &[0x5d, 0x00, 0x00];
const LZO_MAGIC: &[u8] = &[0x89, 0x4c, 0x5a, 0x4f];

/// Maximum decompressed size of one LZ4 legacy block (8 MiB).
const LZ4_LEGACY_BLOCK_MAX: usize = 8 << 20;
/// Upper bound on the decompressed kernel, which guards against a corrupt
/// payload expanding without end. The vmlinux of Debian's 6.1 cloud kernel
/// is 51 MiB.
const MAX_VMLINUX_BYTES: u64 = 1 << 30;

/// Errors from reading a bzImage and decompressing its payload.
#[derive(Debug, thiserror::Error)]
pub enum BzImageError {
    #[error("not a bzImage: {0}")]
    NotBzImage(String),
    #[error("bzImage is truncated: {0}")]
    Truncated(String),
    #[error(
        "bzImage payload uses {0} compression, which banger does not support; use a kernel compressed with gzip, xz, zstd or LZ4"
    )]
    UnsupportedCompression(&'static str),
    #[error("bzImage payload has an unknown compression magic {0}")]
    UnknownCompression(String),
    #[error("failed to decompress the {codec} payload of the bzImage")]
    Decompress {
        codec: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("decompressed kernel exceeds {MAX_VMLINUX_BYTES} bytes")]
    TooLarge,
    #[error("decompressed kernel is not an ELF file (starts with {0})")]
    NotElf(String),
}

/// Returns whether `bytes` carries the x86 boot header magic of a bzImage.
pub fn has_header_magic(bytes: &[u8]) -> bool {
    bytes.get(HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4) == Some(HEADER_MAGIC)
}

/// Returns the compressed payload inside `bzimage`.
pub fn payload(bzimage: &[u8]) -> Result<&[u8], BzImageError> {
    if bzimage.len() < PAYLOAD_LENGTH_OFFSET + 4 {
        return Err(BzImageError::Truncated(format!(
            "{} bytes is shorter than the setup header",
            bzimage.len()
        )));
    }
    if &bzimage[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4] != HEADER_MAGIC {
        return Err(BzImageError::NotBzImage(
            "missing \"HdrS\" magic at offset 0x202".to_string(),
        ));
    }
    let version = u16::from_le_bytes([bzimage[VERSION_OFFSET], bzimage[VERSION_OFFSET + 1]]);
    if version < MIN_PROTOCOL_VERSION {
        return Err(BzImageError::NotBzImage(format!(
            "boot protocol {}.{:02} predates payload fields (2.08)",
            version >> 8,
            version & 0xff
        )));
    }

    // A zero setup_sects means 4 for compatibility with old boot loaders.
    let setup_sects = match bzimage[SETUP_SECTS_OFFSET] {
        0 => 4,
        count => usize::from(count),
    };
    let protected_mode_start = (setup_sects + 1) * SECTOR;
    let payload_offset = read_u32(bzimage, PAYLOAD_OFFSET_OFFSET) as usize;
    let payload_length = read_u32(bzimage, PAYLOAD_LENGTH_OFFSET) as usize;
    let start = protected_mode_start
        .checked_add(payload_offset)
        .ok_or_else(|| BzImageError::NotBzImage("payload offset overflows".to_string()))?;
    let end = start
        .checked_add(payload_length)
        .ok_or_else(|| BzImageError::NotBzImage("payload length overflows".to_string()))?;
    if payload_length == 0 {
        return Err(BzImageError::NotBzImage("payload length is 0".to_string()));
    }
    if end > bzimage.len() {
        return Err(BzImageError::Truncated(format!(
            "payload ends at byte {end} but the file has {} bytes",
            bzimage.len()
        )));
    }
    Ok(&bzimage[start..end])
}

/// Decompresses the payload of `bzimage` and checks that the result is ELF.
pub fn extract(bzimage: &[u8]) -> Result<Vec<u8>, BzImageError> {
    let payload = payload(bzimage)?;
    let vmlinux = if payload.starts_with(GZIP_MAGIC) {
        read_limited("gzip", flate2::read::GzDecoder::new(payload))?
    } else if payload.starts_with(XZ_MAGIC) {
        decompress_xz(payload)?
    } else if payload.starts_with(ZSTD_MAGIC) {
        let decoder = zstd::stream::read::Decoder::with_buffer(payload)
            .map_err(|source| BzImageError::Decompress {
                codec: "zstd",
                source,
            })?
            .single_frame();
        read_limited("zstd", decoder)?
    } else if payload.len() >= 4 && read_u32(payload, 0) == LZ4_LEGACY_MAGIC {
        decompress_lz4_legacy(payload)?
    } else if payload.starts_with(BZIP2_MAGIC) {
        return Err(BzImageError::UnsupportedCompression("bzip2"));
    } else if payload.starts_with(LZMA_MAGIC) {
        return Err(BzImageError::UnsupportedCompression("lzma"));
    } else if payload.starts_with(LZO_MAGIC) {
        return Err(BzImageError::UnsupportedCompression("lzo"));
    } else {
        let magic_len = payload.len().min(6);
        return Err(BzImageError::UnknownCompression(hex::encode(
            &payload[..magic_len],
        )));
    };

    if !vmlinux.starts_with(ELF_MAGIC) {
        let magic_len = vmlinux.len().min(4);
        return Err(BzImageError::NotElf(hex::encode(&vmlinux[..magic_len])));
    }
    Ok(vmlinux)
}

fn read_limited(codec: &'static str, decoder: impl Read) -> Result<Vec<u8>, BzImageError> {
    let mut output = Vec::new();
    decoder
        .take(MAX_VMLINUX_BYTES + 1)
        .read_to_end(&mut output)
        .map_err(|source| BzImageError::Decompress { codec, source })?;
    if output.len() as u64 > MAX_VMLINUX_BYTES {
        return Err(BzImageError::TooLarge);
    }
    Ok(output)
}

/// Decompresses one xz stream and ignores what follows it: the kernel build
/// appends the 4-byte decompressed size, which `xz2::read::XzDecoder` would
/// report as corrupt data.
fn decompress_xz(payload: &[u8]) -> Result<Vec<u8>, BzImageError> {
    use xz2::stream::{Action, Status, Stream};

    let failed = |source: io::Error| BzImageError::Decompress {
        codec: "xz",
        source,
    };
    let mut stream =
        Stream::new_stream_decoder(u64::MAX, 0).map_err(|err| failed(io::Error::other(err)))?;
    let mut output = Vec::with_capacity(payload.len().saturating_mul(4));
    loop {
        let consumed_before = stream.total_in();
        let produced_before = stream.total_out();
        let input = payload.get(consumed_before as usize..).unwrap_or_default();
        if output.len() == output.capacity() {
            output.reserve(output.len().max(1 << 20));
        }
        let status = stream
            .process_vec(input, &mut output, Action::Run)
            .map_err(|err| failed(io::Error::new(io::ErrorKind::InvalidData, err)))?;
        if status == Status::StreamEnd {
            return Ok(output);
        }
        if output.len() as u64 > MAX_VMLINUX_BYTES {
            return Err(BzImageError::TooLarge);
        }
        let progressed =
            stream.total_in() != consumed_before || stream.total_out() != produced_before;
        if !progressed && output.len() < output.capacity() {
            return Err(failed(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the xz stream ends before its end marker (truncated payload?)",
            )));
        }
    }
}

/// Decompresses the LZ4 legacy frame: the magic, then blocks each preceded
/// by its little-endian compressed size. The kernel build appends the
/// 4-byte decompressed size, which is the last 4 bytes of the payload.
fn decompress_lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, BzImageError> {
    let corrupt = |message: String| BzImageError::Decompress {
        codec: "LZ4",
        source: io::Error::new(io::ErrorKind::InvalidData, message),
    };
    let mut output = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK_MAX];
    let mut offset = 4;
    while offset < payload.len() {
        let remaining = payload.len() - offset;
        if remaining < 4 {
            return Err(corrupt(format!(
                "{remaining} stray bytes after the last block"
            )));
        }
        let word = read_u32(payload, offset);
        offset += 4;
        if offset == payload.len() {
            // The appended size: it ends the payload and must match.
            if word as usize != output.len() {
                return Err(corrupt(format!(
                    "payload ends with size {word} but {} bytes were decompressed",
                    output.len()
                )));
            }
            break;
        }
        if word == LZ4_LEGACY_MAGIC {
            // Concatenated legacy frames repeat the magic.
            continue;
        }
        let block_len = word as usize;
        if block_len == 0 || block_len > payload.len() - offset {
            return Err(corrupt(format!(
                "block at offset {} claims {block_len} bytes but {} remain (truncated payload?)",
                offset - 4,
                payload.len() - offset
            )));
        }
        let written =
            lz4_flex::block::decompress_into(&payload[offset..offset + block_len], &mut block)
                .map_err(|err| corrupt(format!("block at offset {}: {err}", offset - 4)))?;
        output.extend_from_slice(&block[..written]);
        if output.len() as u64 > MAX_VMLINUX_BYTES {
            return Err(BzImageError::TooLarge);
        }
        offset += block_len;
    }
    Ok(output)
}

fn read_u32(data: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        data[offset],
        data[offset + 1],
        data[offset + 2],
        data[offset + 3],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Returns an ELF-looking blob that compresses well but not to nothing.
    fn fake_elf() -> Vec<u8> {
        let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
        for i in 0..200_000u32 {
            elf.extend_from_slice(&(i % 251).to_le_bytes()[..2]);
        }
        elf
    }

    /// Wraps `payload` in a minimal bzImage with `setup_sects` setup sectors.
    fn fake_bzimage(payload: &[u8], setup_sects: u8) -> Vec<u8> {
        let sectors = if setup_sects == 0 {
            4
        } else {
            usize::from(setup_sects)
        };
        let protected_mode_start = (sectors + 1) * SECTOR;
        let payload_offset = 0x3a0usize;
        let mut image = vec![0u8; protected_mode_start + payload_offset];
        image[SETUP_SECTS_OFFSET] = setup_sects;
        image[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4].copy_from_slice(HEADER_MAGIC);
        image[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        image[PAYLOAD_OFFSET_OFFSET..PAYLOAD_OFFSET_OFFSET + 4]
            .copy_from_slice(&(payload_offset as u32).to_le_bytes());
        image[PAYLOAD_LENGTH_OFFSET..PAYLOAD_LENGTH_OFFSET + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(&[0u8; 64]);
        image
    }

    fn with_size_suffix(mut compressed: Vec<u8>, original_len: usize) -> Vec<u8> {
        compressed.extend_from_slice(&(original_len as u32).to_le_bytes());
        compressed
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 1);
        encoder.write_all(data).unwrap();
        with_size_suffix(encoder.finish().unwrap(), data.len())
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        with_size_suffix(zstd::stream::encode_all(data, 3).unwrap(), data.len())
    }

    /// LZ4 legacy frame with blocks of `block_size` input bytes.
    fn lz4_legacy(data: &[u8], block_size: usize) -> Vec<u8> {
        let mut frame = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in data.chunks(block_size) {
            let block = lz4_flex::block::compress(chunk);
            frame.extend_from_slice(&(block.len() as u32).to_le_bytes());
            frame.extend_from_slice(&block);
        }
        with_size_suffix(frame, data.len())
    }

    #[test]
    fn round_trip_each_codec() {
        let elf = fake_elf();
        let cases: [(&str, Vec<u8>); 5] = [
            ("gzip", gzip(&elf)),
            ("xz", xz(&elf)),
            ("zstd", zstd(&elf)),
            ("lz4 one block", lz4_legacy(&elf, LZ4_LEGACY_BLOCK_MAX)),
            ("lz4 many blocks", lz4_legacy(&elf, 64 * 1024)),
        ];
        for (codec, compressed) in cases {
            for setup_sects in [0u8, 27] {
                let image = fake_bzimage(&compressed, setup_sects);
                let extracted = extract(&image)
                    .unwrap_or_else(|err| panic!("{codec}, setup_sects {setup_sects}: {err}"));
                assert!(extracted == elf, "{codec}: round trip differs");
            }
        }
    }

    #[test]
    fn truncated_payload_is_rejected() {
        let elf = fake_elf();
        for (codec, compressed) in [("xz", xz(&elf)), ("lz4", lz4_legacy(&elf, 64 * 1024))] {
            let image = fake_bzimage(&compressed, 27);
            let cut = (27 + 1) * SECTOR + 0x3a0 + compressed.len() / 2;
            let err = extract(&image[..cut]).unwrap_err();
            assert!(matches!(err, BzImageError::Truncated(_)), "{codec}: {err}");
        }
    }

    #[test]
    fn truncated_stream_is_rejected() {
        // The header is intact but the payload length covers only half of
        // the compressed data.
        let elf = fake_elf();
        for (codec, compressed) in [
            ("gzip", gzip(&elf)),
            ("xz", xz(&elf)),
            ("zstd", zstd(&elf)),
            ("lz4", lz4_legacy(&elf, 64 * 1024)),
        ] {
            let half = &compressed[..compressed.len() / 2];
            let err = extract(&fake_bzimage(half, 27)).unwrap_err();
            assert!(
                matches!(err, BzImageError::Decompress { .. }),
                "{codec}: {err}"
            );
        }
    }

    #[test]
    fn short_or_unmarked_input_is_rejected() {
        assert!(matches!(
            extract(&[0u8; 100]),
            Err(BzImageError::Truncated(_))
        ));
        let mut image = fake_bzimage(&gzip(&fake_elf()), 27);
        image[HEADER_MAGIC_OFFSET] = b'X';
        assert!(matches!(extract(&image), Err(BzImageError::NotBzImage(_))));
    }

    #[test]
    fn unsupported_codecs_are_named() {
        for (magic, name) in [
            (&b"BZh91AY&SY"[..], "bzip2"),
            (&[0x5d, 0x00, 0x00, 0x80, 0x00][..], "lzma"),
            (&[0x89, 0x4c, 0x5a, 0x4f, 0x00][..], "lzo"),
        ] {
            let err = extract(&fake_bzimage(magic, 27)).unwrap_err();
            assert!(matches!(err, BzImageError::UnsupportedCompression(n) if n == name));
            assert!(err.to_string().contains(name));
        }
        let err = extract(&fake_bzimage(b"\x00\x01\x02\x03", 27)).unwrap_err();
        assert!(matches!(err, BzImageError::UnknownCompression(_)), "{err}");
    }

    #[test]
    fn non_elf_payload_is_rejected() {
        let err = extract(&fake_bzimage(&gzip(b"MZ not an ELF file"), 27)).unwrap_err();
        assert!(matches!(err, BzImageError::NotElf(_)), "{err}");
    }

    #[test]
    fn lz4_size_suffix_must_match() {
        let elf = fake_elf();
        let mut frame = lz4_legacy(&elf, 64 * 1024);
        let last = frame.len() - 1;
        frame[last] ^= 0x01;
        let err = extract(&fake_bzimage(&frame, 27)).unwrap_err();
        assert!(err.to_string().contains("LZ4"), "{err}");
    }

    #[test]
    fn real_debian_bzimage() {
        let Some(deb) = banger_test_support::kernel_deb() else {
            banger_test_support::skip(
                "no linux-image-*-cloud-amd64 .deb in BANGER_TEST_KERNEL_DIR",
            );
            return;
        };
        let (_, bzimage) = crate::kernel::deb::read_kernel_image(&deb).unwrap();
        let vmlinux = extract(&bzimage).unwrap();

        assert!(vmlinux.starts_with(ELF_MAGIC));
        assert!(
            vmlinux.len() > bzimage.len(),
            "vmlinux is larger than the compressed image"
        );
        use object::Object;
        let elf = object::File::parse(&*vmlinux).unwrap();
        assert_eq!(elf.architecture(), object::Architecture::X86_64);
    }
}
