use millrace_chunking::parse_child::{PARSE_CHILD_ARG, child_main};
use millrace_chunking::{Application, Config};
use millrace_common::{config, shutdown, telemetry};

fn main() -> anyhow::Result<()> {
    // A parse child (see `parse_child`) does one document and exits, with no runtime, no
    // telemetry and nothing else on stdout.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|arg| arg == PARSE_CHILD_ARG) {
        child_main(&args[1..]);
    }
    serve()
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("chunking");
    let config = config::load_or_exit(Config::from_settings);
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown::on_signal()).await?;
    Ok(())
}
