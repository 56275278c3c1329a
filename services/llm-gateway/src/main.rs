use millrace_llm_gateway::{Application, Config, SERVICE};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    millrace_common::host::main(SERVICE, Config::from_settings, Application::build)
}
