use millrace_common::{config, shutdown, telemetry};
use millrace_metadata::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("metadata");
    let config = config::load_or_exit(Config::from_settings);
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown::on_signal()).await?;
    Ok(())
}
