use millrace_common::{config, shutdown, telemetry};
use millrace_embeddings::{Application, Config};

// The local model allocates and frees tens of MB per layer of every forward pass; glibc's malloc
// returns that memory to the kernel between passes and page-faults it back in (about a tenth of
// the pass's CPU time, measured). mimalloc keeps it mapped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("embeddings");
    let config = config::load_or_exit(Config::from_settings);
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown::on_signal()).await?;
    Ok(())
}
