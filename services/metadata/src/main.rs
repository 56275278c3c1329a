use millrace_common::{Settings, shutdown, telemetry};
use millrace_metadata::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("metadata");
    let config = match Settings::load().and_then(|settings| Config::from_settings(&settings)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("configuration error: {err}");
            std::process::exit(2);
        }
    };
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown::on_signal()).await?;
    Ok(())
}
