//! Intel AMX tiles for bf16 products, the crate's second module with `unsafe`: CPU and kernel
//! support found at run time, the Linux permission for the tile state, and the tile micro-kernel
//! written as inline assembly (Rust's AMX intrinsics are not stable).
//!
//! A tile register holds up to 16 rows of 64 bytes. The kernel keeps a 32 x 32 block of f32
//! results in four tiles and multiplies two 16 x 32 tiles of bf16 `a` by two tiles of `b` in
//! VNNI layout (16 pairs of rows of `b`, each pair's two values of a column side by side) with
//! `tdpbf16ps`, which adds the products of bf16 pairs into the f32 results. bf16 products are
//! exact in f32; the sums are rounded to f32, in an order of the hardware's.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// Rows of `a` (and of the result) per block: two tiles of 16.
pub(crate) const BLOCK_ROWS: usize = 32;
/// Columns of the result per step of a block: two tiles of 16.
pub(crate) const BLOCK_COLS: usize = 32;
/// Steps of the inner dimension per tile: 32 bf16 in a 64-byte row.
pub(crate) const DEPTH: usize = 32;

/// Whether this CPU and kernel run AMX bf16 tiles, this process having been granted the tile
/// state. Checked (and the permission requested) once per process.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID leaf 7, sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    let leaf7 = __cpuid_count(7, 0);
    let (bf16, tile) = (leaf7.edx >> 22 & 1 == 1, leaf7.edx >> 24 & 1 == 1);
    if !(bf16 && tile && std::is_x86_feature_detected!("avx512f")) {
        return false;
    }
    // Linux enables the tile data state per process on request: arch_prctl(ARCH_REQ_XCOMP_PERM,
    // XFEATURE_XTILEDATA). It fails where the kernel does not support AMX.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: the system call takes two integers and touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Proof that the tiles are configured on this thread for [`Tiles::block`]; made only by
/// [`with_tiles`], and not `Send`, so it cannot leave the thread that configured them.
pub(crate) struct Tiles(std::marker::PhantomData<*const ()>);

/// Runs `f` with the tiles configured on this thread (all eight as 16 rows of 64 bytes), and
/// releases them after.
///
/// # Panics
/// If AMX is not [`available`].
pub(crate) fn with_tiles<R>(f: impl FnOnce(&Tiles) -> R) -> R {
    assert!(available(), "AMX tiles used on a CPU without them");
    #[cfg(target_arch = "x86_64")]
    {
        // The 64-byte tile configuration: palette 1, then each tile's bytes per row (u16 at
        // 16 + 2t) and rows (u8 at 48 + t).
        #[repr(C, align(64))]
        struct Config([u8; 64]);
        let mut config = Config([0; 64]);
        config.0[0] = 1;
        for t in 0..8 {
            config.0[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            config.0[48 + t] = 16;
        }
        // SAFETY: AMX is available and this process holds the tile state (`available`); the
        // configuration is 64 readable bytes.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack)) };
        let out = f(&Tiles(std::marker::PhantomData));
        // SAFETY: as above; the tiles are no longer used.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
        out
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = f;
        unreachable!("AMX is only ever available on x86_64")
    }
}

impl Tiles {
    /// `c = a · b` for one block of [`BLOCK_ROWS`] rows, the operands as bf16 pairs (low half
    /// first, as [`bf16_pairs`](crate::simd::bf16_pairs) makes them): `a` is
    /// `[BLOCK_ROWS, depth / 2]`, pair `p` of a row holding its columns `2p` and `2p + 1`; `b`
    /// is `[depth / 2, width]` (VNNI layout: `b[p][j]` holds rows `2p` and `2p + 1` of column
    /// `j`); `c` is `[BLOCK_ROWS, width]` f32 row-major, overwritten.
    ///
    /// # Panics
    /// If `depth` is not a positive multiple of [`DEPTH`], `width` of [`BLOCK_COLS`], or the
    /// slices are not of those sizes.
    pub(crate) fn block(&self, a: &[u32], depth: usize, b: &[u32], width: usize, c: &mut [f32]) {
        assert!(depth > 0 && depth.is_multiple_of(DEPTH));
        assert!(width > 0 && width.is_multiple_of(BLOCK_COLS));
        assert_eq!(a.len(), BLOCK_ROWS * depth / 2);
        assert_eq!(b.len(), depth / 2 * width);
        assert_eq!(c.len(), BLOCK_ROWS * width);
        #[cfg(target_arch = "x86_64")]
        {
            // Byte strides between rows of the three layouts.
            let (sa, sb, sc) = (2 * depth, 4 * width, 4 * width);
            for j0 in (0..width).step_by(BLOCK_COLS) {
                // SAFETY: the tiles are configured on this thread (`self`). Every load reads 16
                // rows of 64 bytes (16 pairs): of `a` from row 0 or 16, pairs k0 / 2 .. k0 / 2 +
                // 16 of rows of `depth / 2` pairs, with k0 + 32 <= depth; of `b` from pair rows
                // k0 / 2 .. k0 / 2 + 16, columns j0 .. j0 + 16 (+16) of rows of `width`, with
                // j0 + 32 <= width; every store writes 16 rows of 16 f32 of `c` inside its rows
                // of `width` the same way. All inside the slices, whose sizes are asserted above.
                unsafe {
                    std::arch::asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack, nomem)
                    );
                    for k0 in (0..depth).step_by(DEPTH) {
                        let a0 = a.as_ptr().add(k0 / 2);
                        let a1 = a0.add(16 * depth / 2);
                        let b0 = b.as_ptr().add(k0 / 2 * width + j0);
                        let b1 = b0.add(16);
                        std::arch::asm!(
                            "tileloadd tmm4, [{a0} + {sa} * 1]",
                            "tileloadd tmm5, [{a1} + {sa} * 1]",
                            "tileloadd tmm6, [{b0} + {sb} * 1]",
                            "tileloadd tmm7, [{b1} + {sb} * 1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            "tdpbf16ps tmm2, tmm5, tmm6",
                            "tdpbf16ps tmm3, tmm5, tmm7",
                            a0 = in(reg) a0,
                            a1 = in(reg) a1,
                            b0 = in(reg) b0,
                            b1 = in(reg) b1,
                            sa = in(reg) sa,
                            sb = in(reg) sb,
                            options(nostack, readonly)
                        );
                    }
                    let c00 = c.as_mut_ptr().add(j0);
                    std::arch::asm!(
                        "tilestored [{c00} + {sc} * 1], tmm0",
                        "tilestored [{c01} + {sc} * 1], tmm1",
                        "tilestored [{c10} + {sc} * 1], tmm2",
                        "tilestored [{c11} + {sc} * 1], tmm3",
                        c00 = in(reg) c00,
                        c01 = in(reg) c00.add(16),
                        c10 = in(reg) c00.add(16 * width),
                        c11 = in(reg) c00.add(16 * width + 16),
                        sc = in(reg) sc,
                        options(nostack)
                    );
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (a, b, c);
            unreachable!("AMX is only ever available on x86_64")
        }
    }
}
