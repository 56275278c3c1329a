use millrace_chunking::parse_child::{PARSE_CHILD_ARG, child_main};
use millrace_chunking::{Application, Config};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A parse child (see `parse_child`) does one document and exits, with no runtime, no
    // telemetry and nothing else on stdout.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|arg| arg == PARSE_CHILD_ARG) {
        child_main(&args[1..]);
    }
    millrace_common::host::main("chunking", Config::from_settings, Application::build)
}
