//! Property tests of the pure code, on generated input: line framing and
//! the nickname rules against plain models of them, and the batching
//! writer.

mod batching;
mod framing;

/// Shared with the fuzz targets (fuzz/), which include it by this path.
#[path = "../../support/model.rs"]
mod model;
