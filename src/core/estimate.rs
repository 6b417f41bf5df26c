//! (placeholder)
/// x
pub fn call_tokens(
    messages: &[crate::providers::ChatMessage],
    max_tokens: Option<u32>,
    default_reply: u32,
) -> u64 {
    messages.iter().map(|m| m.content.len() as u64 / 4 + 4).sum::<u64>()
        + u64::from(max_tokens.unwrap_or(default_reply))
}
