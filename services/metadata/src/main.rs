use millrace_metadata::{Application, Config};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    millrace_common::host::main("metadata", Config::from_settings, Application::build)
}
