use millrace_ingestion::{Application, Config};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    millrace_common::host::main("ingestion", Config::from_settings, Application::build)
}
