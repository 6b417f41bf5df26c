//! The command line of `ferry mock-upstream`.

use std::net::SocketAddr;

use crate::providers::mock::{FaultRates, SpoilRates};

/// `--bind`'s default.
const DEFAULT_BIND: &str = "127.0.0.1:18080";

/// Command-line knobs of `ferry mock-upstream`. Rates are probabilities in `0.0..=1.0` and
/// together at most 1.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct MockUpstreamArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// Base latency of every reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra latency drawn uniformly from 0..=N milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Words (about tokens) each answer is padded to.
    #[arg(long, default_value_t = 8)]
    pub output_tokens: u32,
    /// Share of calls answered with HTTP 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Share of calls answered with HTTP 429.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub rate_limit_rate: f64,
    /// Share of calls answered with HTTP 503.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub overload_rate: f64,
    /// Share of calls answered with HTTP 200 and a body that is not JSON.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub malformed_rate: f64,
    /// Share of calls whose connection is closed before any reply.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub drop_rate: f64,
    /// Share of calls never answered (held for an hour).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub timeout_rate: f64,
    /// Share of combined calls answered 200 with text that is not a valid answer array (prose,
    /// or an array of the wrong length); drawn apart from the fault rates above.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub garble_rate: f64,
    /// Share of combined calls answered with ids shuffled, one dropped, one answered twice or one
    /// renamed (the draw picks which); drawn apart from the fault rates.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub misalign_rate: f64,
    /// Share of combined calls of two or more prompts answered with every answer under the next
    /// prompt's id (well formed, all wrong); drawn apart from the fault rates.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub wrong_answer_rate: f64,
    /// Calls served at once at the base latency; further calls wait in turn for a free slot
    /// (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub capacity: u32,
    /// With `--capacity`: the most calls that may wait for a slot; one more is answered 503 at
    /// once, as a server with a full queue (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub queue_limit: u32,
    /// Retry delay announced with an injected 429, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub retry_after_ms: u64,
    /// The mock's own limit: calls past N in any 60 s window get a 429.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rpm: Option<u64>,
    /// Seed for the fault and latency draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// actix-web worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: u64,
    /// Require this API key (`Authorization: Bearer` or `x-goog-api-key`); other calls get 401.
    #[arg(long)]
    pub api_key: Option<String>,
}

impl Default for MockUpstreamArgs {
    /// The command line's defaults.
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 18080)),
            latency_ms: 0,
            latency_jitter_ms: 0,
            output_tokens: 8,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            overload_rate: 0.0,
            malformed_rate: 0.0,
            drop_rate: 0.0,
            timeout_rate: 0.0,
            garble_rate: 0.0,
            misalign_rate: 0.0,
            wrong_answer_rate: 0.0,
            capacity: 0,
            queue_limit: 0,
            retry_after_ms: 1_000,
            rpm: None,
            seed: 1,
            workers: 1,
            api_key: None,
        }
    }
}

impl MockUpstreamArgs {
    /// The shares of combined replies spoiled, as the shared mock draws them.
    pub(super) fn spoil_rates(&self) -> SpoilRates {
        SpoilRates { garble: self.garble_rate, misalign: self.misalign_rate, wrong: self.wrong_answer_rate }
    }

    /// The fault rates as the shared mock draws them.
    pub(super) fn fault_rates(&self) -> FaultRates {
        FaultRates {
            server: self.error_rate,
            rate_limited: self.rate_limit_rate,
            overloaded: self.overload_rate,
            malformed: self.malformed_rate,
            dropped: self.drop_rate,
            timeout: self.timeout_rate,
        }
    }
}

/// A fault rate from the command line.
fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("`{value}` is not a rate; use a number from 0.0 to 1.0")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockUpstreamArgs,
    }

    #[test]
    fn command_line_defaults_match_default() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["mock-upstream"]);
        assert_eq!(cli.args, MockUpstreamArgs::default());
        assert_eq!(cli.args.bind.to_string(), DEFAULT_BIND);
    }

    #[test]
    fn rates_out_of_range_are_refused() {
        assert!(Cli::try_parse_from(["m", "--error-rate", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["m", "--drop-rate", "-0.1"]).is_err());
        assert!(Cli::try_parse_from(["m", "--rpm", "0"]).is_err());
        let cli = Cli::parse_from(["m", "--timeout-rate", "0.25", "--rpm", "60"]);
        assert_eq!((cli.args.timeout_rate, cli.args.rpm), (0.25, Some(60)));
    }
}
