//! Presets for common plans, so a user writes `tier = "tier1"` instead of numbers, and the
//! prices of common models. Both are OpenAI's published figures for `gpt-4o-mini` as of 2025;
//! plans and prices change, so every field can be overridden (and the `/v1/limits` page shows
//! what is in force).

use std::collections::BTreeMap;

use super::Price;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub name: &'static str,
    pub rpm: u64,
    pub tpm: u64,
    pub max_concurrency: usize,
}

pub const TIERS: &[Tier] = &[
    Tier { name: "free", rpm: 3, tpm: 40_000, max_concurrency: 2 },
    Tier { name: "tier1", rpm: 500, tpm: 200_000, max_concurrency: 16 },
    Tier { name: "tier2", rpm: 5_000, tpm: 2_000_000, max_concurrency: 64 },
    Tier { name: "tier3", rpm: 5_000, tpm: 4_000_000, max_concurrency: 64 },
    Tier { name: "tier4", rpm: 10_000, tpm: 10_000_000, max_concurrency: 128 },
    Tier { name: "tier5", rpm: 30_000, tpm: 150_000_000, max_concurrency: 256 },
];

pub fn find(name: &str) -> Option<Tier> {
    TIERS.iter().copied().find(|tier| tier.name.eq_ignore_ascii_case(name.trim()))
}

/// The message for a tier name that is not a preset.
pub fn unknown(name: &str) -> String {
    let names: Vec<&str> = TIERS.iter().map(|tier| tier.name).collect();
    format!("{name:?} is not one of: {}", names.join(", "))
}

/// USD per million tokens of common OpenAI models (input, output).
pub fn default_prices() -> BTreeMap<String, Price> {
    [
        ("gpt-4o-mini", 0.15, 0.60),
        ("gpt-4o", 2.50, 10.00),
        ("gpt-4.1-mini", 0.40, 1.60),
        ("gpt-4.1-nano", 0.10, 0.40),
        ("text-embedding-3-small", 0.02, 0.0),
        ("text-embedding-3-large", 0.13, 0.0),
    ]
    .into_iter()
    .map(|(model, input, output)| (model.to_owned(), Price { input_per_million: input, output_per_million: output }))
    .collect()
}
