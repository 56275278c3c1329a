use millrace_common::Settings;
use millrace_llm_gateway::Config;

#[test]
fn a_bad_value_is_a_config_error_naming_the_variable() {
    let settings = Settings::from_pairs([("MILLRACE_LLM_TIMEOUT_MS", "abc")]);
    let err = Config::from_settings(&settings).unwrap_err();
    assert_eq!(err.variable, "MILLRACE_LLM_TIMEOUT_MS");
    assert!(err.to_string().starts_with("MILLRACE_LLM_TIMEOUT_MS: invalid value \"abc\""), "{err}");
}

#[test]
fn the_binary_exits_non_zero_naming_the_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_millrace-llm-gateway"))
        .env("MILLRACE_LLM_TIMEOUT_MS", "abc")
        .env_remove("MILLRACE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MILLRACE_LLM_TIMEOUT_MS"), "{stderr}");
}
