//! Simulates the SPRT with the default config on tests of known failure
//! probabilities and prints a markdown table of how often it flags them
//! and how many runs it needs, next to the exact figures and Wald's
//! approximation of the mean.
//!
//! `cargo run -p shoal-stats --example sprt_sim --release [-- --seed N --trials N]`

use shoal_stats::SprtConfig;
use shoal_stats::sim::simulate;
use std::process::ExitCode;

const DEFAULT_SEED: u64 = 0x5EED_0006;
const DEFAULT_TRIALS: u32 = 2000;
const RATES: [f64; 6] = [0.0, 0.005, 0.01, 0.02, 0.05, 0.2];

fn main() -> ExitCode {
    let (seed, trials) = match parse_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!("sprt_sim: {msg}\nusage: sprt_sim [--seed N] [--trials N]");
            return ExitCode::from(2);
        }
    };
    let cfg = SprtConfig {
        max_runs: Some(5000),
        ..SprtConfig::default()
    };
    println!(
        "SPRT H0: p <= {} vs H1: p >= {}, alpha = {}, beta = {}, max_runs = 5000; \
         {trials} trials per p, seed {seed}\n",
        cfg.p0, cfg.p1, cfg.alpha, cfg.beta
    );
    println!(
        "| p | flagged flaky | stable | undecided | mean runs | median runs | p95 runs \
         | exact P(flaky) | exact E[N] | Wald E[N] |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in RATES {
        let s = simulate(&cfg, p, trials, seed);
        println!(
            "| {:.1}% | {:.1}% | {:.1}% | {:.1}% | {:.1} | {} | {} | {:.1}% | {:.1} | {:.1} |",
            p * 100.0,
            s.flaky_rate() * 100.0,
            s.stable_rate() * 100.0,
            s.truncated_rate() * 100.0,
            s.mean_runs,
            s.median_runs,
            s.p95_runs,
            s.exact.flaky * 100.0,
            s.exact.mean_runs,
            s.wald_expected_runs,
        );
    }
    ExitCode::SUCCESS
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(u64, u32), String> {
    let (mut seed, mut trials) = (DEFAULT_SEED, DEFAULT_TRIALS);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seed" => {
                let v = value("--seed")?;
                seed = parse_u64(&v).ok_or_else(|| format!("--seed: not a number: {v}"))?;
            }
            "--trials" => {
                let v = value("--trials")?;
                trials = v
                    .parse()
                    .ok()
                    .filter(|&t| t > 0)
                    .ok_or_else(|| format!("--trials: not a positive number: {v}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((seed, trials))
}

/// Decimal, or hexadecimal with `0x` (the default seed prints in decimal).
fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}
