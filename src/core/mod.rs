//! The pure core under the actors: batching rules, rate windows, retry timing, combined prompts,
//! token estimates. Plain functions and types with no clock or socket inside; the actors in
//! [`crate::engine`] wire them to time and I/O.

pub mod batching;
pub mod chat;
pub mod combine;
pub mod estimate;
pub mod fair;
pub mod limits;
pub mod retry;
