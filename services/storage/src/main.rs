use millrace_storage::{Application, Config};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    millrace_common::host::main("storage", Config::from_settings, Application::build)
}
