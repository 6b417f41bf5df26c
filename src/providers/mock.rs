//! (temporary echo mock until the providers branch lands)
use super::{CallFuture, CallReply, CallRequest, Provider, Usage};
use crate::config::MockConfig;

/// (temporary)
pub struct MockProvider(MockConfig);

impl MockProvider {
    /// (temporary)
    pub fn new(config: MockConfig) -> Self {
        Self(config)
    }
}

impl Provider for MockProvider {
    fn call(&self, request: CallRequest) -> CallFuture {
        let latency = self.0.latency_ms;
        Box::pin(async move {
            if latency > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
            }
            let text = match crate::core::combine::parse_request(&request.messages) {
                Some(prompts) => serde_json::to_string(
                    &prompts.iter().map(|p| format!("mock answer to: {p}")).collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
                None => format!(
                    "mock answer to: {}",
                    request.messages.last().map(|m| m.content.as_str()).unwrap_or("")
                ),
            };
            Ok(CallReply {
                text,
                usage: Some(Usage { prompt_tokens: 1, completion_tokens: 1 }),
                hints: Default::default(),
            })
        })
    }
}
