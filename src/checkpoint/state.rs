//! The feature state file of a run directory (`features.state`): the query tower's inputs after
//! the log's end ([`FeatureState`]), which `convcg serve` and `convcg retrieve` load instead of
//! rebuilding the dataset from the log. The envelope is the checkpoints' (`frame`), with its own
//! magic; the body is the state in postcard's encoding.

use std::path::Path;

use convcg_data::FeatureState;

use super::CheckpointError;
use super::frame::{frame, read_file, unframe};
use crate::fault::FaultPlan;
use crate::output::write_atomic_with;

/// The feature state in a run directory.
pub const FEATURE_STATE_FILE: &str = "features.state";
/// The first 8 bytes of a feature state file.
pub const FEATURE_STATE_MAGIC: [u8; 8] = *b"CONVCGFS";
/// The format version this build writes and reads.
pub const FEATURE_STATE_VERSION: u32 = 1;

/// The file's bytes.
///
/// # Errors
/// Never in practice: postcard encodes every value of the state.
pub fn encode_feature_state(state: &FeatureState) -> postcard::Result<Vec<u8>> {
    let body = postcard::to_allocvec(state)?;
    Ok(frame(&FEATURE_STATE_MAGIC, FEATURE_STATE_VERSION, &body))
}

/// Parses a file's bytes; `path` only names the file in errors.
///
/// # Errors
/// What is wrong: the envelope (see `frame`), a body that does not decode, or a state that
/// does not hold together (a length or a table row out of range).
pub fn decode_feature_state(
    bytes: &[u8],
    path: &Path,
) -> std::result::Result<FeatureState, CheckpointError> {
    let fail = |problem: String| CheckpointError {
        path: path.to_owned(),
        problem,
    };
    let body = unframe(
        bytes,
        &FEATURE_STATE_MAGIC,
        FEATURE_STATE_VERSION,
        "a convcg feature state",
    )
    .map_err(fail)?;
    let (state, rest) = postcard::take_from_bytes::<FeatureState>(body)
        .map_err(|e| fail(format!("the feature state does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(fail(format!(
            "corrupted: {} bytes after the feature state",
            rest.len()
        )));
    }
    Ok(state)
}

/// Reads and checks the feature state at `path`.
///
/// # Errors
/// If the file cannot be read or is not a sound feature state.
pub fn read_feature_state(path: &Path) -> std::result::Result<FeatureState, CheckpointError> {
    decode_feature_state(&read_file(path)?, path)
}

/// Writes the state to `path` atomically, through `faults` (the test-only seam).
///
/// # Errors
/// The I/O error of the step that failed.
pub fn write_feature_state(
    path: &Path,
    state: &FeatureState,
    faults: &FaultPlan,
) -> std::io::Result<()> {
    let bytes = encode_feature_state(state).map_err(std::io::Error::other)?;
    write_atomic_with(path, &bytes, faults)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::frame::{CRC_LEN, HEADER_LEN};
    use convcg_data::{Dataset, DatasetConfig, Marketplace, QueryRequest, Surface, SynthConfig};
    use proptest::prelude::*;

    fn sample() -> FeatureState {
        let cfg = SynthConfig {
            num_users: 60,
            num_pins: 120,
            num_advertisers: 8,
            num_categories: 5,
            num_brands: 10,
            num_queries: 6,
            impressions: 4000,
            ..SynthConfig::default()
        };
        let market = Marketplace::generate(&cfg, 3, &|_, _| {}).unwrap();
        let data_cfg = DatasetConfig {
            id_code_dim: 64,
            ..DatasetConfig::default()
        };
        let data = Dataset::build(&market.log, None, &data_cfg).unwrap();
        data.feature_state(&market.log)
    }

    fn path() -> &'static Path {
        Path::new("run/features.state")
    }

    #[test]
    fn a_feature_state_round_trips_exactly() {
        let state = sample();
        let bytes = encode_feature_state(&state).unwrap();
        assert_eq!(&bytes[..8], b"CONVCGFS");
        assert_eq!(decode_feature_state(&bytes, path()).unwrap(), state);
    }

    #[test]
    fn truncations_flipped_bits_and_other_files_are_refused_by_name() {
        let bytes = encode_feature_state(&sample()).unwrap();
        for cut in [0, 5, HEADER_LEN, bytes.len() / 2, bytes.len() - 1] {
            let e = decode_feature_state(&bytes[..cut], path()).unwrap_err();
            assert!(e.problem.starts_with("truncated"), "{cut}: {e}");
            assert!(e.to_string().contains("run/features.state"), "{e}");
        }
        for at in (HEADER_LEN..bytes.len()).step_by(97) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            let e = decode_feature_state(&damaged, path()).unwrap_err();
            assert!(e.problem.contains("checksum mismatch"), "{at}: {e}");
        }
        let mut checkpoint = bytes.clone();
        checkpoint[..8].copy_from_slice(b"CONVCGCK");
        let e = decode_feature_state(&checkpoint, path()).unwrap_err();
        assert!(e.problem.contains("not a convcg feature state"), "{e}");
        let mut newer = bytes;
        newer[8] = 9;
        let e = decode_feature_state(&newer, path()).unwrap_err();
        assert!(e.problem.contains("format version 9"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn a_damaged_body_with_a_valid_checksum_errs_without_panicking(at in 0usize..100_000, value in any::<u8>()) {
            let bytes = encode_feature_state(&sample()).unwrap();
            let mut body = bytes[HEADER_LEN..bytes.len() - CRC_LEN].to_vec();
            let at = at % body.len();
            body[at] = value;
            let framed = frame(&FEATURE_STATE_MAGIC, FEATURE_STATE_VERSION, &body);
            // Either the change kept a sound state, which featurises every user, or it is
            // refused; never a panic.
            if let Ok(state) = decode_feature_state(&framed, path()) {
                let requests: Vec<QueryRequest> = state
                    .user_ids()
                    .iter()
                    .map(|&user_id| QueryRequest {
                        user_id,
                        surface: Surface::Search,
                        context_pin_id: state.pin_ids().first().copied(),
                        query_id: Some(1),
                        recent_pin_ids: None,
                    })
                    .collect();
                let (features, _) = state.query_features(&requests);
                prop_assert_eq!(features.len(), requests.len());
            }
        }
    }
}
