//! (in progress)
use super::{CallFuture, CallRequest, Provider};
use crate::config::MockConfig;

/// (in progress)
pub struct MockProvider;

impl MockProvider {
    /// (in progress)
    pub fn new(_config: MockConfig) -> Self {
        Self
    }
}

impl Provider for MockProvider {
    fn call(&self, _request: CallRequest) -> CallFuture {
        Box::pin(async { Err(super::ProviderError::Timeout) })
    }
}
