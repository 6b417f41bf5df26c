//! (in progress)
use super::{BuildError, CallFuture, CallRequest, Provider};
use crate::config::UpstreamConfig;

/// (in progress)
pub struct OpenAiProvider;

impl OpenAiProvider {
    /// (in progress)
    pub fn new(_upstream: &UpstreamConfig, _api_key: Option<String>) -> Result<Self, BuildError> {
        Ok(Self)
    }
}

impl Provider for OpenAiProvider {
    fn call(&self, _request: CallRequest) -> CallFuture {
        Box::pin(async { Err(super::ProviderError::Timeout) })
    }
}
