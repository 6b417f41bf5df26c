//! The engine (in progress).
/// The handle every door goes through.
pub struct Engine;
