//! `millrace keys`: the key API (`/v1/keys`) from the command line.

use clap::Subcommand;
use serde_json::{Map, Value, json};

use crate::api::{Api, Failure};
use crate::{print_json, text};

#[derive(Subcommand, Debug)]
pub enum KeysAction {
    /// Create a key and print its secret (shown this once: keep it).
    Create {
        /// The tenant whose documents the key works on.
        #[arg(long)]
        tenant: String,
        /// What the key is for, to tell keys apart.
        #[arg(long)]
        name: String,
        /// ingest, read, search, delete, admin or llm (repeatable, at least one).
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// Limit the key to these collections (repeatable); without it, every collection.
        #[arg(long = "collection", value_name = "COLLECTION")]
        collections: Vec<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// LLM tokens per minute (on the llm-gateway).
        #[arg(long)]
        tpm: Option<u32>,
        /// LLM spending per UTC day, in US dollars (on the llm-gateway).
        #[arg(long)]
        daily_budget_usd: Option<f64>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key: every replica refuses it within a second.
    Revoke { id: String },
}

pub async fn run(api: &Api, action: KeysAction, json: bool) -> Result<(), Failure> {
    match action {
        KeysAction::Create { tenant, name, scopes, collections, rpm, tpm, daily_budget_usd } => {
            let mut body = Map::new();
            body.insert("tenant".into(), json!(tenant));
            body.insert("name".into(), json!(name));
            body.insert("scopes".into(), json!(scopes));
            if !collections.is_empty() {
                body.insert("collections".into(), json!(collections));
            }
            for (field, value) in [("rpm", rpm.map(Value::from)), ("tpm", tpm.map(Value::from))] {
                if let Some(value) = value {
                    body.insert(field.into(), value);
                }
            }
            if let Some(budget) = daily_budget_usd {
                body.insert("daily_budget_usd".into(), json!(budget));
            }
            let key = api.post("/v1/keys", &Value::Object(body)).await?;
            if json {
                print_json(&key);
            } else {
                println!("{}", text(&key["key"]));
                eprintln!(
                    "created {} for tenant {} ({}); the secret above is shown only this once",
                    text(&key["id"]),
                    text(&key["tenant"]),
                    scopes_of(&key)
                );
            }
        }
        KeysAction::List { tenant } => {
            let path = match tenant {
                Some(tenant) => format!("/v1/keys?tenant={}", encode(&tenant)),
                None => "/v1/keys".to_owned(),
            };
            let answer = api.get(&path).await?;
            if json {
                print_json(&answer);
            } else {
                for key in answer["keys"].as_array().into_iter().flatten() {
                    let state = if key["revoked_at"].is_null() { "active" } else { "revoked" };
                    println!(
                        "{}  {:<7}  {:<12} {}…  {:<20} {}",
                        text(&key["id"]),
                        state,
                        text(&key["tenant"]),
                        text(&key["prefix"]),
                        text(&key["name"]),
                        scopes_of(key)
                    );
                }
            }
        }
        KeysAction::Revoke { id } => {
            let key = api.delete(&format!("/v1/keys/{}", encode(&id))).await?;
            if json {
                print_json(&key);
            } else {
                println!("revoked {}", text(&key["id"]));
            }
        }
    }
    Ok(())
}

fn scopes_of(key: &Value) -> String {
    key["scopes"].as_array().into_iter().flatten().map(text).collect::<Vec<_>>().join(",")
}

/// Percent-encodes a path segment or query value (ids and tenants are plain, but not trusted).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
