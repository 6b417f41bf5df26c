//! Token estimates made before a call is sent, so the tokens-per-minute limit can be checked up
//! front; the reply's reported usage corrects the estimate afterwards.
//!
//! Cheap on purpose: it runs for every call. Counting bytes rather than characters needs no pass
//! over the text and overestimates non-ASCII text a little, which only makes the limit safer.

use crate::core::chat::ChatMessage;

/// What each message costs beyond its text (role and separators; OpenAI's counting guide gives 3-4).
const MESSAGE_OVERHEAD: u64 = 4;

/// Reply budget assumed for the token estimate when a call sets no `max_tokens`.
pub const DEFAULT_REPLY_TOKENS: u32 = 256;

/// Tokens a text is likely to take: about 4 characters per token, at least 1 for a non-empty text.
///
/// Counts bytes (`str::len`), rounded up; saturates at `u32::MAX`.
pub fn text_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

/// Tokens a chat call is likely to take before it is sent: the messages (+4 per message overhead)
/// plus the reply budget `max_tokens` (or `default_reply` when unset). Used for the TPM limit.
pub fn call_tokens(messages: &[ChatMessage], max_tokens: Option<u32>, default_reply: u32) -> u64 {
    let prompt: u64 =
        messages.iter().map(|message| u64::from(text_tokens(&message.content)) + MESSAGE_OVERHEAD).sum();
    prompt + u64::from(max_tokens.unwrap_or(default_reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_takes_no_tokens() {
        assert_eq!(text_tokens(""), 0);
    }

    #[test]
    fn short_text_takes_at_least_one_token() {
        assert_eq!(text_tokens("a"), 1);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
    }

    #[test]
    fn about_four_characters_make_a_token() {
        assert_eq!(text_tokens(&"x".repeat(400)), 100);
    }

    #[test]
    fn non_ascii_text_is_overestimated_not_under() {
        // 4 characters, 8 bytes: counted as 2 tokens where 1 would be the character estimate.
        assert_eq!(text_tokens("éééé"), 2);
    }

    #[test]
    fn call_counts_messages_overhead_and_reply_budget() {
        let messages = [ChatMessage::system("x".repeat(40)), ChatMessage::user("y".repeat(8))];
        assert_eq!(call_tokens(&messages, Some(100), 256), 10 + 4 + 2 + 4 + 100);
    }

    #[test]
    fn call_without_max_tokens_uses_the_default_reply_budget() {
        let messages = [ChatMessage::user("hello")];
        assert_eq!(call_tokens(&messages, None, 256), 2 + 4 + 256);
    }
}
